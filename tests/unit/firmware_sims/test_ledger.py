"""The ground-truth ledger: device-stamped readings by identity, receipt-stamped ones in order."""

from __future__ import annotations

from pathlib import Path

from firmware_sims.ledger import Identity, Ledger, LedgerEntry, read_ledger, reconcile

P, D = "p" * 32, "d" * 32
MS = 1_000_000


def _gateway(ts_ns: int, value: float, metric: str = "heart_rate") -> LedgerEntry:
    return LedgerEntry(P, metric, D, ts_ns, value, device_clock=False, device_kind="hr-strap")


def _stored(*rows: tuple[str, int, float]) -> dict[Identity, float]:
    return {(P, metric, D, ts_ns): value for metric, ts_ns, value in rows}


def test_device_stamped_readings_match_by_identity() -> None:
    entries = [LedgerEntry(P, "body_temp", D, 1000 * MS, 36.8)]
    assert reconcile(entries, _stored(("body_temp", 1000 * MS, 36.8))).exact
    moved = reconcile(entries, _stored(("body_temp", 1001 * MS, 36.8)))
    assert (moved.missing, moved.extra) == (1, 1)
    wrong = reconcile(entries, _stored(("body_temp", 1000 * MS, 36.9)))
    assert wrong.value_mismatches == 1
    # A record sent again is one reading; two values under one identity are a conflict.
    resent = reconcile(entries * 2, _stored(("body_temp", 1000 * MS, 36.8)))
    assert resent.exact
    assert resent.generated == resent.stored == 1
    conflicting = [*entries, LedgerEntry(P, "body_temp", D, 1000 * MS, 37.0)]
    assert reconcile(conflicting, _stored(("body_temp", 1000 * MS, 36.8))).duplicate_identities == 1


def test_receipt_stamped_readings_pair_in_order_within_the_window() -> None:
    entries = [_gateway(1000 * MS, 70.0), _gateway(2000 * MS, 71.0), _gateway(3000 * MS, 72.0)]
    received = _stored(
        ("heart_rate", 1000 * MS + 3, 70.0),
        ("heart_rate", 2000 * MS + 9, 71.0),
        ("heart_rate", 3001 * MS, 72.0),
    )
    result = reconcile(entries, received)
    assert result.exact
    assert result.receipt_stamped == 3


def test_receipt_stamped_losses_doubles_and_changed_values_are_counted() -> None:
    entries = [_gateway(1000 * MS, 70.0), _gateway(2000 * MS, 71.0), _gateway(3000 * MS, 72.0)]
    lost_middle = _stored(("heart_rate", 1001 * MS, 70.0), ("heart_rate", 3001 * MS, 72.0))
    assert reconcile(entries, lost_middle).missing == 1
    doubled = _stored(
        ("heart_rate", 1001 * MS, 70.0),
        ("heart_rate", 1002 * MS, 70.0),
        ("heart_rate", 2001 * MS, 71.0),
        ("heart_rate", 3001 * MS, 72.0),
    )
    result = reconcile(entries, doubled)
    assert result.extra == 1
    assert not result.exact
    changed = _stored(
        ("heart_rate", 1001 * MS, 70.0),
        ("heart_rate", 2001 * MS, 75.0),
        ("heart_rate", 3001 * MS, 72.0),
    )
    assert reconcile(entries, changed).value_mismatches == 1


def test_a_reading_stored_before_it_was_sent_or_long_after_is_not_a_match() -> None:
    entries = [_gateway(1000 * MS, 70.0)]
    early = reconcile(entries, _stored(("heart_rate", 999 * MS, 70.0)))
    assert (early.missing, early.extra) == (1, 1)
    late = reconcile(entries, _stored(("heart_rate", 5000 * MS, 70.0)), receipt_window_ns=2000 * MS)
    assert (late.missing, late.extra) == (1, 1)


def test_ledger_lines_round_trip_and_a_torn_last_line_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    written = [LedgerEntry(P, "spo2", D, 5, 97.0, True, "pulse-oximeter"), _gateway(6, 70.0)]
    with Ledger(path) as ledger:
        for entry in written:
            ledger.record(entry)
    with path.open("a", encoding="utf-8") as handle:
        handle.write('["torn')
    assert read_ledger(path) == written
