"""The sink's identity registry: idempotent bindings, conflicts refused, lookups audited."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import pytest

from cloud_sink.audit import AuditLog, AuditPaths
from cloud_sink.identity import IDENTITY_FILE, IdentityError, IdentityRegistry
from edge_agent.protocol import BindingEvent

P1, P2 = "a" * 32, "b" * 32
D1, D2 = "c" * 32, "d" * 32
REF = "MRN-4711-TEST"
T0 = 1_763_000_000 * 1_000_000_000


def _registry(tmp_path: Path) -> tuple[IdentityRegistry, AuditLog]:
    audit = AuditLog(AuditPaths.in_dir(tmp_path))
    return IdentityRegistry(tmp_path / IDENTITY_FILE, audit), audit


def test_bindings_are_stored_once_and_survive_a_restart(tmp_path: Path) -> None:
    registry, audit = _registry(tmp_path)
    bound = BindingEvent(D1, P1, "bound", T0, REF)
    assert registry.record("ward-1", [bound]).stored == 1
    # A redelivery changes nothing and is not audited again.
    assert registry.record("ward-1", [bound]) == registry.record("ward-1", [bound])
    assert registry.record("ward-1", [bound]).unchanged == 1
    unbound = BindingEvent(D1, P1, "unbound", T0 + 10)
    assert registry.record("ward-1", [unbound]).stored == 1
    assert (tmp_path / IDENTITY_FILE).stat().st_mode & 0o777 == 0o600

    again, _ = _registry(tmp_path)
    assert again.resolve(P1, actor="dr-a", role="clinician") == REF
    assert again.device_patient(D1) == P1
    entries, _ = audit.read()
    assert [(e.action, e.detail.get("event")) for e in entries] == [
        ("binding", "bound"),
        ("binding", "unbound"),
        ("identity_lookup", None),
    ]
    # The log names tokens only, never the reference.
    assert REF not in audit.paths.log.read_text()
    assert audit.verify().ok


def test_a_second_reference_for_one_token_is_refused(tmp_path: Path) -> None:
    registry, audit = _registry(tmp_path)
    registry.record("ward-1", [BindingEvent(D1, P1, "bound", T0, REF)])
    done = registry.record("ward-1", [BindingEvent(D2, P1, "bound", T0 + 1, "MRN-OTHER")])
    assert (done.stored, done.conflicts) == (0, 1)
    # A device token moving to another patient is refused too.
    moved = registry.record("ward-1", [BindingEvent(D1, P2, "bound", T0 + 2, "MRN-9")])
    assert moved.conflicts == 1
    assert registry.resolve(P1, actor="admin", role="admin") == REF
    entries, _ = audit.read()
    assert [e.outcome for e in entries if e.action == "binding"] == ["ok", "failed", "failed"]


def test_lookups_of_unknown_or_malformed_tokens(tmp_path: Path) -> None:
    registry, audit = _registry(tmp_path)
    assert registry.resolve(P2, actor="dr-a", role="clinician") is None
    with pytest.raises(IdentityError, match="patient token"):
        registry.resolve(REF, actor="dr-a", role="clinician")
    entries, _ = audit.read()
    assert [(e.action, e.outcome) for e in entries] == [("identity_lookup", "failed")]


def test_a_registry_others_can_read_or_that_is_garbage_is_refused(tmp_path: Path) -> None:
    registry, _ = _registry(tmp_path)
    registry.record("ward-1", [BindingEvent(D1, P1, "bound", T0, REF)])
    path = tmp_path / IDENTITY_FILE
    path.chmod(0o644)
    with pytest.raises(IdentityError, match="chmod 600"):
        _registry(tmp_path)
    path.chmod(0o600)
    path.write_text(json.dumps({"patients": []}))
    with pytest.raises(IdentityError, match="unreadable"):
        _registry(tmp_path)


def test_a_failed_write_changes_nothing_so_the_retry_stores_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry, audit = _registry(tmp_path)
    event = BindingEvent(D1, P1, "bound", T0, REF)
    real_save = IdentityRegistry._save

    def failing_save(self: IdentityRegistry) -> None:
        raise IdentityError(self.path, "cannot write: No space left on device")

    monkeypatch.setattr(IdentityRegistry, "_save", failing_save)
    with pytest.raises(IdentityError, match="No space"):
        registry.record("ward-1", [event])
    monkeypatch.setattr(IdentityRegistry, "_save", real_save)
    assert registry.record("ward-1", [event]).stored == 1  # not "unchanged": memory rolled back
    assert (
        IdentityRegistry(tmp_path / IDENTITY_FILE, None).resolve(P1, actor="a", role="admin") == REF
    )
    # The audit log over-records (the failed try's entry stays), never under-records.
    entries, _ = audit.read()
    assert [e.action for e in entries] == ["binding", "binding"]


def _record_in_child(path: str, gateway: str, device: str, patient: str, ref: str) -> None:
    registry = IdentityRegistry(Path(path), None)
    for k in range(20):
        event = BindingEvent(device[:-2] + f"{k:02x}", patient, "bound", T0 + k, ref)
        registry.record(gateway, [event])


def test_sinks_sharing_one_file_see_each_others_bindings(tmp_path: Path) -> None:
    # Two sink instances behind one shared subscription: each binding event reaches one of them.
    path = tmp_path / "shared" / IDENTITY_FILE
    first, second = IdentityRegistry(path, None), IdentityRegistry(path, None)
    first.record("ward-1", [BindingEvent(D1, P1, "bound", T0, REF)])
    second.record("ward-2", [BindingEvent(D2, P2, "bound", T0, "MRN-OTHER")])
    # Each finds what the other stored, and the second's write kept the first's binding.
    assert second.resolve(P1, actor="a", role="admin") == REF
    assert first.resolve(P2, actor="a", role="admin") == "MRN-OTHER"
    assert first.device_patient(D2) == P2
    assert IdentityRegistry(path, None).device_patient(D1) == P1


def test_two_processes_writing_one_file_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / IDENTITY_FILE
    context = multiprocessing.get_context("spawn")
    children = [
        context.Process(target=_record_in_child, args=(str(path), "ward-1", D1, P1, REF)),
        context.Process(target=_record_in_child, args=(str(path), "ward-2", D2, P2, "MRN-2")),
    ]
    for child in children:
        child.start()
    for child in children:
        child.join(60)
        assert child.exitcode == 0
    registry = IdentityRegistry(path, None)
    stored = json.loads(path.read_text(encoding="utf-8"))["devices"]
    assert len(stored) == 40
    assert {registry.device_patient(token) for token in stored} == {P1, P2}
