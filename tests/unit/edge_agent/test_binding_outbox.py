"""The gateway's binding outbox: encrypted at rest, one file per event, bound to its name."""

from __future__ import annotations

import os
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.binding_outbox import BindingOutbox
from edge_agent.protocol import BindingEvent

SECRET = bytes(range(32))
REF = "MRN-4711-TEST"
T0 = 1_763_000_000 * 1_000_000_000


def test_events_round_trip_encrypted_and_in_order(tmp_path: Path) -> None:
    outbox = BindingOutbox(tmp_path, SECRET)
    first = BindingEvent("c" * 32, "a" * 32, "bound", T0, REF)
    second = BindingEvent("c" * 32, "a" * 32, "unbound", T0 + 5)
    paths = [outbox.put(second), outbox.put(first)]
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in paths)
    assert all(REF.encode() not in p.read_bytes() for p in paths)
    pending, errors = outbox.pending()
    assert errors == []
    assert [item.event for item in pending] == [first, second]
    # Another gateway's key does not open them.
    stranger, bad = BindingOutbox(tmp_path, bytes(32)).pending()
    assert stranger == []
    assert len(bad) == 2
    outbox.done(pending[:1])
    assert [item.event for item in outbox.pending()[0]] == [second]


def test_a_renamed_or_tampered_file_is_refused_and_left_in_place(tmp_path: Path) -> None:
    outbox = BindingOutbox(tmp_path, SECRET)
    a = outbox.put(BindingEvent("c" * 32, "a" * 32, "bound", T0, REF))
    b = outbox.put(BindingEvent("d" * 32, "b" * 32, "bound", T0 + 1, "MRN-2"))
    blob = bytearray(b.read_bytes())
    blob[-1] ^= 1
    b.write_bytes(bytes(blob))
    a.rename(a.with_name(f"{T0 + 2:019d}-0123456789abcdef.bin"))
    pending, errors = outbox.pending()
    assert pending == []
    assert sorted(e.path.name for e in errors) == sorted(p.name for p in outbox.folder.iterdir())
    assert all("does not open" in e.reason for e in errors)


@given(st.binary(max_size=200))
@settings(max_examples=100, deadline=None)
def test_random_bytes_in_the_outbox_are_an_error_never_a_crash(blob: bytes) -> None:
    import tempfile  # noqa: PLC0415 - one folder per example

    with tempfile.TemporaryDirectory() as folder:
        outbox = BindingOutbox(Path(folder), SECRET)
        outbox.folder.mkdir()
        path = outbox.folder / f"{T0:019d}-0123456789abcdef.bin"
        path.write_bytes(blob)
        os.chmod(path, 0o600)
        pending, errors = outbox.pending()
        assert pending == []
        assert [e.path for e in errors] == [path]
