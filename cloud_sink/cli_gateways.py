"""`cloud-sink gateways`: enrol gateways, their broker credentials, list and revoke them.

docs/enrolment.md describes the key exchange, docs/broker-security.md the broker credentials
and ACLs that `add`, `revoke` and `broker-setup` manage when the sink config has a [broker]
section.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from cloud_sink.broker_auth import (
    BrokerAdmin,
    BrokerAuthError,
    acl_text,
    has_user,
    mint_password,
    read_client_password,
    reload_broker,
    remove_user,
    restore_entry,
    set_password,
    write_acl_file,
    write_client_password,
)
from cloud_sink.cli_guard import TokenFileOption, admit
from cloud_sink.cli_rotate import rotate_command
from cloud_sink.config import SinkConfig
from cloud_sink.enrolment import (
    TOKEN_LIFETIME_S,
    EnrolmentFailed,
    check_credential,
    key_file,
    serve,
)
from cloud_sink.errors import CloudSinkError
from cloud_sink.keyring import REVALIDATE_S
from edge_agent.protocol.enrolment import mint_token
from edge_agent.protocol.topics import GATEWAY_ID_RE

app = typer.Typer(
    help="Enrol gateways and their broker credentials; list and revoke them.",
    no_args_is_help=True,
)
_err = Console(stderr=True)
_out = Console()
ConfigOption = Annotated[
    Path, typer.Option("--config", "-c", help="Sink TOML file (see configs/sink.toml).")
]


def _fail(message: str, code: int = 2) -> typer.Exit:
    _err.print(f"[bold red]error:[/] {message}")
    return typer.Exit(code=code)


def _rollback(broker: BrokerAdmin, gateway_id: str, previous: str | None) -> None:
    """Put the broker's password file back as it was before `add` (best effort: the error that
    made us roll back is the one reported)."""
    with contextlib.suppress(BrokerAuthError):
        restore_entry(broker.password_file, gateway_id, previous)
        reload_broker(broker)


def _mint_credential(settings: SinkConfig, gateway_id: str) -> tuple[str, str | None]:
    """Write a new broker credential for the gateway, reload the broker and check that it takes
    the credential; return (password, the previous hash for a rollback)."""
    broker = settings.broker
    assert broker is not None  # noqa: S101 - the caller checked
    password = mint_password()
    previous = set_password(broker.password_file, gateway_id, password)
    try:
        reload_broker(broker)
        check_credential(settings.mqtt, gateway_id, password)
    except CloudSinkError:
        _rollback(broker, gateway_id, previous)
        raise
    return password, previous


def _show_secrets(
    gateway_id: str, token: str, password: str | None, timeout_s: float, as_json: bool
) -> None:
    """Print the token (and the broker password) once; nothing keeps them afterwards."""
    expires = time.strftime("%H:%M:%S", time.localtime(time.time() + timeout_s))
    if as_json:
        first: dict[str, str] = {"gateway": gateway_id, "token": token, "expires": expires}
        if password is not None:
            first |= {"broker_username": gateway_id, "broker_password": password}
        print(json.dumps(first), flush=True)
        return
    grouped = " ".join(token[i : i + 4] for i in range(0, len(token), 4))
    _out.print(f"enrolment token for {gateway_id} (single use, valid until {expires}):")
    _out.print(f"    [bold]{grouped}[/]")
    if password is not None:
        _out.print(f"broker login of {gateway_id} (shown once, not stored in clear):")
        _out.print(f"    username [bold]{gateway_id}[/]  password [bold]{password}[/]")
        _out.print(f"on the gateway: edge-agent enroll '{grouped}' (it asks for the password)")
    else:
        _out.print(f"on the gateway: edge-agent enroll '{grouped}' --no-broker-password")
    sys.stdout.flush()


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
    token_file: TokenFileOption = None,
) -> None:
    """Mint a single-use enrolment token (and, with a [broker] section, the gateway's broker
    password), print them once, and wait for the gateway to enrol.

    On the gateway: `edge-agent enroll TOKEN`, which asks for the broker password. Neither is
    kept anywhere (the broker keeps only a PBKDF2 hash of the password); the gateway's secret is
    written to the keyring (0600) only after its request verified. If enrolment fails, the
    broker credential is taken back.
    """
    if not GATEWAY_ID_RE.fullmatch(gateway_id):
        msg = f"gateway id {gateway_id!r} is invalid: 3-32 characters from a-z, 0-9, '-'"
        raise _fail(msg)
    if not 0 < timeout_s <= TOKEN_LIFETIME_S:
        msg = f"--timeout must be in (0, {TOKEN_LIFETIME_S:g}] seconds"
        raise _fail(msg)
    try:
        admitted = admit(
            config, token_file, "gateway_add", subject=gateway_id, detail={"replace": replace}
        )
    except CloudSinkError as exc:
        raise _fail(str(exc)) from None
    settings = admitted.settings
    path = key_file(settings.keyring_dir, gateway_id)
    if path.exists() and not replace:
        msg = f"{gateway_id} is enrolled already ({path}); --replace enrols it again"
        raise _fail(msg)
    if gateway_id == settings.mqtt.username:
        msg = f"{gateway_id!r} is the sink's own broker username; choose another gateway id"
        raise _fail(msg)
    password: str | None = None
    previous: str | None = None
    if settings.broker is not None:
        try:
            password, previous = _mint_credential(settings, gateway_id)
        except CloudSinkError as exc:
            raise _fail(str(exc), code=1) from None
    token = mint_token()
    _show_secrets(gateway_id, token, password, timeout_s, as_json)
    try:
        enrolled = serve(
            settings.mqtt,
            settings.keyring_dir,
            gateway_id,
            token,
            timeout_s=timeout_s,
            audit=admitted.audit,
        )
    except EnrolmentFailed as exc:
        if settings.broker is not None:
            _rollback(settings.broker, gateway_id, previous)
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
    token_file: TokenFileOption = None,
) -> None:
    """Refuse every key of a gateway from now on (the running sink within a second) and, with a
    [broker] section, remove its broker credential (the broker disconnects it on reload).

    The key file moves to `revoked/` in the keyring (kept, 0600, for the record); the gateway
    can only come back through `gateways add`, with a new secret and a new broker password.
    """
    valid = GATEWAY_ID_RE.fullmatch(gateway_id) is not None
    try:
        # An id that is not a gateway id is not written to the log (it could be anything).
        subject = gateway_id if valid else None
        settings = admit(config, token_file, "gateway_revoke", subject=subject).settings
    except CloudSinkError as exc:
        raise _fail(str(exc)) from None
    path = key_file(settings.keyring_dir, gateway_id)
    broker = settings.broker
    try:
        on_broker = valid and broker is not None and has_user(broker.password_file, gateway_id)
    except BrokerAuthError as exc:
        raise _fail(str(exc), code=1) from None
    if not valid or not (path.exists() or on_broker):
        msg = f"{gateway_id!r} is not enrolled (no {path.name} in {settings.keyring_dir})"
        raise _fail(msg)
    if path.exists():
        revoked_dir = settings.keyring_dir / "revoked"
        revoked_dir.mkdir(mode=0o700, exist_ok=True)
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        path.replace(revoked_dir / f"{gateway_id}-{stamp}.key")
        _out.print(
            f"revoked {gateway_id}: its frames are refused from now on (within "
            f"{REVALIDATE_S:g} s in a running sink); `gateways add {gateway_id}` enrols it anew"
        )
    if on_broker and broker is not None:
        try:
            remove_user(broker.password_file, gateway_id)
            reload_broker(broker)
        except BrokerAuthError as exc:
            msg = f"the broker credential was not removed: {exc}"
            raise _fail(msg, code=1) from None
        _out.print(
            f"removed the broker credential of {gateway_id}: the broker disconnects it and "
            "refuses it from now on"
        )


@app.command("broker-setup")
def broker_setup_command(
    config: ConfigOption = Path("configs/sink.toml"),
    rotate: Annotated[
        bool, typer.Option("--rotate", help="Mint a new password for the sink identity.")
    ] = False,
    token_file: TokenFileOption = None,
) -> None:
    """Write the broker's ACL file and the sink identity's credential, then reload the broker.

    Needs [broker] (the broker's files) and [mqtt] username and password_file. The sink's
    password is minted into password_file (0600) when that file does not exist yet (or with
    --rotate); otherwise the broker entry is rewritten from it. Run it again after an upgrade:
    the ACL follows the topic contract of this version.
    """
    try:
        # The broker's files and the sink identity's credential: a key operation.
        settings = admit(
            config,
            token_file,
            "key_rotate",
            detail={"command": "broker_setup", "rotate": rotate},
            password_required=False,
        ).settings
    except CloudSinkError as exc:
        raise _fail(str(exc)) from None
    mqtt_settings, broker = settings.mqtt, settings.broker
    if broker is None or mqtt_settings.username is None or mqtt_settings.password_file is None:
        msg = (
            f"{config}: broker-setup needs a [broker] section and [mqtt] username and password_file"
        )
        raise _fail(msg)
    username = mqtt_settings.username
    if GATEWAY_ID_RE.fullmatch(username):
        msg = (
            f"[mqtt] username {username!r} could also be a gateway id, and the gateways' ACL "
            "patterns would apply to it: use a name with '_' or '.', such as cloud_sink"
        )
        raise _fail(msg)
    try:
        write_acl_file(broker.acl_file, acl_text(username, mqtt_settings.topic_prefix))
        if rotate or mqtt_settings.password is None:
            password = mint_password()
            write_client_password(mqtt_settings.password_file, password)
        else:
            password = read_client_password(mqtt_settings.password_file)
        set_password(broker.password_file, username, password)
        reload_broker(broker)
        check_credential(mqtt_settings, username, password)
    except CloudSinkError as exc:
        raise _fail(str(exc), code=1) from None
    _out.print(
        f"broker ready: ACL in {broker.acl_file}; sink identity {username!r} (password in "
        f"{mqtt_settings.password_file}) accepted by the broker"
    )


@app.command("list")
def list_command(
    config: ConfigOption = Path("configs/sink.toml"),
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON array.")] = False,
    token_file: TokenFileOption = None,
) -> None:
    """The enrolled gateways (a key file each in the keyring) and when each was enrolled."""
    try:
        settings = admit(config, token_file, "gateway_list").settings
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
