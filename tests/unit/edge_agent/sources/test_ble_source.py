"""BleSource / BleManager against the simulated radio: streaming, re-arming, recovery, limits."""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager

import pytest
import pytest_asyncio
from bleak.uuids import normalize_uuid_16

from edge_agent.protocol.metrics import by_name
from edge_agent.sources.base import Reading
from edge_agent.sources.ble import (
    Backoff,
    BleManager,
    BleSettings,
    BleSource,
    BondedDevice,
    DecodedValue,
    LinkFailure,
    LossCause,
    decode_characteristic,
)
from firmware_sims.ble.backend import (
    CharacteristicDef,
    ConnectFault,
    ServiceDef,
    SimulatedPeripheral,
    SimulatedRadio,
)
from tests.support.ble import over_ward_socket
from tests.support.polling import until

HRM = normalize_uuid_16(0x2A37)
BATTERY = normalize_uuid_16(0x2A19)
ADDRESS = "C0:FF:EE:00:00:01"
SERIAL_NUMBER = b"SN-SECRET-0042"
FAST = Backoff(initial_s=0.001, max_s=0.01)


class Strap(SimulatedPeripheral):
    """A heart-rate strap notifying every `interval_s` with hand-encoded values.

    Heart Rate Measurement (Heart Rate Service v1.0 §3.1): flags 0x00 (UINT8 rate, no extras),
    then the rate.
    """

    def __init__(self, address: str = ADDRESS, interval_s: float = 0.01) -> None:
        super().__init__(
            address,
            "strap",
            [
                ServiceDef("180d", (CharacteristicDef("2a37", ("notify",)),)),
                ServiceDef("180f", (CharacteristicDef("2a19", ("read", "notify")),)),
                ServiceDef(
                    "180a",
                    (
                        CharacteristicDef("2a29", ("read",)),
                        CharacteristicDef("2a24", ("read",)),
                        CharacteristicDef("2a25", ("read",)),
                    ),
                ),
            ],
            advertised_service_uuids=["180d"],
        )
        self.interval_s = interval_s
        self.set_value("2a19", bytes([90]))
        self.set_value("2a29", b"Simulated Ltd")
        self.set_value("2a24", b"HRS-1\x00")
        self.set_value("2a25", SERIAL_NUMBER)
        self.serial_reads = 0

    def read_value(self, uuid: str) -> bytes:
        if uuid == normalize_uuid_16(0x2A25):
            self.serial_reads += 1
        return super().read_value(uuid)

    async def run(self) -> None:
        for beat in itertools.count():
            await asyncio.sleep(self.interval_s)
            self.notify("2a37", bytes((0x00, 60 + beat % 40)))


def settings(**overrides: object) -> BleSettings:
    base: dict[str, object] = {
        "silence_factor": 10.0,
        "scan_timeout_s": 2.0,
        "connect_timeout_s": 2.0,
        "io_timeout_s": 2.0,
        "backoff_not_found": FAST,
        "backoff_in_progress": FAST,
        "backoff_other": FAST,
    }
    base.update(overrides)
    return BleSettings(**base)  # type: ignore[arg-type]


def bonded(address: str = ADDRESS, n: int = 1, interval_s: float = 0.02) -> BondedDevice:
    return BondedDevice(
        address=address,
        device_token=f"{n:02d}" + "d" * 30,
        patient_token="p" * 32,
        device_kind="hr-strap",
        expected_interval_s=interval_s,
    )


@pytest_asyncio.fixture(params=["in-process", "ward-socket"])
async def radio(request: pytest.FixtureRequest) -> AsyncIterator[SimulatedRadio]:
    """The simulated radio in this process, and the same across a ward socket."""
    async with SimulatedRadio(advertising_interval_s=0.005) as running:
        if request.param == "in-process":
            yield running
        else:
            async with over_ward_socket(running) as remote:
                yield remote


class Sink:
    def __init__(self) -> None:
        self.readings: list[Reading] = []

    async def emit(self, reading: Reading) -> None:
        self.readings.append(reading)

    def count(self, metric: str) -> int:
        code = by_name(metric).code
        return sum(1 for reading in self.readings if reading.metric_code == code)


@asynccontextmanager
async def running(source: BleManager, sink: Sink) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(source.run(sink.emit), name="test.ble")
    try:
        yield task
    finally:
        source.stop()
        async with asyncio.timeout(10):
            await task


def recovered(source: BleSource, n: int) -> Callable[[], bool]:
    return lambda: len(source.device_counters.recoveries) == n


def source_for(radio: SimulatedRadio, **kwargs: object) -> BleSource:
    return BleSource(
        bonded(),
        settings=kwargs.pop("settings", settings()),  # type: ignore[arg-type]
        client_backend=radio.client_backend,
        scanner_backend=radio.scanner_backend,
        rng=random.Random(7),
    )


@pytest.mark.asyncio
async def test_streams_readings_with_receive_time_and_reads_device_info(
    radio: SimulatedRadio,
) -> None:
    strap = radio.add(Strap())
    source = source_for(radio)
    sink = Sink()
    before_ns = time.time_ns()
    async with running(source, sink):
        await until(lambda: sink.count("heart_rate") >= 5, "five heart rates")
        link = source.link
        assert link.connected
        assert set(link.subscribed_uuids) == {HRM, BATTERY}
        assert link.rssi_dbm == strap.rssi_dbm
    after_ns = time.time_ns()
    heart = [r for r in sink.readings if r.metric_code == by_name("heart_rate").code]
    assert all(before_ns <= r.ts_ns <= after_ns for r in heart)
    assert {(r.device_token, r.patient_token, r.device_kind) for r in sink.readings} == {
        (bonded().device_token, "p" * 32, "hr-strap")
    }
    # One connection, nothing dropped: the strap's beats arrive in order, without gaps.
    beats = [int(r.value) - 60 for r in heart]
    assert all(b == (a + 1) % 40 for a, b in itertools.pairwise(beats))
    assert sink.count("battery") == 1  # read once on connect
    assert link.device_info is not None
    assert link.device_info.manufacturer == "Simulated Ltd"
    assert link.device_info.model_number == "HRS-1"
    assert strap.serial_reads == 0  # the serial number is identifying: never read
    counters = source.device_counters
    assert counters.connects == 1
    assert counters.reconnects == 0
    assert counters.notifications >= 5
    assert counters.decode_errors == 0


@pytest.mark.asyncio
async def test_every_reconnect_re_arms_every_subscription(radio: SimulatedRadio) -> None:
    strap = radio.add(Strap())
    source = source_for(radio)
    sink = Sink()
    drops = 6
    async with running(source, sink):
        counters = source.device_counters
        await until(lambda: counters.notifications > 0, "first notification")
        for n in range(1, drops + 1):
            assert strap.drop_link()
            await until(recovered(source, n), f"recovery {n}")
    records = radio.connections_to(ADDRESS)
    assert len(records) == drops + 1
    for record in records:
        assert sorted(record.subscribed_uuids) == sorted([HRM, BATTERY])
    assert counters.link_drops == drops
    assert counters.reconnects == drops
    assert counters.silences == 0
    assert [r.cause for r in counters.recoveries] == [LossCause.LINK_DROP] * drops
    assert all(
        r.loss_to_stream_s >= 0 and r.data_gap_s >= r.loss_to_stream_s for r in counters.recoveries
    )


@pytest.mark.asyncio
async def test_silence_watchdog_resets_a_link_that_stays_up(radio: SimulatedRadio) -> None:
    strap = radio.add(Strap())
    source = source_for(radio, settings=settings(silence_factor=4.0))
    sink = Sink()
    silences = 3
    async with running(source, sink):
        counters = source.device_counters
        await until(lambda: counters.notifications > 0, "first notification")
        for n in range(1, silences + 1):
            strap.silence_notifications()
            await until(recovered(source, n), f"recovery {n}")
    assert counters.silences == silences
    assert counters.link_drops == 0
    assert [r.cause for r in counters.recoveries] == [LossCause.SILENCE] * silences
    assert len(radio.connections_to(ADDRESS)) == silences + 1
    assert not any(r.closed_by_peripheral for r in radio.connections_to(ADDRESS))


@pytest.mark.asyncio
async def test_connect_failures_are_classified_and_retried(radio: SimulatedRadio) -> None:
    strap = radio.add(Strap())
    strap.fail_next_connects(ConnectFault.NOT_FOUND, 2)
    strap.fail_next_connects(ConnectFault.IN_PROGRESS, 3)
    strap.fail_next_connects(ConnectFault.ABORTED, 1)
    source = source_for(radio)
    sink = Sink()
    async with running(source, sink):
        await until(lambda: sink.count("heart_rate") > 0, "streaming after failures")
    counters = source.device_counters
    assert counters.failures == {
        LinkFailure.NOT_FOUND: 2,
        LinkFailure.IN_PROGRESS: 3,
        LinkFailure.OTHER: 1,
    }
    assert counters.connect_failures == 6
    assert counters.connects == 1


@pytest.mark.asyncio
async def test_device_out_of_range_is_found_again_by_scanning(radio: SimulatedRadio) -> None:
    strap = radio.add(Strap())
    source = source_for(radio, settings=settings(scan_timeout_s=0.05))
    sink = Sink()
    async with running(source, sink):
        counters = source.device_counters
        await until(lambda: counters.notifications > 0, "first notification")
        strap.leave_range()
        await until(lambda: counters.failures.get(LinkFailure.NOT_FOUND, 0) >= 2, "scan misses")
        assert not source.link.connected
        strap.enter_range()
        await until(lambda: len(counters.recoveries) == 1, "recovery")
    assert counters.link_drops == 1


@pytest.mark.asyncio
async def test_garbage_is_counted_and_streaming_continues(radio: SimulatedRadio) -> None:
    strap = radio.add(Strap())
    source = source_for(radio)
    sink = Sink()
    async with running(source, sink):
        counters = source.device_counters
        await until(lambda: counters.notifications > 0, "first notification")
        strap.inject_garbage(3, payload=b"")
        seen = sink.count("heart_rate")
        await until(lambda: counters.decode_errors == 3, "three decode errors")
        await until(lambda: sink.count("heart_rate") > seen + 2, "more heart rates")
    assert source.link.connected is False
    assert counters.decode_errors == 3


@pytest.mark.asyncio
async def test_decoder_bug_is_counted_not_fatal(radio: SimulatedRadio) -> None:
    radio.add(Strap())
    calls = 0

    def buggy(uuid: str, payload: bytes) -> Sequence[DecodedValue]:
        nonlocal calls
        calls += 1
        if calls == 2:
            bug = "a decoder bug"
            raise IndexError(bug)
        return decode_characteristic(uuid, payload)

    source = BleSource(
        bonded(),
        settings=settings(),
        decoder=buggy,
        client_backend=radio.client_backend,
        scanner_backend=radio.scanner_backend,
    )
    sink = Sink()
    async with running(source, sink):
        await until(lambda: sink.count("heart_rate") >= 3, "heart rates after the bug")
    assert source.device_counters.decode_errors == 1


@pytest.mark.asyncio
async def test_device_timestamps_are_kept(radio: SimulatedRadio) -> None:
    radio.add(Strap())
    device_ts_ns = 1_700_000_000_000_000_000

    def stamped(uuid: str, payload: bytes) -> Sequence[DecodedValue]:
        return [
            DecodedValue(v.metric, v.value, v.quality, device_ts_ns=device_ts_ns)
            for v in decode_characteristic(uuid, payload)
        ]

    source = BleSource(
        bonded(),
        settings=settings(),
        decoder=stamped,
        client_backend=radio.client_backend,
        scanner_backend=radio.scanner_backend,
    )
    sink = Sink()
    async with running(source, sink):
        await until(lambda: sink.count("heart_rate") >= 2, "heart rates")
    assert {r.ts_ns for r in sink.readings} == {device_ts_ns}


@pytest.mark.asyncio
async def test_full_queue_drops_oldest_and_counts(radio: SimulatedRadio) -> None:
    radio.add(Strap(interval_s=0.002))
    release = asyncio.Event()
    taken: list[Reading] = []

    async def blocked_emit(reading: Reading) -> None:
        taken.append(reading)
        await release.wait()

    capacity = 4
    source = BleSource(
        bonded(),
        settings=settings(queue_capacity=capacity),
        client_backend=radio.client_backend,
        scanner_backend=radio.scanner_backend,
    )
    task = asyncio.create_task(source.run(blocked_emit))
    counters = source.device_counters
    await until(lambda: counters.dropped_total >= 5, "drops")
    source.stop()
    release.set()
    async with asyncio.timeout(10):
        await task
    # One value was being decoded when the queue filled; every other value was either kept
    # (then decoded after release) or dropped and counted. Battery was read, not notified.
    assert counters.notifications + 1 == counters.readings + counters.dropped_total
    assert len(taken) == counters.readings


@pytest.mark.asyncio
async def test_links_are_capped_and_connects_serialised(radio: SimulatedRadio) -> None:
    radio.connect_latency_s = 0.002
    addresses = [f"C0:FF:EE:00:00:0{n}" for n in range(1, 4)]
    for address in addresses:
        radio.add(Strap(address))
    manager = BleManager(
        [bonded(address, n) for n, address in enumerate(addresses)],
        settings=settings(max_links=2),
        client_backend=radio.client_backend,
        scanner_backend=radio.scanner_backend,
    )
    sink = Sink()
    async with running(manager, sink):
        await until(
            lambda: sum(link.counters.notifications > 0 for link in manager.links.values()) == 2,
            "two links streaming",
        )
        await asyncio.sleep(0.05)  # give a third link the chance to (wrongly) connect
        assert radio.active_links == 2
    assert radio.peak_active_links == 2
    assert radio.peak_connecting == 1
    assert radio.active_links == 0


@pytest.mark.asyncio
async def test_stop_disconnects_and_returns(radio: SimulatedRadio) -> None:
    strap = radio.add(Strap())
    source = source_for(radio)
    sink = Sink()
    async with running(source, sink):
        await until(lambda: source.device_counters.notifications > 0, "first notification")
        assert radio.active_links == 1
    assert strap.is_advertising  # released: a connected strap does not advertise
    assert radio.active_links == 0
    assert all(record.closed for record in radio.connections)
    source.stop()  # idempotent


@pytest.mark.asyncio
async def test_stop_before_any_device_is_found(radio: SimulatedRadio) -> None:
    source = source_for(radio)
    sink = Sink()
    async with running(source, sink):
        await asyncio.sleep(0.01)
    assert sink.readings == []


@pytest.mark.asyncio
async def test_logs_never_carry_the_device_address(
    radio: SimulatedRadio, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="edge_agent")
    strap = radio.add(Strap())
    strap.fail_next_connects(ConnectFault.NOT_FOUND)
    strap.fail_next_connects(ConnectFault.IN_PROGRESS)
    source = source_for(radio, settings=settings(silence_factor=3.0))
    sink = Sink()
    async with running(source, sink):
        counters = source.device_counters
        await until(lambda: counters.notifications > 0, "first notification")
        strap.drop_link()
        await until(lambda: len(counters.recoveries) == 1, "recovery after drop")
        strap.inject_garbage(payload=b"")
        strap.silence_notifications()
        await until(lambda: len(counters.recoveries) == 2, "recovery after silence")
    messages = [record.getMessage() for record in caplog.records]
    assert any("retry in" in message for message in messages)
    assert any(bonded().log_name in message for message in messages)
    text = "\n".join(messages).upper()
    assert ADDRESS not in text
    assert ADDRESS.replace(":", "-") not in text
    assert SERIAL_NUMBER.decode() not in text


@pytest.mark.asyncio
async def test_backoff_follows_the_kind_of_error(
    radio: SimulatedRadio, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="edge_agent.sources.ble")
    strap = radio.add(Strap())
    strap.fail_next_connects(ConnectFault.NOT_FOUND, 2)
    strap.fail_next_connects(ConnectFault.IN_PROGRESS, 2)
    chosen = settings(
        backoff_not_found=Backoff(initial_s=0.03, max_s=0.03, jitter=0.0),
        backoff_in_progress=Backoff(initial_s=0.001, max_s=0.001, jitter=0.0),
    )
    source = source_for(radio, settings=chosen)
    sink = Sink()
    async with running(source, sink):
        await until(lambda: sink.count("heart_rate") > 0, "streaming after failures")
    retries = [r.getMessage() for r in caplog.records if "retry in" in r.getMessage()]
    assert len(retries) == 4
    assert all(m.endswith("retry in 0.03 s") for m in retries if "NotFound" in m)
    assert all(m.endswith("retry in 0.00 s") for m in retries if "InProgress" in m)
    assert sum("NotFound" in m for m in retries) == 2
    assert sum("InProgress" in m for m in retries) == 2


@pytest.mark.asyncio
async def test_readvertising_with_new_rssi_is_seen(radio: SimulatedRadio) -> None:
    strap = radio.add(Strap())
    source = source_for(radio)
    sink = Sink()
    async with running(source, sink):
        counters = source.device_counters
        await until(lambda: counters.notifications > 0, "first notification")
        assert source.link.rssi_dbm == -60
        strap.leave_range()
        strap.set_rssi(-87)  # moved away: comes back weaker
        strap.enter_range()
        await until(lambda: len(counters.recoveries) == 1, "recovery")
        assert source.link.rssi_dbm == -87
