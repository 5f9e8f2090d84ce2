"""Bedside monitor lines: the agent's parser against hand-computed vectors; stream rules."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Final

import pytest

from edge_agent.devices.monitor_lines import (
    MAX_SENTENCE_BYTES,
    LineDecoder,
    LineFault,
    MonitorLineError,
    VitalsSentence,
    checksum,
    parse_sentence,
)
from firmware_sims.vectors import SERIAL_DIR

VECTORS: Final[dict[str, Any]] = json.loads((SERIAL_DIR / "monitor_lines.json").read_text())
GOOD: Final = [v["line"].encode("ascii") for v in VECTORS["sentences"]]


def fields_of(sentence: VitalsSentence) -> dict[str, Any]:
    nibp = sentence.nibp
    return {
        "seq": sentence.seq,
        "ts_ns": sentence.ts_ns,
        "heart_rate_bpm": sentence.heart_rate_bpm,
        "resp_rate_per_min": sentence.resp_rate_per_min,
        "spo2_pct": sentence.spo2_pct,
        "nibp_mmhg": None
        if nibp is None
        else [nibp.systolic_mmhg, nibp.diastolic_mmhg, nibp.mean_mmhg],
        "temp_c": sentence.temp_c,
    }


def _sentence(line: str) -> bytes:
    return line.rstrip("\r\n").encode("ascii")


@pytest.mark.parametrize("vector", VECTORS["sentences"], ids=lambda v: v["name"])
def test_vector_sentences_parse_to_their_fields(vector: dict[str, Any]) -> None:
    assert fields_of(parse_sentence(_sentence(vector["line"]))) == vector["fields"]


@pytest.mark.parametrize("vector", VECTORS["sentences"], ids=lambda v: v["name"])
def test_vector_checksums_are_the_xor_between_dollar_and_star(vector: dict[str, Any]) -> None:
    sentence = _sentence(vector["line"])
    body, _, digits = sentence[1:].rpartition(b"*")
    assert checksum(body) == int(digits, 16)


@pytest.mark.parametrize("vector", VECTORS["rejects"], ids=lambda v: v["name"])
def test_vector_rejects_name_the_fault_and_column(vector: dict[str, Any]) -> None:
    with pytest.raises(MonitorLineError) as caught:
        parse_sentence(_sentence(vector["line"]), line_no=7)
    assert caught.value.fault == LineFault(vector["fault"])
    assert caught.value.column == vector["column"]
    assert caught.value.line_no == 7
    assert "line 7" in str(caught.value)


@pytest.mark.parametrize("vector", VECTORS["rejects"], ids=lambda v: v["name"])
def test_stream_counts_a_reject_and_keeps_the_next_line(vector: dict[str, Any]) -> None:
    decoder = LineDecoder()
    out = decoder.feed(vector["line"].encode("ascii") + GOOD[0])
    assert [s.seq for s in out] == [1]
    fault = LineFault(vector["fault"])
    counters = decoder.counters
    assert counters.lines_bad == (0 if fault is LineFault.UNKNOWN_SENTENCE else 1)
    assert counters.unknown_sentences == (1 if fault is LineFault.UNKNOWN_SENTENCE else 0)
    assert decoder.last_error is not None
    assert decoder.last_error.line_no == 1


def test_all_vector_sentences_in_one_stream() -> None:
    decoder = LineDecoder()
    out = decoder.feed(b"".join(GOOD))
    assert [fields_of(s) for s in out] == [v["fields"] for v in VECTORS["sentences"]]
    assert decoder.counters.lines_ok == len(GOOD)
    assert decoder.counters.seq_gaps == 1  # 3 -> 65535


def test_noise_before_the_dollar_on_the_same_line_is_skipped() -> None:
    decoder = LineDecoder()
    out = decoder.feed(b"\x13\x88#$VS,junk" + GOOD[0])
    assert [s.seq for s in out] == [1]
    assert decoder.counters.garbage_bytes == len(b"\x13\x88#$VS,junk")
    assert decoder.counters.lines_bad == 0


def test_a_noise_line_without_dollar_is_malformed_and_blank_lines_are_ignored() -> None:
    decoder = LineDecoder()
    out = decoder.feed(b"\r\n  \r\nNOISE\r\n" + GOOD[1])
    assert [s.seq for s in out] == [2]
    assert decoder.counters.malformed_lines == 1
    assert decoder.last_error is not None
    assert decoder.last_error.line_no == 3


def test_non_ascii_inside_a_sentence_is_malformed_at_its_column() -> None:
    with pytest.raises(MonitorLineError) as caught:
        parse_sentence(b"$VS,16,2026-11-22T18:45:16Z,HR=72\xb0*00")
    assert (caught.value.fault, caught.value.column) == (LineFault.MALFORMED, 33)


def test_an_overlong_line_is_counted_once_and_memory_stays_bounded() -> None:
    decoder = LineDecoder()
    decoder.feed(b"$VS,1,")
    for _ in range(100):
        decoder.feed(b"X" * 100)
    out = decoder.feed(b"*00\r\n" + GOOD[0])
    assert [s.seq for s in out] == [1]
    assert decoder.counters.oversize_lines == 1
    assert decoder.counters.lines_bad == 1


def test_a_sentence_of_exactly_the_cap_is_accepted() -> None:
    head = "VS,9,2026-11-22T18:45:01Z,X="
    body = head + "1" * (MAX_SENTENCE_BYTES - len(head) - 4)
    sentence = f"${body}*{checksum(body.encode()):02X}".encode()
    assert len(sentence) == MAX_SENTENCE_BYTES
    decoder = LineDecoder()
    assert [s.seq for s in decoder.feed(sentence + b"\r\n")] == [9]
    assert [s.seq for s in decoder.feed(b"$" + body.encode() + b"1*00\r\n")] == []
    assert decoder.counters.oversize_lines == 1


def test_reset_drops_a_partial_line() -> None:
    decoder = LineDecoder()
    decoder.feed(GOOD[0][:20])
    decoder.reset()
    out = decoder.feed(GOOD[1])
    assert [s.seq for s in out] == [2]
    assert decoder.counters.lines_bad == 0


def test_sequence_wrap_is_not_a_gap() -> None:
    decoder = LineDecoder()
    decoder.feed(GOOD[3])  # seq 65535
    decoder.feed(b"$VS,0,2026-11-22T18:45:05Z*30\r\n")
    assert decoder.counters.lines_ok == 2
    assert decoder.counters.seq_gaps == 0


def test_every_complete_line_in_the_normative_doc_is_a_checked_vector() -> None:
    doc = (Path(__file__).resolve().parents[4] / "docs/serial-formats.md").read_text()
    shown = [
        line for line in re.findall(r"`(\$VS,[^`]*\*[0-9A-Fa-f]{2})`", doc) if "..." not in line
    ]
    known = {_sentence(v["line"]).decode() for v in VECTORS["sentences"] + VECTORS["rejects"]}
    assert len(shown) >= 3
    assert set(shown) <= known
