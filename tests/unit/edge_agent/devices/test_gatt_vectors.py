"""The agent's GATT decoders against the hand-computed golden vectors (firmware_sims/vectors)."""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import pytest

from edge_agent.devices import (
    CHARACTERISTIC_NAMES,
    DeviceDecodeError,
    NoValue,
    Number,
    decode,
    measurement_time,
    to_json_dict,
    to_readings,
)
from edge_agent.devices.ieee11073 import decode_float, decode_sfloat
from firmware_sims.vectors import GATT_DIR

VECTOR_DIR: Final = GATT_DIR
MEDICAL_FLOATS: Final = "ieee11073.toml"


@dataclass(frozen=True, slots=True)
class Case:
    file: str
    uuid16: int
    keys: list[str] | None
    vector: dict[str, Any]

    @property
    def id(self) -> str:
        return f"{self.file}:{self.vector['name']}"


def _load(name: str) -> dict[str, Any]:
    with (VECTOR_DIR / name).open("rb") as handle:
        return tomllib.load(handle)


def _cases() -> list[Case]:
    cases = []
    for path in sorted(VECTOR_DIR.glob("*.toml")):
        if path.name == MEDICAL_FLOATS:
            continue
        document = _load(path.name)
        for vector in document["vector"]:
            uuid_hex = vector.get("characteristic", document.get("characteristic"))
            cases.append(Case(path.name, int(uuid_hex, 16), document.get("keys"), vector))
    return cases


CASES: Final = _cases()
GOOD: Final = [case for case in CASES if "error" not in case.vector]
BAD: Final = [case for case in CASES if "error" in case.vector]


def test_every_characteristic_has_good_bad_and_encodable_vectors() -> None:
    for uuid16 in CHARACTERISTIC_NAMES:
        mine = [case for case in CASES if case.uuid16 == uuid16]
        assert any("sample" in case.vector for case in mine), f"0x{uuid16:04X} has no sample"
    for file in {case.file for case in CASES}:
        assert any(case.file == file and "error" in case.vector for case in CASES), file


@pytest.mark.parametrize("case", GOOD, ids=lambda case: case.id)
def test_decoder_prints_the_expected_json(case: Case) -> None:
    decoded = decode(case.uuid16, bytes.fromhex(case.vector["hex"]))
    expected: dict[str, object] = dict.fromkeys(case.keys or [])
    expected.update(case.vector["expect"])
    found = to_json_dict(decoded)
    assert found == expected
    if case.keys is not None:
        assert list(found) == case.keys  # the key order, for stable CLI output
    assert json.loads(json.dumps(found)) == found


@pytest.mark.parametrize(
    "case", [case for case in GOOD if "readings" in case.vector], ids=lambda case: case.id
)
def test_decoder_yields_the_expected_readings(case: Case) -> None:
    decoded = decode(case.uuid16, bytes.fromhex(case.vector["hex"]))
    assert to_readings(decoded) == [tuple(reading) for reading in case.vector["readings"]]


@pytest.mark.parametrize(
    "case", [case for case in GOOD if "measured_at" in case.vector], ids=lambda case: case.id
)
def test_decoder_finds_the_measurement_time(case: Case) -> None:
    decoded = decode(case.uuid16, bytes.fromhex(case.vector["hex"]))
    assert measurement_time(decoded) == datetime.fromisoformat(case.vector["measured_at"])


@pytest.mark.parametrize("case", BAD, ids=lambda case: case.id)
def test_decoder_rejects_with_characteristic_fault_and_offset(case: Case) -> None:
    with pytest.raises(DeviceDecodeError) as caught:
        decode(case.uuid16, bytes.fromhex(case.vector["hex"]))
    error = caught.value
    assert error.characteristic == f"0x{case.uuid16:04X}"
    assert error.name == CHARACTERISTIC_NAMES[case.uuid16]
    assert (str(error.fault), error.offset) == (
        case.vector["error"]["fault"],
        case.vector["error"]["offset"],
    )
    assert str(error).startswith(f"0x{case.uuid16:04X} {error.name}: {error.fault} at offset")


def _medical_cases(kind: str) -> list[dict[str, Any]]:
    return list(_load(MEDICAL_FLOATS)[kind])


@pytest.mark.parametrize(
    ("kind", "vector"),
    [("sfloat", v) for v in _medical_cases("sfloat")]
    + [("float", v) for v in _medical_cases("float")],
    ids=lambda item: item if isinstance(item, str) else item["name"],
)
def test_medical_float_vectors_decode(kind: str, vector: dict[str, Any]) -> None:
    raw = int.from_bytes(bytes.fromhex(vector["hex"]), "little")
    decoded = decode_sfloat(raw) if kind == "sfloat" else decode_float(raw)
    if "special" in vector:
        assert isinstance(decoded, NoValue)
        assert (str(decoded.reason), decoded.raw) == (vector["special"], raw)
    else:
        assert isinstance(decoded, Number)
        assert float(decoded) == vector["value"]
