"""Golden vectors: hand-computed GATT values and serial frames/lines, with their spec references.

Shipped with the simulators so `firmware-sims vectors` prints them on any install; the agent's
decoders and the simulators' encoders are both tested against these files.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

VECTORS_DIR: Final = Path(__file__).resolve().parent
GATT_DIR: Final = VECTORS_DIR / "gatt"
SERIAL_DIR: Final = VECTORS_DIR / "serial"
# The medical-float file holds field vectors under these tables; the others hold [[vector]].
_FLOAT_TABLES: Final = ("sfloat", "float")


@dataclass(slots=True, frozen=True)
class GoldenVector:
    """One vector: what it encodes (`format`), its name, the bytes on the wire, the expectation."""

    format: str
    name: str
    wire: str
    """Hex octets in wire order, or the ASCII line (CR LF shown as \\r\\n)."""
    expect: dict[str, Any] = field(default_factory=dict)
    references: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "name": self.name,
            "wire": self.wire,
            "expect": self.expect,
            "references": list(self.references),
        }


def _gatt(path: Path) -> list[GoldenVector]:
    doc = tomllib.loads(path.read_text(encoding="utf-8"))
    refs = tuple(doc.get("references", ()))
    out = [
        # A file is one characteristic, or (Device Information) names one per vector.
        GoldenVector(
            f"{v.get('characteristic', doc.get('characteristic'))} {doc['name']}",
            v["name"],
            v["hex"],
            v.get("expect", {}),
            refs,
        )
        for v in doc.get("vector", [])
    ]
    for table in _FLOAT_TABLES:
        for v in doc.get(table, []):
            expect = {key: v[key] for key in ("value", "special") if key in v}
            out.append(GoldenVector(f"IEEE 11073 {table.upper()}", v["name"], v["hex"], expect))
    return out


def _serial() -> list[GoldenVector]:
    frames = json.loads((SERIAL_DIR / "implant_frames.json").read_text(encoding="utf-8"))
    lines = json.loads((SERIAL_DIR / "monitor_lines.json").read_text(encoding="utf-8"))
    frame_refs, line_refs = tuple(frames["references"]), tuple(lines["references"])
    out = [
        GoldenVector("implant frame", v["name"], v["hex"], v["fields"], frame_refs)
        for v in frames["frames"]
    ]
    out += [
        GoldenVector("implant reject", v["name"], v["hex"], {"fault": v["fault"]}, frame_refs)
        for v in frames["rejects"]
    ]
    out += [
        GoldenVector("monitor sentence", v["name"], _shown(v["line"]), v["fields"], line_refs)
        for v in lines["sentences"]
    ]
    out += [
        GoldenVector(
            "monitor reject", v["name"], _shown(v["line"]), {"fault": v["fault"]}, line_refs
        )
        for v in lines["rejects"]
    ]
    return out


def _shown(line: str) -> str:
    return line.replace("\r", "\\r").replace("\n", "\\n")


def golden_vectors(*, include_gatt: bool = True, include_serial: bool = True) -> list[GoldenVector]:
    """Every vector, GATT files in name order, then the serial formats."""
    out: list[GoldenVector] = []
    if include_gatt:
        for path in sorted(GATT_DIR.glob("*.toml")):
            out += _gatt(path)
    if include_serial:
        out += _serial()
    return out
