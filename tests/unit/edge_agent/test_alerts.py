"""Alert engine: persistence, hysteresis, artifacts, technical suppression, silent devices."""

from __future__ import annotations

from edge_agent.alerts import AlertEngine, advisory_rules, technical_rules
from edge_agent.filters import flags as fl
from edge_agent.protocol import AlertEvent, by_name
from edge_agent.sources import Reading

P, D = "a" * 32, "b" * 32
S = 1_000_000_000
T0 = 1_767_225_600 * S


def _spo2(engine: AlertEngine, second: float, value: float, flags: int = 0) -> list[AlertEvent]:
    reading = Reading(D, P, "pulse-oximeter", by_name("spo2").code, T0 + int(second * S), value)
    return engine.observe(reading, flags)


def _run(engine: AlertEngine, series: list[tuple[float, float]]) -> list[AlertEvent]:
    return [event for t, v in series for event in _spo2(engine, t, v)]


def _heart_rate(engine: AlertEngine, values: list[float], flags: int = 0) -> list[AlertEvent]:
    """One heart-rate reading a second from T0, all with the same filter flags."""
    code = by_name("heart_rate").code
    return [
        event
        for second, value in enumerate(values)
        for event in engine.observe(Reading(D, P, "hr-strap", code, T0 + second * S, value), flags)
    ]


def test_desaturation_raises_only_after_15_s_and_clears_with_hysteresis() -> None:
    engine = AlertEngine()
    low = [(float(t), 88.0) for t in range(0, 20)]
    events = _run(engine, low)
    assert [(e.kind, e.state, e.ts_ns) for e in events] == [("spo2_low", "raised", T0 + 15 * S)]
    # 91 % is above the threshold but inside the 2-point hysteresis band: still open.
    assert _run(engine, [(float(t), 91.0) for t in range(20, 60)]) == []
    cleared = _run(engine, [(float(t), 95.0) for t in range(60, 80)])
    assert [(e.state, e.ts_ns) for e in cleared] == [("cleared", T0 + 70 * S)]
    assert cleared[0].alert_id == events[0].alert_id


def test_a_short_dip_never_raises() -> None:
    engine = AlertEngine()
    series = [(float(t), 88.0 if t % 20 < 10 else 97.0) for t in range(0, 200)]
    assert _run(engine, series) == []


def test_artifacts_neither_raise_nor_reset() -> None:
    engine = AlertEngine()
    for t in range(0, 10):
        assert _spo2(engine, t, 88.0) == []
    assert _spo2(engine, 10, 99.0, fl.SPIKE) == []  # an artifact does not reset the pending dip
    events = [e for t in range(11, 16) for e in _spo2(engine, t, 88.0)]
    assert [e.state for e in events] == ["raised"]


def test_probe_off_is_technical_and_suppresses_physiological_alerts() -> None:
    engine = AlertEngine(rules=(*AlertEngine().rules, *technical_rules(["spo2"])))
    events = [e for t in range(0, 12) for e in _spo2(engine, t, 70.0, fl.QUALITY_BAD)]
    assert [(e.kind, e.state) for e in events] == [("probe_off", "raised")]
    # Until probe_off has cleared (5 s of good contact), low values do not even start the
    # 15 s desaturation timer: the physiological alert comes 15 s after the clear, not before.
    later = [(e.kind, e.state, e.ts_ns) for t in range(12, 40) for e in _spo2(engine, t, 85.0)]
    assert later == [
        ("probe_off", "cleared", T0 + 17 * S),
        ("spo2_low", "raised", T0 + 33 * S),  # the clearing reading itself was suppressed
    ]


def test_silent_device_raises_and_clears_on_next_reading() -> None:
    engine = AlertEngine(silence_factor=5.0)
    engine.expect(P, D, interval_s=1.0, now_ns=T0)
    assert engine.tick(T0 + 4 * S) == []
    raised = engine.tick(T0 + 6 * S)
    assert [(e.kind, e.state) for e in raised] == [("device_silent", "raised")]
    assert engine.tick(T0 + 7 * S) == []  # de-duplicated while open
    cleared = _spo2(engine, 8, 97.0)
    assert [(e.kind, e.state, e.alert_id) for e in cleared] == [
        ("device_silent", "cleared", raised[0].alert_id)
    ]
    assert engine.open_alerts() == 0


def test_an_unpaired_device_is_no_longer_watched_and_its_silence_alert_clears() -> None:
    engine = AlertEngine(silence_factor=5.0)
    engine.expect(P, D, interval_s=1.0, now_ns=T0)
    engine.expect(P, "other", interval_s=1.0, now_ns=T0)
    raised = engine.tick(T0 + 6 * S)
    assert len(raised) == 2
    cleared = engine.release(D, T0 + 7 * S)
    assert [(e.device_token, e.state) for e in cleared] == [(D, "cleared")]
    assert engine.release(D, T0 + 8 * S) == []
    # The other device is still watched; the released one never raises again.
    assert engine.tick(T0 + 60 * S) == []
    assert engine.open_alerts() == 1
    engine.expect(P, D, interval_s=1.0, now_ns=T0 + 60 * S)  # paired again later: watched anew
    assert [e.device_token for e in engine.tick(T0 + 66 * S)] == [D]


def test_a_high_heart_rate_confirmed_by_the_cusum_raises_after_10_s_else_after_20_s() -> None:
    confirmed = _heart_rate(AlertEngine(), [140.0] * 30, fl.CUSUM_HIGH)
    assert [(e.kind, e.ts_ns) for e in confirmed] == [("heart_rate_high", T0 + 10 * S)]
    # Near the patient's own baseline the CUSUM stays quiet and the full delay applies.
    unconfirmed = _heart_rate(AlertEngine(), [140.0] * 30)
    assert [(e.kind, e.ts_ns) for e in unconfirmed] == [("heart_rate_high", T0 + 20 * S)]


def test_a_low_heart_rate_confirmed_by_the_cusum_raises_after_10_s() -> None:
    events = _heart_rate(AlertEngine(), [35.0] * 20, fl.CUSUM_LOW)
    assert [(e.kind, e.ts_ns) for e in events] == [("heart_rate_low", T0 + 10 * S)]
    # The opposite CUSUM flag confirms nothing about a low rate: the full 15 s.
    events = _heart_rate(AlertEngine(), [35.0] * 20, fl.CUSUM_HIGH)
    assert [(e.kind, e.ts_ns) for e in events] == [("heart_rate_low", T0 + 15 * S)]


def test_an_irregular_rate_mostly_above_the_limit_still_raises() -> None:
    # Every fourth second dips below 130, as the scatter of atrial fibrillation does. Time below
    # the limit is debited instead of restarting the delay: each 4 s nets 2 s held, and the
    # 20 s are reached at 38 s (held 2 s at t = 2, 4 s at t = 6, ...).
    values = [125.0 if second % 4 == 3 else 145.0 for second in range(60)]
    events = _heart_rate(AlertEngine(), values)
    assert [(e.kind, e.ts_ns) for e in events] == [("heart_rate_high", T0 + 38 * S)]


def test_a_rate_above_the_limit_half_the_time_or_less_never_raises() -> None:
    values = [135.0 if second % 2 == 0 else 125.0 for second in range(600)]
    assert _heart_rate(AlertEngine(), values, fl.CUSUM_HIGH) == []


def test_a_desaturation_with_one_reading_above_90_restarts_the_15_s_delay() -> None:
    engine = AlertEngine()
    series = [(float(t), 91.0 if t == 10 else 88.0) for t in range(0, 30)]
    events = _run(engine, series)
    assert [(e.kind, e.ts_ns) for e in events] == [("spo2_low", T0 + 26 * S)]


def test_a_sustained_deviation_from_the_baseline_is_an_advisory_not_an_alarm() -> None:
    engine = AlertEngine(rules=advisory_rules(["spo2"]))
    # 95 % is inside every threshold, but the CUSUM says it is below this patient's baseline.
    minutes = [e for t in range(0, 16 * 60, 10) for e in _spo2(engine, t, 95.0, fl.CUSUM_LOW)]
    assert [(e.kind, e.severity, e.state, e.ts_ns) for e in minutes] == [
        ("baseline_fall", "info", "raised", T0 + 900 * S)
    ]
    back = [e for t in range(960, 2000, 10) for e in _spo2(engine, t, 97.0)]
    assert [(e.kind, e.state, e.ts_ns) for e in back] == [
        ("baseline_fall", "cleared", T0 + (960 + 900) * S)
    ]


def test_an_advisory_waits_while_the_device_has_a_technical_alert() -> None:
    engine = AlertEngine(rules=(*advisory_rules(["spo2"]), *technical_rules(["spo2"])))
    flags = fl.CUSUM_LOW | fl.QUALITY_BAD
    events = [e for t in range(0, 16 * 60, 10) for e in _spo2(engine, t, 95.0, flags)]
    assert [e.kind for e in events] == ["probe_off"]
