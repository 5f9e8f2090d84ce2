"""Our line protocol is byte-identical to influxdb-client's Point.to_line_protocol()."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from influxdb_client.client.write.point import Point

from cloud_sink.lineproto import encode_line, vital_line

# Every character the escaping rules care about, plus ordinary text.
TRICKY = st.sampled_from([",", "=", " ", '"', "\\", "\n", "\t", "\r", "#"])
TEXT = st.lists(st.one_of(TRICKY, st.characters(codec="utf-8")), max_size=12).map("".join)
NAME = TEXT.filter(lambda text: text != "" and not text.startswith("#"))
FIELD = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(-(2**63), 2**63 - 1),
    st.booleans(),
    TEXT,
)


def _point(measurement: str, tags: dict[str, str], fields: dict[str, object], ts_ns: int) -> str:
    # influxdb-client ships without type hints: its calls are untyped by nature.
    point = Point(measurement)  # type: ignore[no-untyped-call]
    for tag_key, tag_value in tags.items():
        point.tag(tag_key, tag_value)  # type: ignore[no-untyped-call]
    for field_key, field_value in fields.items():
        point.field(field_key, field_value)  # type: ignore[no-untyped-call]
    return str(point.time(ts_ns).to_line_protocol())  # type: ignore[no-untyped-call]


@settings(max_examples=400, deadline=None)
@given(
    measurement=NAME,
    tags=st.dictionaries(TEXT, TEXT, max_size=4),
    fields=st.dictionaries(NAME, FIELD, min_size=1, max_size=4),
    ts_ns=st.integers(0, 2**63 - 1),
)
def test_general_encoder_matches_point(
    measurement: str, tags: dict[str, str], fields: dict[str, object], ts_ns: int
) -> None:
    ours = encode_line(measurement, tags, fields, ts_ns)  # type: ignore[arg-type]
    assert ours == _point(measurement, tags, fields, ts_ns)


@settings(max_examples=200, deadline=None)
@given(
    token=st.binary(min_size=16, max_size=16).map(bytes.hex),
    metric=st.sampled_from(["heart_rate", "spo2", "bp_systolic"]),
    value=st.floats(allow_nan=False, allow_infinity=False),
    quality=st.integers(0, 2**32 - 1),
    flags=st.integers(0, 2**32 - 1),
    ts_ns=st.integers(0, 2**63 - 1),
)
def test_vital_fast_path_matches_point(
    token: str, metric: str, value: float, quality: int, flags: int, ts_ns: int
) -> None:
    ours = vital_line(token, metric, token, value=value, quality=quality, flags=flags, ts_ns=ts_ns)
    tags = {"patient": token, "metric": metric, "device": token}
    expected = _point("vital", tags, {"value": value, "quality": quality, "flags": flags}, ts_ns)
    assert ours == expected
