"""The seed's security metrics from real counters: refusals by reason, encryption compliance,
anonymised exports and authentication failures (issue #6 item 7, docs/security-report.md).

Two sources, each named in the output: the sink's `sink_security` points in InfluxDB (one
`rejected` point per refused envelope; per written batch and gateway, one `accepted` point with
the envelopes and readings it stored) and `vital` itself; and the audit log (exports, refusals,
failed authentications), whose chain is verified before its counts are trusted.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from cloud_sink.audit import AuditLog, AuditPaths, AuditSummary, VerifyResult
from cloud_sink.influx import InfluxV1, Series
from cloud_sink.pipeline import ACCEPTED_REASON
from cloud_sink.report import time_where
from cloud_sink.twin import iso_utc

_NS_PER_S: Final = 1_000_000_000


@dataclass(slots=True, frozen=True)
class SinkCounts:
    """Sums over the window of what the sink counted and what `vital` holds."""

    rejected_by_reason: Mapping[str, int]
    envelopes_accepted: int
    readings_sealed: int
    """Readings stored from accepted (tag-verified) envelopes, as the sink counted them."""
    readings_stored: int
    """Points in `vital`: every reading InfluxDB holds, however it got there."""

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected_by_reason.values())

    @property
    def readings_unaccounted(self) -> int:
        """Stored readings no accepted envelope accounts for: written around the sink."""
        return max(0, self.readings_stored - self.readings_sealed)


@dataclass(slots=True, frozen=True)
class AuditCounts:
    """The audit log's part: its chain check and its counts in the window."""

    verified: VerifyResult
    summary: AuditSummary


@dataclass(slots=True, frozen=True)
class SecurityReport:
    since_ns: int | None
    until_ns: int
    sink: SinkCounts
    audit: AuditCounts | None
    """None when the sink has no audit log yet (nothing was ever audited)."""


def _sums(series: list[Series]) -> tuple[Counter[str], int, int]:
    rejected: Counter[str] = Counter()
    accepted = readings = 0
    for s in series:
        column = {name: i for i, name in enumerate(s.columns)}
        reason = s.tags.get("reason") or "unknown"
        for row in s.values:
            if reason == ACCEPTED_REASON:
                accepted += int(row[column["accepted"]] or 0)
                readings += int(row[column["readings"]] or 0)
            elif row[column["rejected"]]:
                rejected[reason] += int(row[column["rejected"]])
    return rejected, accepted, readings


def read_sink_counts(influx: InfluxV1, since_ns: int | None, until_ns: int) -> SinkCounts:
    """Two queries: the sink's counters by reason, and the number of stored readings."""
    where = time_where(since_ns, until_ns)
    security = influx.query(
        'SELECT sum("rejected") AS "rejected", sum("accepted") AS "accepted", '  # noqa: S608
        f'sum("readings") AS "readings" FROM "sink_security" WHERE {where} GROUP BY "reason"'
    )
    rejected, accepted, readings = _sums(security)
    stored = 0
    for s in influx.query(f'SELECT count("value") FROM "vital" WHERE {where}'):  # noqa: S608
        stored += sum(int(row[1] or 0) for row in s.values)
    return SinkCounts(dict(sorted(rejected.items())), accepted, readings, stored)


def read_audit_counts(state_dir: Path, since_ns: int | None, until_ns: int) -> AuditCounts | None:
    """The audit log's verification and counts; None when there is no log yet."""
    log = AuditLog(AuditPaths.in_dir(state_dir))
    if not log.paths.log.exists():
        return None
    since = None if since_ns is None else datetime.fromtimestamp(since_ns / _NS_PER_S, UTC)
    # `summary` takes since <= ts < until; one second past now keeps entries of this second.
    until = datetime.fromtimestamp(until_ns / _NS_PER_S + 1, UTC)
    return AuditCounts(log.verify(), log.summary(since, until))


def share_pct(part: int, whole: int) -> float | None:
    return None if whole == 0 else round(100.0 * part / whole, 3)


def compliance_pct(sink: SinkCounts) -> float | None:
    """Share of stored readings that arrived sealed: 100 % unless points reached `vital` that
    no accepted envelope accounts for. The sealed count can exceed the stored one (a gateway
    re-sending readings after a crash: same point identity, stored once), hence the clamp."""
    stored = sink.readings_stored
    return share_pct(stored - sink.readings_unaccounted, stored)


def report_json(report: SecurityReport) -> dict[str, object]:
    """Every figure with the counts it rests on; null where the source holds nothing."""
    sink = report.sink
    received = sink.envelopes_accepted + sink.rejected_total
    document: dict[str, object] = {
        "since": None if report.since_ns is None else iso_utc(report.since_ns),
        "until": iso_utc(report.until_ns),
        "rejections_by_reason": dict(sink.rejected_by_reason),
        "rejections_total": sink.rejected_total,
        "envelopes_accepted": sink.envelopes_accepted,
        "envelopes_received": received,
        "envelope_acceptance_pct": share_pct(sink.envelopes_accepted, received),
        "readings_stored": sink.readings_stored,
        "readings_sealed": sink.readings_sealed,
        "readings_unaccounted": sink.readings_unaccounted,
        "encryption_compliance_pct": compliance_pct(sink),
    }
    audit = report.audit
    if audit is None:
        document |= {
            "audit_log": None,
            "exports_total": None,
            "exports_anonymised": None,
            "anonymised_export_pct": None,
            "auth_failures": None,
            "access_denied": None,
        }
        return document
    summary = audit.summary
    document |= {
        "audit_log": {
            "chain_ok": audit.verified.ok,
            "entries_verified": audit.verified.entries,
            "problem": None if audit.verified.ok else audit.verified.message,
            "entries_in_window": summary.entries,
            "unreadable_lines": summary.unreadable_lines,
        },
        "exports_total": summary.exports_total,
        "exports_anonymised": summary.exports_anonymised,
        "anonymised_export_pct": share_pct(summary.exports_anonymised, summary.exports_total),
        "auth_failures": summary.auth_failures,
        "access_denied": summary.access_denied,
    }
    return document


HOW: Final[Mapping[str, str]] = {
    "rejections_total": "sum of sink_security `rejected` (one point per refused envelope)",
    "envelope_acceptance_pct": "accepted over accepted plus refused envelopes",
    "encryption_compliance_pct": (
        "stored readings (count of vital) that accepted envelopes account for (sum of "
        "sink_security `readings`), over stored readings"
    ),
    "anonymised_export_pct": "audit log: anonymised exports over exports that went ahead",
    "auth_failures": "audit log: auth_failure entries (no token, or one matching no identity)",
    "access_denied": "audit log: access_denied entries (a known identity refused by its role)",
}
"""How each headline figure is computed, printed under the table."""
