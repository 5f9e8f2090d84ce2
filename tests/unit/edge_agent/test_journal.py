"""The intake journal: what a killed agent had accepted is replayed, encrypted at rest."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import msgpack
import pytest

import edge_agent.journal as journal_module
from edge_agent.journal import IntakeJournal, JournalError
from edge_agent.sources import Reading

SECRET = bytes(range(32))
GATEWAY = "ward3-bed12"
PATIENT = "ab" * 16


def reading(n: int) -> Reading:
    return Reading(
        "cd" * 16, PATIENT, "hr-strap", 1, 1_767_225_600_000_000_000 + n, 60.0 + n, n % 3
    )


# A child that journals 1000 readings and kills itself before closing anything.
CHILD = f"""
import os, signal, sys
from pathlib import Path
sys.path.insert(0, {str(Path.cwd())!r})
from edge_agent.journal import IntakeJournal
from tests.unit.edge_agent.test_journal import reading, SECRET, GATEWAY
journal, _ = IntakeJournal.open(Path(sys.argv[1]), SECRET, GATEWAY, 0)
for n in range(1000):
    journal.append(reading(n))
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_readings_after_the_durable_mark_survive_a_sigkill(tmp_path: Path) -> None:
    child = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path)], check=False)
    assert child.returncode == -signal.SIGKILL
    journal, recovered = IntakeJournal.open(tmp_path, SECRET, GATEWAY, durable_seq=400)
    assert recovered == [reading(n) for n in range(400, 1000)]
    # Journaled again first thing in this run, so they take this run's first numbers.
    assert journal.run_first_seq == 1001
    assert journal.next_seq == 1601
    journal.close(durable_seq=1600)
    assert list(tmp_path.iterdir()) == []


def test_a_clean_close_after_everything_is_spooled_leaves_nothing_to_replay(
    tmp_path: Path,
) -> None:
    journal, _ = IntakeJournal.open(tmp_path, SECRET, GATEWAY, 0)
    seqs = [journal.append(reading(n)) for n in range(10)]
    assert seqs == list(range(1, 11))
    journal.close(durable_seq=10)
    again, recovered = IntakeJournal.open(tmp_path, SECRET, GATEWAY, durable_seq=10)
    assert recovered == []
    assert again.run_first_seq == 11
    again.close(durable_seq=10)


def test_nothing_rests_in_clear_and_each_segment_has_its_own_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(journal_module, "ROTATE_BYTES", 400)
    journal, _ = IntakeJournal.open(tmp_path, SECRET, GATEWAY, 0)
    for n in range(20):
        journal.append(reading(n))
    files = sorted(tmp_path.iterdir())
    assert len(files) > 2
    salts = {path.read_bytes()[4:20] for path in files}
    assert len(salts) == len(files)
    for path in files:
        data = path.read_bytes()
        assert PATIENT.encode() not in data
        assert b"hr-strap" not in data
        assert path.stat().st_mode & 0o777 == 0o600
    # A segment is deleted once all its readings are spooled, never before.
    journal.release(durable_seq=1)
    assert len(list(tmp_path.iterdir())) == len(files)
    journal.release(durable_seq=19)
    assert len(list(tmp_path.iterdir())) < len(files)
    journal.close(durable_seq=0)
    _, recovered = IntakeJournal.open(tmp_path, SECRET, GATEWAY, durable_seq=19)
    assert recovered == [reading(19)]


def test_a_torn_last_record_is_skipped_and_counted(tmp_path: Path) -> None:
    journal, _ = IntakeJournal.open(tmp_path, SECRET, GATEWAY, 0)
    for n in range(5):
        journal.append(reading(n))
    journal.close(durable_seq=0)
    (segment,) = tmp_path.iterdir()
    segment.write_bytes(segment.read_bytes()[:-7])
    again, recovered = IntakeJournal.open(tmp_path, SECRET, GATEWAY, 0)
    assert recovered == [reading(n) for n in range(4)]
    assert again.torn_records == 1
    again.close(durable_seq=again.next_seq - 1)


def test_another_gateways_secret_reads_nothing(tmp_path: Path) -> None:
    journal, _ = IntakeJournal.open(tmp_path, SECRET, GATEWAY, 0)
    journal.append(reading(1))
    journal.close(durable_seq=0)
    other, recovered = IntakeJournal.open(tmp_path, bytes(32), GATEWAY, 0)
    assert recovered == []
    assert other.torn_records == 1
    other.close(durable_seq=0)


def test_a_foreign_file_is_refused_by_name(tmp_path: Path) -> None:
    (tmp_path / f"intake-{1:020d}.jnl").write_bytes(b"NOPE" + bytes(40))
    with pytest.raises(JournalError, match="bad magic"):
        IntakeJournal.open(tmp_path, SECRET, GATEWAY, 0)


def test_a_failed_write_keeps_the_numbering_and_resumes_in_a_new_segment(
    tmp_path: Path,
) -> None:
    journal, _ = IntakeJournal.open(tmp_path, SECRET, GATEWAY, 0)
    assert journal.append(reading(0)) == 1
    os.close(journal._fd)
    with pytest.raises(JournalError, match="write failed"):
        journal.append(reading(1))
    # On a real ENOSPC or EIO the descriptor stays valid; give the retire one to close.
    journal._fd = os.open(os.devnull, os.O_RDONLY)
    assert journal.append(reading(2)) == 3
    journal.close(durable_seq=0)
    _, recovered = IntakeJournal.open(tmp_path, SECRET, GATEWAY, 0)
    assert recovered == [reading(0), reading(2)]


def test_a_record_is_the_msgpack_array_of_the_documented_fields() -> None:
    # The journal keeps one Packer rather than calling packb per reading: the same bytes.
    expected = msgpack.packb(
        ["cd" * 16, PATIENT, "hr-strap", 1, 1_767_225_600_000_000_007, 67.0, 1],
        use_bin_type=True,
    )
    packer = msgpack.Packer(use_bin_type=True)
    assert journal_module._encode(reading(7), packer) == expected
    assert journal_module._encode(reading(7), packer) == expected  # a kept Packer starts afresh
    assert journal_module._encode(reading(7)) == expected
