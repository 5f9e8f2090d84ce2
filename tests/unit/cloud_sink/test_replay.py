"""Anti-replay windows: once per sequence number, durable, in any order within the window."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloud_sink.replay import WINDOW, ReplayGuard, ReplayStateError


def test_each_number_is_accepted_once_and_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "replay.json"
    guard = ReplayGuard(path)
    for seq in (5, 3, 9):
        assert not guard.seen("gw-1", 1, seq)
        guard.accept("gw-1", 1, seq)
    assert guard.seen("gw-1", 1, 3)  # pending marks count before the commit too
    guard.commit()
    restarted = ReplayGuard(path)
    assert [restarted.seen("gw-1", 1, s) for s in (3, 4, 5, 9, 10)] == [
        True,
        False,
        True,
        True,
        False,
    ]
    assert not restarted.seen("gw-1", 2, 5)  # another epoch is another key
    assert not restarted.seen("gw-2", 1, 5)
    assert (path.stat().st_mode & 0o777) == 0o600


def test_uncommitted_marks_are_forgotten_by_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "replay.json"
    guard = ReplayGuard(path)
    guard.accept("gw-1", 1, 7)
    # No commit: the write never happened, so the redelivery must be let through.
    assert not ReplayGuard(path).seen("gw-1", 1, 7)


def test_numbers_older_than_the_window_are_refused(tmp_path: Path) -> None:
    guard = ReplayGuard(None)
    guard.accept("gw-1", 1, 10 * WINDOW)
    guard.commit()
    assert guard.seen("gw-1", 1, 10 * WINDOW - WINDOW)
    assert not guard.seen("gw-1", 1, 10 * WINDOW - WINDOW + 1)
    guard.accept("gw-1", 1, 2**64 - 1)  # a huge jump must not build a huge bitmap
    guard.commit()
    assert guard.seen("gw-1", 1, 2**64 - 1)


def test_a_corrupt_state_file_stops_the_sink(tmp_path: Path) -> None:
    path = tmp_path / "replay.json"
    path.write_text("{torn")
    with pytest.raises(ReplayStateError, match="unreadable"):
        ReplayGuard(path)


@settings(max_examples=200, deadline=None)
@given(seqs=st.lists(st.integers(0, 3 * WINDOW), max_size=60), data=st.data())
def test_no_number_is_ever_accepted_twice(seqs: list[int], data: st.DataObject) -> None:
    guard, accepted = ReplayGuard(None), set[int]()
    for seq in seqs:
        if not guard.seen("gw", 1, seq):
            assert seq not in accepted
            guard.accept("gw", 1, seq)
            accepted.add(seq)
        if data.draw(st.booleans()):
            guard.commit()
    guard.commit()
    highest = max(accepted, default=0)
    # Everything accepted and still inside the window is remembered after the commit.
    assert all(guard.seen("gw", 1, seq) for seq in accepted if seq > highest - WINDOW)
