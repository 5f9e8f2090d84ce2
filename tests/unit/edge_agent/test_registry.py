"""The device registry: time-bounded bindings, pseudonyms only, and a file only the agent reads."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.registry import Registry, RegistryError, normalise_address

SECRET = bytes(range(32))
OXIMETER = "c6:b7:00:00:06:01"


def test_a_binding_survives_a_reload_and_names_no_patient(tmp_path: Path) -> None:
    path = tmp_path / "registry.json"
    registry = Registry(path, SECRET)
    binding = registry.bind(OXIMETER, "pulse-oximeter", "MRN-0042", now_ns=5)
    assert binding.address == "C6:B7:00:00:06:01"
    assert path.stat().st_mode & 0o777 == 0o600
    assert "MRN-0042" not in path.read_text()
    again = Registry(path, SECRET)
    assert again.active() == [binding]
    # The same reference finds the same surrogate token; another reference another token.
    assert again.patient_token("MRN-0042", mint=False) == binding.patient_token
    assert again.patient_token("MRN-0043", mint=False) is None
    # Another gateway's secret does not recognise the reference.
    assert Registry(path, bytes(32)).patient_token("MRN-0042", mint=False) is None


def test_a_device_is_bound_once_and_rebinding_mints_a_new_device_token(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "registry.json", SECRET)
    first = registry.bind(OXIMETER, "pulse-oximeter", "MRN-0042", now_ns=5)
    with pytest.raises(RegistryError, match="bound already"):
        registry.bind(OXIMETER, "pulse-oximeter", "MRN-0099")
    closed = registry.unbind(first.device_token[:8], now_ns=9)
    assert (closed.from_ns, closed.until_ns) == (5, 9)
    second = registry.bind(OXIMETER, "pulse-oximeter", "MRN-0099", now_ns=10)
    assert second.device_token != first.device_token
    assert second.patient_token != first.patient_token
    assert [b.until_ns for b in Registry(tmp_path / "registry.json", SECRET).bindings] == [9, None]


@pytest.mark.parametrize(
    ("address", "kind", "why"),
    [
        ("not-an-address", "hr-strap", "neither a Bluetooth address"),
        (OXIMETER, "implant-receiver", "not a ble device kind"),
        ("/dev/ttyUSB0", "hr-strap", "not a serial device kind"),
    ],
)
def test_bad_addresses_and_kinds_are_refused_with_a_reason(
    tmp_path: Path, address: str, kind: str, why: str
) -> None:
    registry = Registry(tmp_path / "registry.json", SECRET)
    with pytest.raises(RegistryError, match=why):
        registry.bind(address, kind, "MRN-1")
    assert registry.bindings == []


def test_a_failed_pairing_leaves_nothing_bound(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "registry.json", SECRET)
    binding = registry.bind("/dev/serial/by-id/usb-monitor", "bedside-monitor", "MRN-1")
    registry.discard(binding)
    assert Registry(tmp_path / "registry.json", SECRET).bindings == []


def test_an_open_or_foreign_registry_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "registry.json"
    Registry(path, SECRET).bind(OXIMETER, "pulse-oximeter", "MRN-1")
    path.chmod(0o644)
    with pytest.raises(RegistryError, match="chmod 600"):
        Registry(path, SECRET)
    path.write_text('{"version": 7, "patients": {}, "bindings": []}')
    path.chmod(0o600)
    with pytest.raises(RegistryError, match="registry version 7"):
        Registry(path, SECRET)
    path.write_text("[1, 2]")
    with pytest.raises(RegistryError, match="not a device registry"):
        Registry(path, SECRET)


def test_addresses_are_normalised() -> None:
    assert normalise_address("c6-b7-00-00-06-01") == ("ble", "C6:B7:00:00:06:01")
    assert normalise_address("/dev/ttyACM0") == ("serial", "/dev/ttyACM0")


def test_a_pending_binding_is_seen_by_pair_commands_but_not_in_service(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "registry.json", SECRET)
    pending = registry.bind(OXIMETER, "pulse-oximeter", "MRN-0042", now_ns=5, pending=True)
    assert registry.active() == [pending]
    assert Registry(tmp_path / "registry.json", SECRET).in_service() == []
    # Pairing it again while it is being proven is refused, and says why.
    with pytest.raises(RegistryError, match="being paired"):
        registry.bind(OXIMETER, "pulse-oximeter", "MRN-0042")
    confirmed = registry.confirm(pending)
    assert not confirmed.pending
    assert Registry(tmp_path / "registry.json", SECRET).in_service() == [confirmed]


def test_removing_an_interrupted_pairing_forgets_it(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "registry.json", SECRET)
    pending = registry.bind(OXIMETER, "pulse-oximeter", "MRN-0042", now_ns=5, pending=True)
    removed = registry.unbind(pending.device_token[:8])
    assert removed.pending
    assert Registry(tmp_path / "registry.json", SECRET).bindings == []
    # Confirming what was removed meanwhile is refused: pair add then undoes its side.
    with pytest.raises(RegistryError, match="no longer in the registry"):
        registry.confirm(pending)


def test_two_registries_on_one_file_never_undo_each_others_changes(tmp_path: Path) -> None:
    path = tmp_path / "registry.json"
    # Two `pair` commands, both loaded before either wrote.
    first, second = Registry(path, SECRET), Registry(path, SECRET)
    oximeter = first.bind(OXIMETER, "pulse-oximeter", "MRN-0042", pending=True)
    monitor = second.bind("/dev/serial/by-id/usb-monitor", "bedside-monitor", "MRN-0042")
    first.confirm(oximeter)
    # The same reference got one pseudonym although the second command loaded before the first
    # minted it.
    assert monitor.patient_token == oximeter.patient_token
    second.discard(monitor)
    on_disk = Registry(path, SECRET).in_service()
    assert [b.kind for b in on_disk] == ["pulse-oximeter"]
    # And a device bound by one command is refused to the other.
    with pytest.raises(RegistryError, match="bound already"):
        second.bind(OXIMETER, "pulse-oximeter", "MRN-0043")
