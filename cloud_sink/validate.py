"""Validates an opened frame against the catalogue and the routing, and turns it into points."""

from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Final

from cloud_sink.lineproto import encode_line, vital_line, vital_lines
from edge_agent.protocol import CATALOGUE, DeviceStatus, Frame, GatewayHealth

MAX_FUTURE_SKEW_NS: Final = 300 * 1_000_000_000
# Nothing the product ingests predates its first release; older stamps are clock faults.
MIN_TS_NS: Final = 1_577_836_800 * 1_000_000_000  # 2020-01-01T00:00:00Z
_METRIC_NAMES: Final = {metric.code: metric.name for metric in CATALOGUE}
_KNOWN_CODES: Final = frozenset(_METRIC_NAMES)


@dataclass(slots=True)
class Points:
    """What one frame becomes: lines to write, and readings refused with a reason each."""

    lines: list[str] = field(default_factory=list)
    vitals: int = 0
    refused: Counter[str] = field(default_factory=Counter)


def frame_points(frame: Frame, now_ns: int | None = None) -> Points:
    """Line-protocol points for every valid reading, alert and device status of a frame."""
    now_ns = time.time_ns() if now_ns is None else now_ns
    latest_ns = now_ns + MAX_FUTURE_SKEW_NS
    out = Points()
    for block in frame.blocks:
        codes = block.metric_codes.tolist()
        stamps = block.ts_ns.tolist()
        values = block.values.tolist()
        quality = block.quality.tolist()
        flags = block.flags.tolist()
        if not codes:
            continue
        if (
            _KNOWN_CODES.issuperset(codes)
            and math.isfinite(sum(values))  # non-finite if any value is (or the sum overflows)
            and min(stamps) >= MIN_TS_NS
            and max(stamps) <= latest_ns
        ):
            # The usual block: every reading is valid, so the whole block is encoded at once.
            metrics = list(map(_METRIC_NAMES.__getitem__, codes))
            out.lines += vital_lines(
                block.patient_token,
                block.device_token,
                metrics=metrics,
                values=values,
                quality=quality,
                flags=flags,
                stamps_ns=stamps,
            )
            out.vitals += len(codes)
            continue
        for code, ts_ns, value, q, f in zip(codes, stamps, values, quality, flags, strict=True):
            metric = _METRIC_NAMES.get(code)
            if metric is None:
                out.refused["unknown_metric"] += 1
            elif not math.isfinite(value):
                out.refused["not_finite"] += 1
            elif not MIN_TS_NS <= ts_ns <= latest_ns:
                out.refused["timestamp_out_of_range"] += 1
            else:
                out.lines.append(
                    vital_line(
                        block.patient_token,
                        metric,
                        block.device_token,
                        value=value,
                        quality=q,
                        flags=f,
                        ts_ns=ts_ns,
                    )
                )
                out.vitals += 1
    for alert in frame.alerts:
        alert_fields: dict[str, float | int | str] = {
            "id": alert.alert_id,
            "detail": alert.detail,
            "source": "edge",
            "state": alert.state,
            "metric": _METRIC_NAMES.get(alert.metric_code, str(alert.metric_code)),
        }
        if alert.value is not None:
            alert_fields["value"] = alert.value
        out.lines.append(
            encode_line(
                "alert",
                {"patient": alert.patient_token, "kind": alert.kind, "severity": alert.severity},
                alert_fields,
                alert.ts_ns,
            )
        )
    out.lines.extend(_status_line(frame.gateway_id, status) for status in frame.statuses)
    if frame.gateway is not None:
        out.lines.append(_gateway_line(frame.gateway_id, frame.gateway))
    # Bindings are not points: the pipeline stores them in the identity registry.
    return out


def _gateway_line(gateway_id: str, health: GatewayHealth) -> str:
    """A `gateway_health` point (DESIGN §4); unknown figures are left out, never written as 0."""
    fields: dict[str, float | int | str | bool] = {
        "uptime_s": health.uptime_s,
        "spool_frames": health.spool_frames,
        "spool_bytes": health.spool_bytes,
        "dropped_total": health.dropped_total,
        "evicted_frames": health.evicted_frames,
        "connections_total": health.connections_total,
    }
    optional = {
        "oldest_unsent_s": health.oldest_unsent_s,
        "publish_lag_s": health.publish_lag_s,
        "cpu_pct": health.cpu_pct,
        "rss_mb": health.rss_mb,
    }
    fields.update({key: value for key, value in optional.items() if value is not None})
    return encode_line("gateway_health", {"gateway": gateway_id}, fields, health.ts_ns)


def _status_line(gateway_id: str, status: DeviceStatus) -> str:
    """A `device_health` point; unknown figures are left out, never written as 0."""
    health: dict[str, float | int | str | bool] = {
        "link_up": status.link_up,
        "errors_total": status.errors_total,
    }
    optional = {
        "battery_pct": status.battery_pct,
        "rssi_dbm": status.rssi_dbm,
        "interval_s": status.interval_s,
        "error_code": status.error_code,
    }
    health.update({key: value for key, value in optional.items() if value is not None})
    tags = {"device": status.device_token, "gateway": gateway_id, "kind": status.device_kind}
    return encode_line("device_health", tags, health, status.ts_ns)
