"""What each decoded serial record becomes before catalogue lookup: metric, device time, value."""

from __future__ import annotations

from pathlib import Path

from edge_agent.devices.monitor_lines import parse_sentence
from edge_agent.devices.serial_frames import decode_frame
from edge_agent.protocol.metrics import by_name
from edge_agent.sources.base import Source
from edge_agent.sources.serial import (
    Observation,
    SerialKind,
    SerialSource,
    implant_observations,
    monitor_observations,
)
from firmware_sims.serial.implant import (
    BatteryRecord,
    EpisodeRecord,
    LeadRecord,
    StatusRecord,
    TrendRecord,
    encode_record,
)

T_S = 1_795_373_100
NS = 1_000_000_000


def _observe(
    record: StatusRecord | TrendRecord | BatteryRecord | LeadRecord | EpisodeRecord,
) -> tuple[Observation, ...]:
    return implant_observations(decode_frame(encode_record(record, 1)[1:-1]).message)


def test_trend_values_are_stamped_at_the_trend_day_and_unmeasured_ones_left_out() -> None:
    assert _observe(TrendRecord(T_S, 58, None, 125, 37)) == (
        Observation("night_heart_rate", T_S * NS, 58.0),
        Observation("af_burden", T_S * NS, 12.5),
        Observation("fluid_index", T_S * NS, 37.0),
    )


def test_battery_voltage_is_in_volts() -> None:
    assert _observe(BatteryRecord(T_S, 2980, None, 1)) == (
        Observation("battery_voltage", T_S * NS, 2.98),
        Observation("battery_phase", T_S * NS, 1.0),
    )


def test_each_lead_channel_is_its_own_metric() -> None:
    observed = _observe(LeadRecord(T_S, ((2, 540), (1, 475), (4, None))))
    assert [(o.metric, o.value) for o in observed] == [
        ("lead_impedance_rv", 540.0),
        ("lead_impedance_ra", 475.0),
    ]


def test_an_episode_is_stamped_at_its_start() -> None:
    observed = _observe(EpisodeRecord(17, 4, T_S - 600, 14, 212, 1))
    assert {o.ts_ns for o in observed} == {(T_S - 600) * NS}
    assert [(o.metric, o.value) for o in observed] == [
        ("episode_type", 4.0),
        ("episode_duration", 14.0),
        ("episode_max_rate", 212.0),
        ("episode_therapy", 1.0),
    ]


def test_status_reports_error_code_and_link_rssi() -> None:
    assert [(o.metric, o.value) for o in _observe(StatusRecord(T_S, 0, 7, -80))] == [
        ("implant_error_code", 7.0),
        ("implant_link_rssi", -80.0),
    ]


def test_monitor_sentence_maps_onto_catalogue_metrics() -> None:
    sentence = parse_sentence(
        b"$VS,1,2026-11-22T18:45:01Z,HR=72,RR=16,SPO2=97,NIBP=120/80/93,TEMP=36.8*77"
    )
    observed = monitor_observations(sentence)
    assert {o.ts_ns for o in observed} == {1_795_373_101 * NS}
    assert {o.metric: o.value for o in observed} == {
        "heart_rate": 72.0,
        "resp_rate": 16.0,
        "spo2": 97.0,
        "body_temp": 36.8,
        "bp_systolic": 120.0,
        "bp_diastolic": 80.0,
        "bp_mean": 93.0,
    }
    for observation in observed:
        by_name(observation.metric)  # every monitor metric is in the catalogue


def test_unmeasured_monitor_parameters_produce_nothing() -> None:
    sentence = parse_sentence(b"$VS,2,2026-11-22T18:45:02.500Z,HR=---,RR=15,SPO2=---,TEMP=36.9*50")
    assert [o.metric for o in monitor_observations(sentence)] == ["resp_rate", "body_temp"]


def test_serial_source_satisfies_the_source_protocol_with_a_log_safe_name(tmp_path: Path) -> None:
    source: Source = SerialSource(
        "bed-09",
        tmp_path / "usb-Vendor_Receiver_SN12345-if00",
        SerialKind.IMPLANT,
        device_token="d" * 32,
        patient_token="p" * 32,
    )
    assert source.name == "serial.implant-receiver[bed-09]"
    assert "SN12345" not in source.name
