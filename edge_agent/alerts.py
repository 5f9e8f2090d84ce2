"""Bedside alerts from readings and filter flags: persistence, hysteresis, stable ids, raise/clear.

Physiological alerts use only readings the filter bank calls usable (no ARTIFACT bit), must hold for
a minimum time before they are raised (IEC 60601-1-8 calls this the alarm condition delay) and clear
only once the value is back past a hysteresis margin for a while. Technical alerts (probe off,
flatline, silent device, low battery) are kept apart, and a device with an open technical alert
raises no physiological alert: its numbers are not to be trusted.

Two refinements of the delay, per rule. A rule may take a shorter delay while the filter bank's
CUSUM against the patient's own baseline confirms a sustained change in the same direction: a
change large and long enough to move the CUSUM is not a transient. And a rule may debit time on
the safe side instead of restarting the delay at the first reading there, so an irregular rhythm
that is mostly past the threshold (atrial fibrillation) still alarms while a value that only
touches the threshold now and then never does.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

from edge_agent.filters import flags as fl
from edge_agent.protocol import AlertEvent, by_code, by_name
from edge_agent.protocol.frame import Severity
from edge_agent.sources import Reading

_LOGGER = logging.getLogger(__name__)
_NS: Final = 1_000_000_000

Category = Literal["physiological", "technical", "advisory"]
"""Advisories flag a sustained deviation from the patient's own baseline (the CUSUM flags)
while the value may still be inside every absolute threshold: information for the nurse, never
a page; they are kept apart from physiological alerts and suppressed like them by a technical
alert on the device."""


@dataclass(slots=True, frozen=True)
class AlertRule:
    """One alert condition on one metric.

    Physiological rules compare the value with `below` or `above`; technical rules fire on any of
    `flag_mask`'s bits. `raise_after_s` is how long the condition must hold; the alert clears when
    the value is back past the threshold by `clear_margin` for `clear_after_s`.

    `confirmed_after_s` replaces `raise_after_s` on a reading that carries any of `confirm_mask`'s
    filter flags (CUSUM_HIGH for a high limit, CUSUM_LOW for a low one). `dip_debit` None
    restarts the delay at the first usable reading outside the condition; a number d instead
    takes d seconds off the time held for every second outside it, and restarts the delay only
    when nothing is left (with d = 1 the condition must have held for the delay longer than it
    has not). An alert is only ever raised on a reading inside the condition.
    """

    kind: str
    metric: str
    category: Category
    severity: Severity
    raise_after_s: float
    clear_after_s: float
    below: float | None = None
    above: float | None = None
    clear_margin: float = 0.0
    flag_mask: int = 0
    confirm_mask: int = 0
    confirmed_after_s: float | None = None
    dip_debit: float | None = None

    def delay_ns(self, flags: int) -> int:
        """The alarm condition delay that applies to a reading with these filter flags."""
        if self.confirmed_after_s is not None and flags & self.confirm_mask:
            return int(self.confirmed_after_s * _NS)
        return int(self.raise_after_s * _NS)

    def condition(self, value: float, flags: int) -> bool:
        if self.category != "physiological" and self.flag_mask:
            return bool(flags & self.flag_mask)
        if self.below is not None and value < self.below:
            return True
        return self.above is not None and value > self.above

    def cleared(self, value: float, flags: int) -> bool:
        """True when the reading is on the safe side of the hysteresis band."""
        if self.category != "physiological" and self.flag_mask:
            return not flags & self.flag_mask
        if self.below is not None and value < self.below + self.clear_margin:
            return False
        return not (self.above is not None and value > self.above - self.clear_margin)


def _phys(
    kind: str,
    metric: str,
    severity: Severity,
    raise_s: float,
    clear_s: float,
    **limits: float | int | None,
) -> AlertRule:
    return AlertRule(kind, metric, "physiological", severity, raise_s, clear_s, **limits)  # type: ignore[arg-type]


# Thresholds follow common ward defaults (NEWS2's red-score boundaries, RCP 2017); delays keep
# one noisy sample from paging anybody. SpO2 keeps the strict 15 s: every reading of a dip must be
# below 90 %. A heart rate past its limit for 10 s pages when the CUSUM against the patient's own
# baseline agrees (the rise is sustained, not a transient); a patient whose usual rate sits near
# the limit keeps the full delay. Heart-rate delays debit time below the limit second for
# second, so the beat-to-beat scatter of atrial fibrillation does not restart them on every
# short beat, while a rate that is above 130 less than half the time never pages.
DEFAULT_RULES: Final[tuple[AlertRule, ...]] = (
    _phys("spo2_low", "spo2", "critical", 15.0, 10.0, below=90.0, clear_margin=2.0),
    _phys(
        "heart_rate_high",
        "heart_rate",
        "warning",
        20.0,
        15.0,
        above=130.0,
        clear_margin=10.0,
        confirm_mask=fl.CUSUM_HIGH,
        confirmed_after_s=10.0,
        dip_debit=1.0,
    ),
    _phys(
        "heart_rate_low",
        "heart_rate",
        "critical",
        15.0,
        15.0,
        below=40.0,
        clear_margin=5.0,
        confirm_mask=fl.CUSUM_LOW,
        confirmed_after_s=10.0,
        dip_debit=1.0,
    ),
    _phys("resp_rate_high", "resp_rate", "warning", 60.0, 30.0, above=24.0, clear_margin=3.0),
    _phys("resp_rate_low", "resp_rate", "critical", 30.0, 30.0, below=8.0, clear_margin=2.0),
    _phys("fever", "body_temp", "warning", 0.0, 0.0, above=38.5, clear_margin=0.3),
    _phys("hypothermia", "body_temp", "warning", 0.0, 0.0, below=35.0, clear_margin=0.3),
    _phys("hypotension", "bp_systolic", "critical", 0.0, 0.0, below=90.0, clear_margin=10.0),
    _phys("hypertension", "bp_systolic", "warning", 0.0, 0.0, above=180.0, clear_margin=10.0),
    _phys("battery_low", "battery", "info", 0.0, 0.0, below=20.0, clear_margin=5.0),
)
TECHNICAL_KINDS: Final[dict[str, int]] = {"probe_off": fl.QUALITY_BAD, "flatline": fl.FLATLINE}


ADVISORY_KINDS: Final[dict[str, int]] = {
    "baseline_rise": fl.CUSUM_HIGH,
    "baseline_fall": fl.CUSUM_LOW,
}
ADVISORY_AFTER_S: Final = 900.0
"""A deviation from the personal baseline must last 15 minutes to become an advisory."""


def advisory_rules(metrics: Iterable[str]) -> tuple[AlertRule, ...]:
    """Deviation advisories from the personal baseline for every metric whose preset runs the
    two-sided CUSUM; raised after 15 minutes of deviation, cleared after 15 without."""
    return tuple(
        AlertRule(
            kind, metric, "advisory", "info", ADVISORY_AFTER_S, ADVISORY_AFTER_S, flag_mask=mask
        )
        for metric in metrics
        for kind, mask in ADVISORY_KINDS.items()
    )


def technical_rules(metrics: Iterable[str], raise_after_s: float = 10.0) -> tuple[AlertRule, ...]:
    """Probe-off and flatline rules for every metric the bank filters."""
    return tuple(
        AlertRule(kind, metric, "technical", "warning", raise_after_s, 5.0, flag_mask=mask)
        for metric in metrics
        for kind, mask in TECHNICAL_KINDS.items()
    )


@dataclass(slots=True)
class _State:
    # While an alert is pending: time held inside the condition (net of debits) and the last
    # usable reading's time; None when nothing is pending.
    held_ns: int | None = None
    last_ns: int = 0
    clearing_since_ns: int | None = None
    alert_id: str | None = None
    last_value: float = 0.0


@dataclass(slots=True)
class _Silence:
    last_ns: int
    limit_ns: int
    alert_id: str | None = None


def alert_id(patient: str, device: str, kind: str, raised_ns: int) -> str:
    """Stable across raise and clear, unique per episode, and derived only from pseudonyms."""
    digest = hashlib.sha256(f"{patient}|{device}|{kind}|{raised_ns}".encode()).hexdigest()
    return digest[:20]


@dataclass(slots=True)
class AlertEngine:
    """Feeds readings in time order per series; returns the alert events each one causes."""

    rules: Sequence[AlertRule] = DEFAULT_RULES
    silence_factor: float = 5.0
    _by_metric: dict[str, list[AlertRule]] = field(default_factory=dict)
    _state: dict[tuple[str, str, str], _State] = field(default_factory=dict)
    _silence: dict[tuple[str, str], _Silence] = field(default_factory=dict)
    # Open technical alerts per (patient, device): checked for every physiological reading.
    _technical: dict[tuple[str, str], int] = field(default_factory=dict)
    raised_total: int = 0

    def __post_init__(self) -> None:
        for rule in self.rules:
            self._by_metric.setdefault(rule.metric, []).append(rule)

    def open_alert_keys(self) -> list[tuple[str, str, str]]:
        """(patient, device, kind) of every alert raised and not yet cleared."""
        raised = [key for key, state in self._state.items() if state.alert_id is not None]
        raised += [
            (patient, device, "device_silent")
            for (patient, device), silence in self._silence.items()
            if silence.alert_id is not None
        ]
        return sorted(raised)

    def _technical_open(self, patient: str, device: str) -> bool:
        if self._technical.get((patient, device)):
            return True
        silence = self._silence.get((patient, device))
        return silence is not None and silence.alert_id is not None

    def _count_technical(self, rule: AlertRule, key: tuple[str, str], change: int) -> None:
        if rule.category == "technical":
            self._technical[key] = self._technical.get(key, 0) + change

    def _event(
        self, rule: AlertRule, state: _State, key: tuple[str, str], *, ts_ns: int, raised: bool
    ) -> AlertEvent:
        patient, device = key
        event = AlertEvent(
            alert_id=state.alert_id or "",
            patient_token=patient,
            device_token=device,
            metric_code=by_name(rule.metric).code,
            kind=rule.kind,
            severity=rule.severity,
            state="raised" if raised else "cleared",
            ts_ns=ts_ns,
            value=state.last_value,
            detail=f"{rule.category} {rule.kind} on {rule.metric}",
        )
        # Visible on the gateway even when the cloud is not: the journal keeps these lines.
        _LOGGER.warning(
            "alert %s %s %s (%s) patient %s value %g",
            event.alert_id,
            event.state,
            event.kind,
            event.severity,
            patient[:8],
            state.last_value,
        )
        return event

    def observe(self, reading: Reading, flags: int) -> list[AlertEvent]:
        """The alert events this reading (with its filter flags) raises or clears."""
        patient, device = reading.patient_token, reading.device_token
        ts_ns, value = reading.ts_ns, reading.value
        metric = by_code(reading.metric_code).name
        events: list[AlertEvent] = []
        silence = self._silence.get((patient, device))
        if silence is not None:
            silence.last_ns = ts_ns
            if silence.alert_id is not None:
                events.append(
                    self._silence_event(patient, device, silence, ts_ns=ts_ns, raised=False)
                )
        for rule in self._by_metric.get(metric, ()):
            trusted_only = rule.category != "technical"
            if trusted_only and flags & fl.ARTIFACT:
                continue  # an artifact neither raises nor clears anything
            if trusted_only and self._technical_open(patient, device):
                continue
            state_key = (patient, device, rule.kind)
            state = self._state.get(state_key)
            if state is None:  # not setdefault: that builds a _State for every reading
                state = self._state[state_key] = _State()
            state.last_value = value
            event = self._step(
                rule, state, (patient, device), ts_ns=ts_ns, value=value, flags=flags
            )
            if event is not None:
                events.append(event)
        return events

    def _step(
        self,
        rule: AlertRule,
        state: _State,
        key: tuple[str, str],
        *,
        ts_ns: int,
        value: float,
        flags: int,
    ) -> AlertEvent | None:
        if state.alert_id is None:
            if not self._held_long_enough(rule, state, ts_ns=ts_ns, value=value, flags=flags):
                return None
            state.alert_id = alert_id(*key, rule.kind, ts_ns)
            state.held_ns = None
            self.raised_total += 1
            self._count_technical(rule, key, +1)
            return self._event(rule, state, key, ts_ns=ts_ns, raised=True)
        if not rule.cleared(value, flags):
            state.clearing_since_ns = None
            return None
        if state.clearing_since_ns is None:
            state.clearing_since_ns = ts_ns
        if ts_ns - state.clearing_since_ns < rule.clear_after_s * _NS:
            return None
        event = self._event(rule, state, key, ts_ns=ts_ns, raised=False)
        state.alert_id = None
        state.clearing_since_ns = None
        self._count_technical(rule, key, -1)
        return event

    @staticmethod
    def _held_long_enough(
        rule: AlertRule, state: _State, *, ts_ns: int, value: float, flags: int
    ) -> bool:
        """Account one usable reading to a pending alert; True when it is time to raise."""
        inside = rule.condition(value, flags)
        if state.held_ns is None:
            # The delay starts at the first reading inside the condition.
            state.held_ns = 0 if inside else None
        elif inside:
            state.held_ns += ts_ns - state.last_ns
        elif rule.dip_debit is None:
            state.held_ns = None
        else:
            state.held_ns -= int(rule.dip_debit * (ts_ns - state.last_ns))
            if state.held_ns <= 0:
                state.held_ns = None
        state.last_ns = ts_ns
        return inside and state.held_ns is not None and state.held_ns >= rule.delay_ns(flags)

    # --- silent devices: no reading for silence_factor x the expected interval ---------------

    def expect(self, patient: str, device: str, interval_s: float, now_ns: int) -> None:
        """Watch a device that should report every `interval_s`."""
        limit_ns = int(interval_s * self.silence_factor * _NS)
        self._silence.setdefault((patient, device), _Silence(now_ns, limit_ns))

    def release(self, device: str, now_ns: int) -> list[AlertEvent]:
        """Stop watching an unpaired device for silence; an open device_silent alert clears."""
        events = []
        for key in [key for key in self._silence if key[1] == device]:
            silence = self._silence.pop(key)
            if silence.alert_id is not None:
                events.append(self._silence_event(*key, silence, ts_ns=now_ns, raised=False))
        return events

    def _silence_event(
        self, patient: str, device: str, silence: _Silence, *, ts_ns: int, raised: bool
    ) -> AlertEvent:
        if raised:
            silence.alert_id = alert_id(patient, device, "device_silent", ts_ns)
        event = AlertEvent(
            alert_id=silence.alert_id or "",
            patient_token=patient,
            device_token=device,
            metric_code=0,
            kind="device_silent",
            severity="warning",
            state="raised" if raised else "cleared",
            ts_ns=ts_ns,
            value=None,
            detail=f"technical: no reading for over {silence.limit_ns / _NS:g} s",
        )
        _LOGGER.warning(
            "alert %s %s device_silent patient %s", event.alert_id, event.state, patient[:8]
        )
        if not raised:
            silence.alert_id = None
        return event

    def tick(self, now_ns: int) -> list[AlertEvent]:
        """Raise `device_silent` for every watched device that has gone quiet."""
        events = []
        for (patient, device), silence in self._silence.items():
            if silence.alert_id is None and now_ns - silence.last_ns > silence.limit_ns:
                self.raised_total += 1
                events.append(
                    self._silence_event(patient, device, silence, ts_ns=now_ns, raised=True)
                )
        return events

    def open_alerts(self) -> int:
        return sum(1 for s in self._state.values() if s.alert_id) + sum(
            1 for s in self._silence.values() if s.alert_id
        )
