"""Access identities for tests that run `cloud-sink` commands: a config block and its token."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from cloud_sink.access import TOKEN_ENV, mint_token


@dataclass(slots=True, frozen=True)
class Person:
    """One identity: its `[[access.identities]]` block for the sink config and its token."""

    name: str
    role: str
    token: str
    block: str

    @property
    def env(self) -> dict[str, str]:
        """The environment a command of this person runs with (CliRunner.invoke(env=...))."""
        return {TOKEN_ENV: self.token}


def person(name: str, role: str, patients: Iterable[str] = ()) -> Person:
    """A new identity with a fresh token, as `cloud-sink access token` mints one."""
    token, digest = mint_token()
    lines = ["[[access.identities]]", f'name = "{name}"', f'role = "{role}"']
    lines.append(f'token_sha256 = "{digest}"')
    if role == "clinician":
        lines.append("patients = [" + ", ".join(f'"{p}"' for p in patients) + "]")
    return Person(name, role, token, "\n".join(lines) + "\n")


def access_section(*people: Person) -> str:
    """The `[access]` section naming these people (append it to a sink config)."""
    return "\n[access]\n" + "\n".join(p.block for p in people)
