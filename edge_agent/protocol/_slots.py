"""Building frozen slotted dataclasses fast: a mutable twin of the same layout, then its class.

A frozen dataclass's `__init__` sets each field through `object.__setattr__` (about 70 ns a
field); the decoders build four such objects per message, which was a fifth of opening and
decoding one. The twin has exactly the same slots and base, so its attribute stores take the
interpreter's fast path, and CPython lets an object's `__class__` change between classes of the
same layout: the result is an ordinary, frozen instance of the dataclass (same type, equality,
hash, repr, pickling; tests/unit/edge_agent/protocol/test_fast_decode.py).
"""

from __future__ import annotations

from typing import Any


def twin(cls: type) -> type:
    """A mutable class with `cls`'s slots. Build `obj = object.__new__(twin)`, store every
    field, then `obj.__class__ = cls`. Checked here, at import: a layout that ever differs
    fails now, not on the first message."""
    slots = cls.__dict__["__slots__"]
    mutable = type(f"_{cls.__name__}Twin", (), {"__slots__": slots, "__module__": cls.__module__})
    probe: Any = object.__new__(mutable)
    probe.__class__ = cls  # TypeError if the layouts differ
    return mutable
