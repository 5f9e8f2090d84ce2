"""The simulators' BLE encoders against the hand-computed golden vectors, independently."""

from __future__ import annotations

import tomllib
from decimal import Decimal
from typing import Any, Final

import pytest

from firmware_sims.ble.encoders import (
    DEVICE_INFORMATION_UUIDS,
    MAX_PAYLOAD_BYTES,
    SAMPLE_TYPES,
    DeviceInformationSample,
    Sample,
    Special,
    float32,
    sfloat,
)
from firmware_sims.vectors import GATT_DIR

VECTOR_DIR: Final = GATT_DIR
MEDICAL_FLOATS: Final = "ieee11073.toml"
SPECIAL_NAMES: Final = {special.value: special for special in Special}


def _load(name: str) -> dict[str, Any]:
    with (VECTOR_DIR / name).open("rb") as handle:
        return tomllib.load(handle)


def _argument(value: Any) -> Any:
    if isinstance(value, str) and value in SPECIAL_NAMES:
        return SPECIAL_NAMES[value]
    if isinstance(value, list):
        return tuple(value)
    return value


def _sample(uuid16: int, fields: dict[str, Any]) -> Sample:
    arguments = {name: _argument(value) for name, value in fields.items()}
    if uuid16 in DEVICE_INFORMATION_UUIDS:
        return DeviceInformationSample(uuid16, **arguments)
    return SAMPLE_TYPES[uuid16](**arguments)


def _encodable() -> list[tuple[str, int, dict[str, Any]]]:
    cases = []
    for path in sorted(VECTOR_DIR.glob("*.toml")):
        if path.name == MEDICAL_FLOATS:
            continue
        document = _load(path.name)
        for vector in document["vector"]:
            if "sample" in vector:
                uuid_hex = vector.get("characteristic", document.get("characteristic"))
                cases.append((path.name, int(uuid_hex, 16), vector))
    return cases


ENCODABLE: Final = _encodable()


def test_every_vector_file_has_encodable_vectors() -> None:
    files = {path.name for path in VECTOR_DIR.glob("*.toml")} - {MEDICAL_FLOATS}
    assert files == {file for file, _, _ in ENCODABLE}


@pytest.mark.parametrize(
    ("file", "uuid16", "vector"), ENCODABLE, ids=[f"{f}:{v['name']}" for f, _, v in ENCODABLE]
)
def test_encoder_output_is_the_vector(file: str, uuid16: int, vector: dict[str, Any]) -> None:
    payload = _sample(uuid16, vector["sample"]).encode()
    assert payload.hex(" ") == vector["hex"], file
    assert len(payload) <= MAX_PAYLOAD_BYTES


def _medical(kind: str) -> list[dict[str, Any]]:
    return [
        vector
        for vector in _load(MEDICAL_FLOATS)[kind]
        if "exponent" in vector or "input" in vector or "special" in vector
    ]


@pytest.mark.parametrize(
    ("kind", "vector"),
    [("sfloat", v) for v in _medical("sfloat")] + [("float", v) for v in _medical("float")],
    ids=lambda item: item if isinstance(item, str) else item["name"],
)
def test_medical_float_encoders_match(kind: str, vector: dict[str, Any]) -> None:
    encode = sfloat if kind == "sfloat" else float32
    if "input" in vector:
        encoded = encode(vector["input"], vector["exponent"])
    elif "special" in vector:
        encoded = encode(SPECIAL_NAMES[vector["special"]])
    else:
        # The decimal form is what a device holds; the float form must quantise the same.
        encoded = encode(Decimal(repr(vector["value"])), vector["exponent"])
        assert encode(vector["value"], vector["exponent"]) == encoded
    assert encoded.hex(" ") == vector["hex"]
