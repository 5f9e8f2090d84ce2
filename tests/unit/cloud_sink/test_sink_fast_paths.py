"""The sink's block-at-a-time paths give exactly what the reading-at-a-time definitions give."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloud_sink.lineproto import LineProtocolError, vital_line, vital_lines
from cloud_sink.replay import WINDOW, ReplayGuard
from cloud_sink.validate import MAX_FUTURE_SKEW_NS, MIN_TS_NS, frame_points
from edge_agent.protocol import CATALOGUE, DeviceBlock, Frame

NOW_NS = 1_767_225_600_000_000_000
TOKEN = st.binary(min_size=16, max_size=16).map(bytes.hex)
FINITE = st.floats(allow_nan=False, allow_infinity=False)
NAMES = {metric.code: metric.name for metric in CATALOGUE}
U32 = st.integers(0, 2**32 - 1)


@settings(max_examples=200)
@given(
    readings=st.lists(
        st.tuples(st.sampled_from(sorted(NAMES.values())), FINITE, U32, U32, st.integers(0, 2**62)),
        max_size=12,
    ),
    patient=TOKEN,
    device=TOKEN,
)
def test_vital_lines_equal_vital_line_per_reading(
    readings: list[tuple[str, float, int, int, int]], patient: str, device: str
) -> None:
    expected = [
        vital_line(patient, m, device, value=v, quality=q, flags=f, ts_ns=t)
        for m, v, q, f, t in readings
    ]
    columns = list(zip(*readings, strict=True)) or [(), (), (), (), ()]
    for _ in range(2):  # the second pass reads the remembered float texts
        assert (
            vital_lines(
                patient,
                device,
                metrics=columns[0],
                values=columns[1],
                quality=columns[2],
                flags=columns[3],
                stamps_ns=columns[4],
            )
            == expected
        )


def test_negative_zero_keeps_its_sign_after_positive_zero() -> None:
    for value, text in ((0.0, "value=0 "), (-0.0, "value=-0 "), (0.0, "value=0 ")):
        (line,) = vital_lines(
            "p", "d", metrics=["spo2"], values=[value], quality=[0], flags=[0], stamps_ns=[1]
        )
        assert text in line


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_vital_lines_refuse_non_finite_values(bad: float) -> None:
    with pytest.raises(LineProtocolError, match="not finite"):
        vital_lines(
            "p", "d", metrics=["a", "b"], values=[1e308, bad], quality=[0, 0], flags=[0, 0],
            stamps_ns=[1, 2],
        )  # fmt: skip


def test_an_overflowing_sum_of_finite_values_is_still_encoded() -> None:
    lines = vital_lines(
        "p", "d", metrics=["a", "b"], values=[1e308, 1e308], quality=[0, 0], flags=[0, 0],
        stamps_ns=[1, 2],
    )  # fmt: skip
    assert [line.split("value=")[1] for line in lines] == ["1e+308 1", "1e+308 2"]


def _reference(frame: Frame, now_ns: int) -> tuple[list[str], Counter[str]]:
    """DESIGN §4 / wire-format §4 refusal rules, one reading at a time."""
    lines, refused = [], Counter[str]()
    for block in frame.blocks:
        for code, ts_ns, value, q, f in zip(
            block.metric_codes.tolist(), block.ts_ns.tolist(), block.values.tolist(),
            block.quality.tolist(), block.flags.tolist(), strict=True,
        ):  # fmt: skip
            if code not in NAMES:
                refused["unknown_metric"] += 1
            elif not math.isfinite(value):
                refused["not_finite"] += 1
            elif not MIN_TS_NS <= ts_ns <= now_ns + MAX_FUTURE_SKEW_NS:
                refused["timestamp_out_of_range"] += 1
            else:
                lines.append(
                    vital_line(
                        block.patient_token, NAMES[code], block.device_token,
                        value=value, quality=q, flags=f, ts_ns=ts_ns,
                    )
                )  # fmt: skip
    return lines, refused


readings = st.tuples(
    st.sampled_from([*NAMES, 0, 9999]),
    st.one_of(
        st.integers(MIN_TS_NS, NOW_NS + MAX_FUTURE_SKEW_NS),
        st.sampled_from([0, MIN_TS_NS - 1, NOW_NS + MAX_FUTURE_SKEW_NS + 1]),
    ),
    st.one_of(FINITE, st.sampled_from([math.nan, math.inf])),
    U32,
    U32,
)


@st.composite
def blocks(draw: st.DrawFn) -> DeviceBlock:
    rows = draw(st.lists(readings, max_size=10))
    codes, stamps, values, quality, flags = zip(*rows, strict=True) if rows else ((),) * 5
    return DeviceBlock(
        draw(TOKEN), draw(TOKEN), "kind",
        np.array(codes, np.uint16), np.array(stamps, np.int64), np.array(values, np.float64),
        np.array(quality, np.uint32), np.array(flags, np.uint32),
    )  # fmt: skip


@settings(max_examples=200)
@given(frame_blocks=st.lists(blocks(), max_size=4))
def test_frame_points_equal_the_reading_at_a_time_rules(frame_blocks: list[DeviceBlock]) -> None:
    frame = Frame("ward-1", NOW_NS, tuple(frame_blocks))
    lines, refused = _reference(frame, NOW_NS)
    points = frame_points(frame, NOW_NS)
    assert points.lines == lines
    assert points.vitals == len(lines)
    assert points.refused == refused


def test_a_batch_commits_only_its_own_marks(tmp_path: Path) -> None:
    path = tmp_path / "replay.json"
    guard = ReplayGuard(path)
    written = [guard.accept("gw-1", 1, seq) for seq in (1, 2)]
    not_yet = guard.accept("gw-1", 1, 3)  # taken into the next batch, not written yet
    guard.commit(written)
    assert guard.seen("gw-1", 1, 3)  # still in flight in this process
    after_crash = ReplayGuard(path)
    assert [after_crash.seen("gw-1", 1, s) for s in (1, 2, 3)] == [True, True, False]
    guard.commit([not_yet])
    assert ReplayGuard(path).seen("gw-1", 1, 3)


@settings(max_examples=100)
@given(seqs=st.lists(st.integers(0, 3 * WINDOW), max_size=40, unique=True), data=st.data())
def test_marks_fold_the_same_in_any_order(seqs: list[int], data: st.DataObject) -> None:
    ordered, shuffled = ReplayGuard(None), ReplayGuard(None)
    for guard in (ordered, shuffled):
        for seq in seqs:
            guard.accept("gw", 1, seq)
    ordered.fold(sorted(("gw", 1, s) for s in seqs))
    shuffled.fold(data.draw(st.permutations([("gw", 1, s) for s in seqs])))
    probes = {s + d for s in seqs for d in (-1, 0, 1) if s + d >= 0}
    assert {p for p in probes if ordered.seen("gw", 1, p)} == {
        p for p in probes if shuffled.seen("gw", 1, p)
    }
    assert ordered.snapshot() == shuffled.snapshot()
