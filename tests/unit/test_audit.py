"""The audit log: append-only, hash-chained, keyed; each kind of tampering found, by reason."""

from __future__ import annotations

import hashlib
import itertools
import json
import multiprocessing
import os
import shutil
import stat
import tempfile
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloud_sink.audit import (
    GENESIS_HASH,
    Action,
    AuditError,
    AuditLog,
    AuditPaths,
    DetailValue,
    Outcome,
    iso_ts,
    read_entries,
    summary,
    verify,
)

PATIENT = "0123456789abcdef0123456789abcdef"
T0_NS = 1_741_939_200_000_000_000  # 2025-03-14T08:00:00Z


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _fill(log: AuditLog, count: int) -> None:
    for n in range(count):
        log.append(
            actor=f"dr-{n % 3}",
            role="clinician",
            action="twin_read",
            outcome="ok",
            subject=PATIENT,
            detail={"n": n},
            now_ns=T0_NS + n * 1_000_000_000,
        )


def _lines(paths: AuditPaths) -> list[bytes]:
    return paths.log.read_bytes().splitlines()


def _write_lines(paths: AuditPaths, lines: list[bytes]) -> None:
    paths.log.write_bytes(b"".join(line + b"\n" for line in lines))


def _canonical(document: dict[str, Any]) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode("ascii")


@pytest.fixture
def paths(tmp_path: Path) -> AuditPaths:
    return AuditPaths.in_dir(tmp_path / "state")


@pytest.fixture
def log(paths: AuditPaths) -> AuditLog:
    return AuditLog(paths)


def test_entries_chain_from_zero_and_verify(log: AuditLog, paths: AuditPaths) -> None:
    _fill(log, 5)
    entries, unreadable = read_entries(paths.log)
    assert unreadable == 0
    assert [e.seq for e in entries] == [1, 2, 3, 4, 5]
    assert entries[0].prev == GENESIS_HASH
    assert all(later.prev == earlier.hash for earlier, later in itertools.pairwise(entries))
    assert entries[0].ts == "2025-03-14T08:00:00.000000Z"
    # The hash is SHA-256 over the canonical JSON of every field but hash and mac.
    document = json.loads(_lines(paths)[2])
    body = {k: v for k, v in document.items() if k not in ("hash", "mac")}
    assert hashlib.sha256(_canonical(body)).hexdigest() == document["hash"]
    result = verify(paths.log, paths.key, paths.head)
    assert result.ok, result.message
    assert (result.entries, result.last_seq, result.last_hash) == (5, 5, entries[-1].hash)


def test_files_are_created_0600_whatever_the_umask(log: AuditLog, paths: AuditPaths) -> None:
    old = os.umask(0)
    try:
        _fill(log, 2)
    finally:
        os.umask(old)
    for path in (paths.log, paths.key, paths.head):
        assert _mode(path) == 0o600, path
    assert _mode(paths.log.parent) == 0o700


def test_an_existing_log_with_an_open_mode_is_tightened(log: AuditLog, paths: AuditPaths) -> None:
    _fill(log, 1)
    paths.log.chmod(0o644)
    _fill(log, 1)
    assert _mode(paths.log) == 0o600


def test_the_key_never_appears_in_the_log_or_head(log: AuditLog, paths: AuditPaths) -> None:
    _fill(log, 3)
    key_hex = paths.key.read_text(encoding="ascii").strip()
    assert len(bytes.fromhex(key_hex)) == 32
    assert key_hex not in paths.log.read_text(encoding="ascii")
    assert key_hex not in paths.head.read_text(encoding="ascii")


def test_an_empty_state_dir_verifies_as_empty(paths: AuditPaths) -> None:
    result = verify(paths.log, paths.key, paths.head)
    assert result.ok
    assert result.entries == 0


def test_an_edited_field_is_reported_as_edited(log: AuditLog, paths: AuditPaths) -> None:
    _fill(log, 5)
    lines = _lines(paths)
    document = json.loads(lines[2])
    document["actor"] = "someone-else"
    lines[2] = _canonical(document)
    _write_lines(paths, lines)
    result = verify(paths.log, paths.key, paths.head)
    assert not result.ok
    assert (result.reason, result.first_bad_line, result.first_bad_seq) == ("edited", 3, 3)
    assert result.entries == 2
    assert result.bad_line is not None
    assert "someone-else" in result.bad_line


def test_a_removed_entry_is_reported_as_removed(log: AuditLog, paths: AuditPaths) -> None:
    _fill(log, 5)
    lines = _lines(paths)
    del lines[2]
    _write_lines(paths, lines)
    result = verify(paths.log, paths.key, paths.head)
    assert (result.ok, result.reason, result.first_bad_line, result.first_bad_seq) == (
        False,
        "removed",
        3,
        3,
    )
    assert "entries 3 are missing" in result.message


def test_removing_the_first_entry_is_found_too(log: AuditLog, paths: AuditPaths) -> None:
    _fill(log, 3)
    _write_lines(paths, _lines(paths)[1:])
    result = verify(paths.log, paths.key, paths.head)
    assert (result.reason, result.first_bad_line, result.first_bad_seq) == ("removed", 1, 1)


def test_two_swapped_entries_are_reported_as_reordered(log: AuditLog, paths: AuditPaths) -> None:
    _fill(log, 5)
    lines = _lines(paths)
    lines[1], lines[2] = lines[2], lines[1]
    _write_lines(paths, lines)
    result = verify(paths.log, paths.key, paths.head)
    assert (result.ok, result.reason, result.first_bad_line, result.first_bad_seq) == (
        False,
        "reordered",
        2,
        2,
    )


def test_a_duplicated_entry_is_reported_as_reordered(log: AuditLog, paths: AuditPaths) -> None:
    _fill(log, 4)
    lines = _lines(paths)
    lines.insert(3, lines[1])
    _write_lines(paths, lines)
    result = verify(paths.log, paths.key, paths.head)
    assert (result.reason, result.first_bad_line) == ("reordered", 4)


def test_a_cut_tail_is_reported_as_truncated(log: AuditLog, paths: AuditPaths) -> None:
    _fill(log, 6)
    _write_lines(paths, _lines(paths)[:4])
    result = verify(paths.log, paths.key, paths.head)
    assert (result.ok, result.reason, result.first_bad_seq, result.entries) == (
        False,
        "truncated",
        5,
        4,
    )
    assert "5..6" in result.message


def test_an_emptied_log_is_reported_as_truncated(log: AuditLog, paths: AuditPaths) -> None:
    _fill(log, 2)
    paths.log.write_bytes(b"")
    result = verify(paths.log, paths.key, paths.head)
    assert (result.reason, result.first_bad_seq) == ("truncated", 1)


def test_a_deleted_head_is_reported_as_truncated(log: AuditLog, paths: AuditPaths) -> None:
    _fill(log, 3)
    paths.head.unlink()
    result = verify(paths.log, paths.key, paths.head)
    assert (result.ok, result.reason) == (False, "truncated")


def test_a_chain_recomputed_without_the_key_fails_the_mac(log: AuditLog, paths: AuditPaths) -> None:
    """The attacker edits entry 2 and recomputes every hash after it, and the head; no key."""
    _fill(log, 5)
    documents = [json.loads(line) for line in _lines(paths)]
    documents[1]["subject"] = "fedcba9876543210fedcba9876543210"
    prev = documents[0]["hash"]
    for document in documents[1:]:
        document["prev"] = prev
        body = {k: v for k, v in document.items() if k not in ("hash", "mac")}
        document["hash"] = prev = hashlib.sha256(_canonical(body)).hexdigest()
    _write_lines(paths, [_canonical(d) for d in documents])
    head = json.loads(paths.head.read_bytes())
    head["hash"] = prev
    paths.head.write_bytes(_canonical(head) + b"\n")
    result = verify(paths.log, paths.key, paths.head)
    assert (result.ok, result.reason, result.first_bad_line, result.first_bad_seq) == (
        False,
        "bad_mac",
        2,
        2,
    )


def test_a_head_forged_without_the_key_fails_the_mac(log: AuditLog, paths: AuditPaths) -> None:
    """Cut the tail and point the head at the new end: the head's MAC gives it away."""
    _fill(log, 5)
    lines = _lines(paths)[:3]
    _write_lines(paths, lines)
    head = json.loads(paths.head.read_bytes())
    head["seq"], head["hash"] = 3, json.loads(lines[-1])["hash"]
    paths.head.write_bytes(_canonical(head) + b"\n")
    result = verify(paths.log, paths.key, paths.head)
    assert (result.ok, result.reason) == (False, "bad_mac")


def test_a_head_put_back_from_an_old_copy_is_reported(log: AuditLog, paths: AuditPaths) -> None:
    _fill(log, 2)
    old_head = paths.head.read_bytes()
    _fill(log, 3)
    paths.head.write_bytes(old_head)
    result = verify(paths.log, paths.key, paths.head)
    assert (result.ok, result.reason) == (False, "malformed")
    assert "older copy" in result.message


def test_a_head_one_entry_behind_is_an_interrupted_append(log: AuditLog, paths: AuditPaths) -> None:
    """A crash between the log's fsync and the head's rename: intact, with a note."""
    _fill(log, 2)
    old_head = paths.head.read_bytes()
    _fill(log, 1)
    paths.head.write_bytes(old_head)
    result = verify(paths.log, paths.key, paths.head)
    assert result.ok
    assert "one entry behind" in result.note
    _fill(log, 1)  # the next append brings the head up to date
    after = verify(paths.log, paths.key, paths.head)
    assert (after.ok, after.note, after.entries) == (True, "", 4)
    assert json.loads(paths.head.read_bytes())["seq"] == 4


def test_another_key_fails_every_mac(log: AuditLog, paths: AuditPaths) -> None:
    _fill(log, 2)
    paths.key.write_text(os.urandom(32).hex() + "\n", encoding="ascii")
    result = verify(paths.log, paths.key, paths.head)
    assert (result.reason, result.first_bad_line) == ("bad_mac", 1)


def test_hand_formatted_json_is_malformed(log: AuditLog, paths: AuditPaths) -> None:
    """Same content, other spelling: only the canonical form the sink writes is accepted."""
    _fill(log, 3)
    lines = _lines(paths)
    lines[1] = json.dumps(json.loads(lines[1]), indent=None).encode("ascii")
    _write_lines(paths, lines)
    result = verify(paths.log, paths.key, paths.head)
    assert (result.reason, result.first_bad_line) == ("malformed", 2)


def test_appending_after_a_cut_is_refused_so_the_cut_stays_visible(
    log: AuditLog, paths: AuditPaths
) -> None:
    _fill(log, 4)
    _write_lines(paths, _lines(paths)[:2])
    with pytest.raises(AuditError, match="head records seq 4"):
        _fill(log, 1)
    assert verify(paths.log, paths.key, paths.head).reason == "truncated"


def test_appending_without_the_head_is_refused(log: AuditLog, paths: AuditPaths) -> None:
    _fill(log, 2)
    paths.head.unlink()
    with pytest.raises(AuditError, match="head file is missing"):
        _fill(log, 1)


def test_a_lost_key_is_never_silently_replaced(log: AuditLog, paths: AuditPaths) -> None:
    _fill(log, 2)
    paths.key.unlink()
    with pytest.raises(AuditError, match="restore it from backup"):
        _fill(log, 1)
    with pytest.raises(AuditError, match="key is missing"):
        verify(paths.log, paths.key, paths.head)
    assert not paths.key.exists()


def test_a_key_readable_by_others_is_refused(log: AuditLog, paths: AuditPaths) -> None:
    _fill(log, 1)
    paths.key.chmod(0o644)
    with pytest.raises(AuditError, match="chmod 600"):
        _fill(log, 1)


def test_a_torn_last_line_stops_appends_until_repaired(log: AuditLog, paths: AuditPaths) -> None:
    _fill(log, 3)
    with paths.log.open("ab") as handle:
        handle.write(b'{"action":"twin_re')  # power lost in the middle of an append
    result = verify(paths.log, paths.key, paths.head)
    assert (result.reason, result.first_bad_line, result.first_bad_seq) == ("malformed", 4, 4)
    with pytest.raises(AuditError, match="incomplete"):
        _fill(log, 1)
    entry = log.repair(actor="boss", role="admin")
    assert (entry.seq, entry.action, entry.actor) == (4, "audit_repair", "boss")
    assert entry.detail["discarded_bytes"] == len(b'{"action":"twin_re')
    assert verify(paths.log, paths.key, paths.head).ok
    _fill(log, 1)
    assert verify(paths.log, paths.key, paths.head).entries == 5


def test_repair_refuses_to_cut_anything_but_a_torn_tail(log: AuditLog, paths: AuditPaths) -> None:
    _fill(log, 3)
    with pytest.raises(AuditError, match="nothing to repair"):
        log.repair(actor="boss", role="admin")
    lines = _lines(paths)
    lines[0] = lines[0].replace(b"dr-0", b"dr-9")
    paths.log.write_bytes(b"".join(line + b"\n" for line in lines) + b'{"torn')
    with pytest.raises(AuditError, match="line 1 is bad too"):
        log.repair(actor="boss", role="admin")
    assert paths.log.read_bytes().endswith(b'{"torn')


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"detail": {"token": "btt_abc"}}, "secret or a hospital reference"),
        ({"detail": {"patient_ref": "MRN 1234"}}, "secret or a hospital reference"),
        ({"detail": {"password": "x"}}, "secret or a hospital reference"),
        ({"detail": {"note": "caf\u00e9"}}, "printable ASCII"),
        ({"detail": {"note": "a\nb"}}, "printable ASCII"),
        ({"detail": {"nested": {"a": 1}}}, "string, integer, boolean or null"),
        ({"detail": {"ratio": 0.5}}, "string, integer, boolean or null"),
        ({"detail": {"Bad-Key": 1}}, "lower_snake_case"),
        ({"subject": "Jane Doe"}, "subject must be"),
        ({"actor": ""}, "actor must match"),
        ({"action": "delete_everything"}, "action must be one of"),
        ({"outcome": "maybe"}, "outcome must be one of"),
        ({"role": "nurse"}, "role must be one of"),
    ],
)
def test_fields_that_must_not_be_logged_are_refused(
    log: AuditLog, paths: AuditPaths, changes: dict[str, Any], problem: str
) -> None:
    arguments: dict[str, Any] = {
        "actor": "dr-lee",
        "role": "clinician",
        "action": "twin_read",
        "outcome": "ok",
        "subject": PATIENT,
        "detail": {},
    }
    arguments.update(changes)
    with pytest.raises(AuditError, match=problem):
        log.append(**arguments)
    assert not paths.log.exists()


def _append_many(state_dir: str, worker: int, count: int) -> None:
    log = AuditLog(AuditPaths.in_dir(Path(state_dir)))
    for n in range(count):
        log.append(
            actor=f"worker-{worker}",
            role="system",
            action="binding",
            outcome="ok",
            detail={"n": n},
        )


def test_concurrent_appends_from_several_processes_form_one_chain(paths: AuditPaths) -> None:
    workers, each = 4, 15
    context = multiprocessing.get_context("fork")
    processes = [
        context.Process(target=_append_many, args=(str(paths.log.parent), worker, each))
        for worker in range(workers)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join()
    assert [process.exitcode for process in processes] == [0] * workers
    result = verify(paths.log, paths.key, paths.head)
    assert result.ok, result.message
    assert result.entries == workers * each
    entries, _ = read_entries(paths.log)
    assert Counter(entry.actor for entry in entries) == {
        f"worker-{worker}": each for worker in range(workers)
    }
    # Each worker's own entries keep their order inside the one chain.
    for worker in range(workers):
        mine = [e.detail["n"] for e in entries if e.actor == f"worker-{worker}"]
        assert mine == list(range(each))


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> AuditPaths:
    """A small intact log, built once for the property tests (which only read copies)."""
    paths = AuditPaths.in_dir(tmp_path_factory.mktemp("reference"))
    log = AuditLog(paths)
    _fill(log, 3)
    log.append(
        actor="ana",
        role="researcher",
        action="export",
        outcome="ok",
        detail={"anonymised": True, "resources": 12},
        now_ns=T0_NS + 10**12,
    )
    log.append(actor="unknown", role="none", action="auth_failure", outcome="denied")
    return paths


def _tampered_copy(reference: AuditPaths, folder: Path, which: str, data: bytes) -> AuditPaths:
    copy = AuditPaths.in_dir(folder)
    for name in ("log", "key", "head"):
        shutil.copy2(getattr(reference, name), getattr(copy, name))
    getattr(copy, which).write_bytes(data)
    return copy


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), which=st.sampled_from(["log", "head"]))
def test_any_changed_byte_is_detected(
    reference: AuditPaths, data: st.DataObject, which: str
) -> None:
    original = getattr(reference, which).read_bytes()
    position = data.draw(st.integers(0, len(original) - 1), label="position")
    byte = data.draw(
        st.integers(0, 255).filter(lambda value: value != original[position]), label="byte"
    )
    changed = original[:position] + bytes([byte]) + original[position + 1 :]
    with tempfile.TemporaryDirectory() as folder:
        copy = _tampered_copy(reference, Path(folder), which, changed)
        result = verify(copy.log, copy.key, copy.head)
    assert not result.ok
    assert result.reason in ("edited", "removed", "reordered", "truncated", "malformed", "bad_mac")
    assert result.message


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_any_removed_line_is_detected(reference: AuditPaths, data: st.DataObject) -> None:
    lines = reference.log.read_bytes().splitlines(keepends=True)
    index = data.draw(st.integers(0, len(lines) - 1))
    with tempfile.TemporaryDirectory() as folder:
        copy = _tampered_copy(
            reference, Path(folder), "log", b"".join(lines[:index] + lines[index + 1 :])
        )
        result = verify(copy.log, copy.key, copy.head)
    expected = "truncated" if index == len(lines) - 1 else "removed"
    assert (result.ok, result.reason) == (False, expected)


def test_summary_counts_actions_outcomes_and_exports(log: AuditLog, paths: AuditPaths) -> None:
    hour_ns = 3600 * 10**9
    rows: list[tuple[Action, Outcome, dict[str, DetailValue]]] = [
        ("twin_read", "ok", {}),
        ("export", "ok", {"anonymised": False}),
        ("export", "ok", {"anonymised": True}),
        ("export", "ok", {"anonymised": True}),
        ("export", "failed", {"anonymised": True}),
        ("access_denied", "denied", {"requested": "export_identified"}),
        ("auth_failure", "denied", {"reason": "unknown_token"}),
        ("auth_failure", "denied", {"reason": "no_token"}),
    ]
    for n, (action, outcome, detail) in enumerate(rows):
        log.append(
            actor="x",
            role="system",
            action=action,
            outcome=outcome,
            detail=detail,
            now_ns=T0_NS + n * hour_ns,
        )
    total = summary(paths.log)
    assert total.entries == 8
    assert total.by_action == {"twin_read": 1, "export": 4, "access_denied": 1, "auth_failure": 2}
    assert total.by_outcome == {"ok": 4, "failed": 1, "denied": 3}
    assert (total.exports_total, total.exports_anonymised) == (3, 2)
    assert (total.access_denied, total.auth_failures, total.unreadable_lines) == (1, 2, 0)
    assert total.first_ts == "2025-03-14T08:00:00.000000Z"
    window = summary(
        paths.log,
        since=datetime(2025, 3, 14, 10, tzinfo=UTC),
        until=datetime(2025, 3, 14, 14, tzinfo=UTC),
    )
    assert window.entries == 4  # hours 2, 3, 4 and 5
    assert (window.exports_total, window.exports_anonymised, window.access_denied) == (2, 2, 1)
    with pytest.raises(AuditError, match="UTC offset"):
        summary(paths.log, since=datetime(2025, 3, 14))  # noqa: DTZ001 -- the mistake under test


def test_reading_skips_unreadable_lines_and_counts_them(log: AuditLog, paths: AuditPaths) -> None:
    _fill(log, 2)
    with paths.log.open("ab") as handle:
        handle.write(b"not json\n")
    entries, unreadable = read_entries(paths.log)
    assert (len(entries), unreadable) == (2, 1)
    assert summary(paths.log).unreadable_lines == 1


def test_iso_ts_is_utc_with_microseconds() -> None:
    assert iso_ts(T0_NS + 123_456_789) == "2025-03-14T08:00:00.123456Z"
    assert iso_ts(0) == "1970-01-01T00:00:00.000000Z"
