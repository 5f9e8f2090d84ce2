"""`cloud-sink gateways`: enrol gateways and list the enrolled ones (docs/enrolment.md)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from cloud_sink.cli_rotate import rotate_command
from cloud_sink.config import load_sink_config
from cloud_sink.enrolment import TOKEN_LIFETIME_S, EnrolmentFailed, key_file, serve
from cloud_sink.errors import CloudSinkError
from cloud_sink.keyring import REVALIDATE_S
from edge_agent.protocol.enrolment import mint_token
from edge_agent.protocol.topics import GATEWAY_ID_RE

app = typer.Typer(help="Enrol gateways and list the enrolled ones.", no_args_is_help=True)
_err = Console(stderr=True)
_out = Console()
ConfigOption = Annotated[
    Path, typer.Option("--config", "-c", help="Sink TOML file (see configs/sink.toml).")
]


def _fail(message: str, code: int = 2) -> typer.Exit:
    _err.print(f"[bold red]error:[/] {message}")
    return typer.Exit(code=code)


@app.command("add")
def add_command(
    gateway_id: Annotated[str, typer.Argument(help="The gateway's id (its [gateway] id).")],
    config: ConfigOption = Path("configs/sink.toml"),
    timeout_s: Annotated[
        float, typer.Option("--timeout", help="Seconds the token stays valid (at most 600).")
    ] = TOKEN_LIFETIME_S,
    replace: Annotated[
        bool, typer.Option("--replace", help="Enrol again a gateway that has a secret already.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines.")] = False,
) -> None:
    """Mint a single-use enrolment token, print it, and wait for the gateway to enrol with it.

    On the gateway: `edge-agent enroll TOKEN`. The token is shown once and kept nowhere; the
    gateway's secret is written to the keyring (0600) only after its request verified.
    """
    if not GATEWAY_ID_RE.fullmatch(gateway_id):
        msg = f"gateway id {gateway_id!r} is invalid: 3-32 characters from a-z, 0-9, '-'"
        raise _fail(msg)
    if not 0 < timeout_s <= TOKEN_LIFETIME_S:
        msg = f"--timeout must be in (0, {TOKEN_LIFETIME_S:g}] seconds"
        raise _fail(msg)
    try:
        settings = load_sink_config(config)
    except CloudSinkError as exc:
        raise _fail(str(exc)) from None
    path = key_file(settings.keyring_dir, gateway_id)
    if path.exists() and not replace:
        msg = f"{gateway_id} is enrolled already ({path}); --replace enrols it again"
        raise _fail(msg)
    token = mint_token()
    expires = time.strftime("%H:%M:%S", time.localtime(time.time() + timeout_s))
    if as_json:
        print(json.dumps({"gateway": gateway_id, "token": token, "expires": expires}), flush=True)
    else:
        grouped = " ".join(token[i : i + 4] for i in range(0, len(token), 4))
        _out.print(f"enrolment token for {gateway_id} (single use, valid until {expires}):")
        _out.print(f"    [bold]{grouped}[/]")
        _out.print(f"on the gateway: edge-agent enroll '{grouped}'")
        sys.stdout.flush()
    try:
        enrolled = serve(
            settings.mqtt, settings.keyring_dir, gateway_id, token, timeout_s=timeout_s
        )
    except EnrolmentFailed as exc:
        raise _fail(str(exc), code=1) from None
    if as_json:
        print(json.dumps({"gateway": gateway_id, "enrolled": True, "epoch": enrolled.epoch}))
    else:
        _out.print(
            f"{gateway_id} enrolled (key epoch {enrolled.epoch}); secret in {enrolled.key_file}"
        )


@app.command("revoke")
def revoke_command(
    gateway_id: Annotated[str, typer.Argument(help="The gateway to shut out.")],
    config: ConfigOption = Path("configs/sink.toml"),
) -> None:
    """Refuse every key of a gateway from now on (the running sink within a second).

    The key file moves to `revoked/` in the keyring (kept, 0600, for the record); the gateway
    can only come back through `gateways add`, with a new secret.
    """
    try:
        settings = load_sink_config(config)
    except CloudSinkError as exc:
        raise _fail(str(exc)) from None
    path = key_file(settings.keyring_dir, gateway_id)
    if not GATEWAY_ID_RE.fullmatch(gateway_id) or not path.exists():
        msg = f"{gateway_id!r} is not enrolled (no {path.name} in {settings.keyring_dir})"
        raise _fail(msg)
    revoked_dir = settings.keyring_dir / "revoked"
    revoked_dir.mkdir(mode=0o700, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    path.replace(revoked_dir / f"{gateway_id}-{stamp}.key")
    _out.print(
        f"revoked {gateway_id}: its frames are refused from now on (within "
        f"{REVALIDATE_S:g} s in a running sink); `gateways add {gateway_id}` enrols it anew"
    )


@app.command("list")
def list_command(
    config: ConfigOption = Path("configs/sink.toml"),
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON array.")] = False,
) -> None:
    """The enrolled gateways (a key file each in the keyring) and when each was enrolled."""
    try:
        settings = load_sink_config(config)
    except CloudSinkError as exc:
        raise _fail(str(exc)) from None
    rows = [
        {
            "gateway": path.stem,
            "enrolled": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(path.stat().st_mtime)),
        }
        for path in sorted(settings.keyring_dir.glob("*.key"))
        if GATEWAY_ID_RE.fullmatch(path.stem)
    ]
    if as_json:
        typer.echo(json.dumps(rows))
        return
    table = Table(title="enrolled gateways")
    table.add_column("gateway")
    table.add_column("enrolled (UTC)")
    for row in rows:
        table.add_row(row["gateway"], row["enrolled"])
    _out.print(table)


# Registered here so `cloud-sink gateways rotate` sits with add/list/revoke.
app.command("rotate")(rotate_command)
