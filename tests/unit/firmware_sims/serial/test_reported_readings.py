"""What the serial simulators report to the ledger equals what the agent decodes from the wire."""

from __future__ import annotations

import pytest

from edge_agent.devices.monitor_lines import parse_sentence
from edge_agent.devices.serial_frames import decode_frame
from edge_agent.sources.serial import implant_observations, monitor_observations
from firmware_sims.serial.implant import (
    BatteryRecord,
    EpisodeRecord,
    ImplantReceiverSim,
    LeadRecord,
    StatusRecord,
    TrendRecord,
)
from firmware_sims.serial.monitor import BedsideMonitorSim, VitalsRecord

CLOCK_S = 1_795_373_100


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_implant_records_report_what_the_agent_decodes(seed: int) -> None:
    ticks = iter(range(CLOCK_S, CLOCK_S + 10_000, 2))
    sim = ImplantReceiverSim(seed, clock_s=lambda: next(ticks))
    for _ in range(60):
        sent = sim.next_unit()
        decoded = implant_observations(decode_frame(sent.data[1:-1]).message)
        record = sent.record
        assert isinstance(
            record, StatusRecord | TrendRecord | BatteryRecord | LeadRecord | EpisodeRecord
        )
        assert record.readings() == [(o.metric, o.ts_ns, o.value) for o in decoded]


def test_a_trend_day_sent_again_is_the_same_record_and_episodes_never_share_a_start() -> None:
    ticks = iter(range(CLOCK_S, CLOCK_S + 100_000, 1))
    sim = ImplantReceiverSim(4, clock_s=lambda: next(ticks))
    records = [sim.next_record() for _ in range(600)]
    trends: dict[int, TrendRecord] = {}
    for record in records:
        if isinstance(record, TrendRecord):
            assert trends.setdefault(record.period_start_s, record) == record
    starts = [r.start_s for r in records if isinstance(r, EpisodeRecord)]
    assert len(starts) == len(set(starts)) > 50


def test_monitor_sentences_report_what_the_agent_parses() -> None:
    clock = iter(range(CLOCK_S * 10**9, CLOCK_S * 10**9 + 10**12, 10**9))
    sim = BedsideMonitorSim(9, nibp_every=3, clock_ns=lambda: next(clock))
    for _ in range(30):
        sent = sim.next_unit()
        assert isinstance(sent.record, VitalsRecord)
        parsed = monitor_observations(parse_sentence(sent.data.rstrip(b"\r\n")))
        assert sorted(sent.record.readings()) == sorted(
            (o.metric, o.ts_ns, o.value) for o in parsed
        )
