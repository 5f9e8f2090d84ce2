"""The population report recovers the simulation's heart-rate response to a warm room.

The simulators' own devices measure a ward in a room that warms to 29.5 °C (the scripted warm
room, with the event kind's longest onset and plateau), their readings are written to the real
InfluxDB as the sink writes them, and the report's regression of heart rate on room temperature
above 25 °C must find the simulation's coefficient inside its 95 % interval.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Final

import numpy as np
import pytest

from cloud_sink.influx import InfluxV1
from cloud_sink.lineproto import FieldValue, encode_line, vital_line
from cloud_sink.report import build_report, read_population
from firmware_sims.patient import SimulatedPatient
from firmware_sims.physiology import HEART_RATE_BPM_PER_C, RoomClimate
from firmware_sims.services import InfluxServer

pytestmark = [pytest.mark.integration]

NS: Final = 1_000_000_000
T0_S: Final = datetime(2025, 3, 14, 8, tzinfo=UTC).timestamp()
SEED: Final = 7
GATEWAY: Final = "sim-ward-1"
# Twenty beds, a reading a minute for an hour; the room warms from minute 10 for 5 minutes, stays
# at 29.5 °C for 20 and cools in 5 (ROOM_EVENT_KINDS["warm_room"]: onset up to 300 s, plateau
# up to 1200 s). Readings a minute apart and the same warm spell for every patient keep the
# patients' own heart-rate levels out of the slope; onset and recovery alike keep a slow drift
# of the whole ward (the daily cycle) out of it too.
PATIENTS: Final = 20
MINUTES: Final = 60
WARM_START_S: Final = 600.0
WARM_ONSET_S: Final = 300.0
WARM_PLATEAU_S: Final = 1200.0
MEASURED: Final = {"chest-patch": "heart_rate", "env-sensor": "room_temp"}


def simulated_ward_lines(seed: int) -> list[str]:
    """Line protocol of what the ward's chest patches and room sensor measured in the hour, and
    one `device_health` point per device naming the gateway (the report pairs by gateway)."""
    room = RoomClimate.draw(np.random.default_rng([seed, 0, 3]))
    room.events.scripted(
        "warm_room", start_s=T0_S + WARM_START_S, onset_s=WARM_ONSET_S, plateau_s=WARM_PLATEAU_S
    )
    lines = []
    for index in range(1, PATIENTS + 1):
        patient = SimulatedPatient(index, seed, room=room)
        for device in patient.devices:
            peripheral = device.peripheral
            metric = MEASURED.get(peripheral.kind)
            if metric is None:
                continue
            for minute in range(MINUTES):
                # Not on air: the truth log keeps what the device measured.
                peripheral.measure(int((T0_S + 60.0 * minute) * NS))
            lines += [
                vital_line(
                    patient.patient_token,
                    metric,
                    device.device_token,
                    value=truth.value,
                    quality=0,
                    flags=0,
                    ts_ns=truth.ts_ns,
                )
                for truth in peripheral.truth
                if truth.metric == metric
            ]
            tags = {"device": device.device_token, "gateway": GATEWAY, "kind": peripheral.kind}
            fields: dict[str, FieldValue] = {"link_up": True, "errors_total": 0}
            lines.append(encode_line("device_health", tags, fields, int(T0_S * NS)))
    return lines


@pytest.fixture
def influx(influxdb: InfluxServer, isolation: str) -> Iterator[InfluxV1]:
    client = InfluxV1(influxdb.url, isolation)
    client.create_database()
    yield client
    client.close()


def test_the_report_finds_the_simulated_heart_rate_per_degree(influx: InfluxV1) -> None:
    lines = simulated_ward_lines(SEED)
    influx.write(lines)
    since_ns, until_ns = int(T0_S * NS), int((T0_S + 60.0 * MINUTES) * NS)
    data = read_population(influx, since_ns, until_ns)
    report = build_report(
        data, since_ns=since_ns, until_ns=until_ns, generated_ns=until_ns, access=None
    )
    slope = report.figures["heart_rate_per_room_temp"]
    assert isinstance(slope.value, float), slope.how
    ci95 = slope.extra["ci95"]
    assert isinstance(ci95, list)
    low, high = ci95
    assert low <= HEART_RATE_BPM_PER_C <= high, (slope.value, low, high)
    # The interval says something: it excludes no response at all, and half or twice the truth.
    assert low > 0.5 * HEART_RATE_BPM_PER_C
    assert high < 2.0 * HEART_RATE_BPM_PER_C
    assert (slope.extra["patients"], slope.extra["gateways"]) == (PATIENTS, 1)
    # Every patient's readings of the warm half hour are paired, the cooler ones left out.
    warm_minutes = slope.count / PATIENTS  # type: ignore[operator]
    assert 20 <= warm_minutes <= (WARM_ONSET_S * 2 + WARM_PLATEAU_S) / 60.0
    variance = report.figures["room_temperature_variance"]
    assert variance.count == MINUTES
    assert isinstance(variance.value, float)
    assert variance.value > 1.0
