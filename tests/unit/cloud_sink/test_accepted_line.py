"""The per-batch `sink_security` accepted points: counted per gateway, equal to encode_line."""

from __future__ import annotations

import time

from hypothesis import given, settings
from hypothesis import strategies as st

from cloud_sink.lineproto import encode_line
from cloud_sink.pipeline import ACCEPTED_REASON, _Batch
from cloud_sink.validate import MIN_TS_NS
from edge_agent.protocol import Frame

SENT_NS = 1_763_000_000 * 1_000_000_000


@given(
    gateway=st.text(min_size=1, max_size=40).filter(lambda t: t.strip() == t and t.isprintable()),
    readings=st.lists(st.integers(0, 10_000), min_size=1, max_size=20),
)
@settings(max_examples=200, deadline=None)
def test_a_batch_counts_its_envelopes_in_the_line_encode_line_writes(
    gateway: str, readings: list[int]
) -> None:
    batch = _Batch()
    for i, count in enumerate(readings):
        batch.count_accepted(Frame(gateway, SENT_NS + i), count)
    batch.close()
    expected = encode_line(
        "sink_security",
        {"gateway": gateway, "reason": ACCEPTED_REASON},
        {"accepted": len(readings), "readings": sum(readings)},
        SENT_NS + len(readings) - 1,  # the newest send time
    )
    assert batch.lines == [expected]
    batch.close()  # the counts are added once
    assert batch.lines == [expected]


def test_each_gateway_gets_its_own_count() -> None:
    batch = _Batch()
    for gateway, count in (("ward-1", 10), ("ward-2", 4), ("ward-1", 7)):
        batch.count_accepted(Frame(gateway, SENT_NS), count)
    batch.close()
    fields = {line.split(",")[1]: line.split(" ")[1] for line in batch.lines}
    assert fields == {
        "gateway=ward-1": "accepted=2i,readings=17i",
        "gateway=ward-2": "accepted=1i,readings=4i",
    }


def test_a_send_time_influxdb_could_refuse_falls_back_to_now() -> None:
    before = time.time_ns()
    for sent_ns in (MIN_TS_NS - 1, before + 10**15):
        batch = _Batch()
        batch.count_accepted(Frame("ward-1", sent_ns), 3)
        batch.close()
        stamp = int(batch.lines[0].rsplit(" ", 1)[1])
        assert before <= stamp <= time.time_ns()
