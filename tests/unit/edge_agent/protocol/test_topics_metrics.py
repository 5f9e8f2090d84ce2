"""Topics and the metric catalogue."""

from __future__ import annotations

import pytest

from edge_agent.protocol import (
    CATALOGUE,
    CatalogueError,
    Channel,
    TopicError,
    by_code,
    by_name,
    parse,
    topic,
)
from edge_agent.protocol.topics import uplink_filter


def test_topics_follow_the_contract() -> None:
    assert topic("ward3-bed12", Channel.TELEMETRY) == "bt/v1/gw/ward3-bed12/up/telemetry"
    assert topic("ward3-bed12", Channel.STATUS, "staging/") == "staging/bt/v1/gw/ward3-bed12/status"
    assert uplink_filter() == "bt/v1/gw/+/up/#"


@pytest.mark.parametrize("gateway_id", ["ab", "UPPER", "has space", "x" * 33, "bed/1", "+", "#"])
def test_bad_gateway_ids_are_refused(gateway_id: str) -> None:
    with pytest.raises(TopicError, match="3-32 characters"):
        topic(gateway_id, Channel.TELEMETRY)


def test_parse_round_trips_every_channel() -> None:
    for channel in (Channel.TELEMETRY, Channel.ALERTS, Channel.STATUS):
        parsed = parse(topic("gw-001", channel, "t1/"), "t1/")
        assert (parsed.gateway_id, parsed.channel) == ("gw-001", channel)
    assert parse("bt/v1/gw/gw-001/down/rotate").channel is Channel.DOWN


@pytest.mark.parametrize(
    "bad", ["bt/v1/gw/gw-001", "bt/v2/gw/gw-001/up/telemetry", "bt/v1/gw/gw-001/up/other", "x/y"]
)
def test_parse_refuses_foreign_topics(bad: str) -> None:
    with pytest.raises(TopicError):
        parse(bad)


def test_catalogue_codes_and_names_are_unique_and_ranges_sane() -> None:
    assert len({m.code for m in CATALOGUE}) == len(CATALOGUE)
    assert len({m.name for m in CATALOGUE}) == len(CATALOGUE)
    assert all(m.plausible_min < m.plausible_max for m in CATALOGUE)
    assert by_name("heart_rate").loinc == "8867-4"
    assert by_name("resp_rate").loinc == "9279-1"
    assert by_name("body_temp").ucum == "Cel"
    assert by_code(by_name("spo2").code).name == "spo2"


def test_unknown_metric_lists_known_names() -> None:
    with pytest.raises(CatalogueError, match="heart_rate"):
        by_name("pulse")
    with pytest.raises(CatalogueError):
        by_code(9999)
