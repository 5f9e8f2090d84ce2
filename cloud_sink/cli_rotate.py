"""`cloud-sink gateways rotate`: move a gateway to a new key epoch, the old one kept for a grace."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Final

import typer
from rich.console import Console

from cloud_sink.audit import DetailValue
from cloud_sink.cli_guard import TokenFileOption, admit
from cloud_sink.consumer import ConsumerSettings
from cloud_sink.enrolment import key_file, paho_client
from cloud_sink.epochs import (
    DEFAULT_GRACE_S,
    EpochStateError,
    plan_rotation,
    rotation_message,
    save_policy,
)
from cloud_sink.errors import CloudSinkError
from edge_agent.protocol.keys import MASTER_SECRET_BYTES
from edge_agent.protocol.settings import SettingsError, read_secret_file
from edge_agent.protocol.topics import GATEWAY_ID_RE

PUBLISH_TIMEOUT_S: Final = 10.0
_err = Console(stderr=True)
_out = Console()


class RotationFailed(CloudSinkError):
    """The rotation could not be recorded or its command could not reach the broker."""


def publish_retained(settings: ConsumerSettings, full_topic: str, payload: bytes) -> None:
    """Publish once, retained, QoS 1, and wait for the PUBACK; RotationFailed if not."""
    # The sink identity over the sink's TLS settings: its ACL lets it write down/ topics.
    client = paho_client(settings, f"{settings.client_id}-rotate")
    try:
        client.connect(settings.host, settings.port, keepalive=settings.keepalive_s)
    except OSError as exc:
        msg = f"broker {settings.host}:{settings.port} unavailable: {exc.strerror or exc}"
        raise RotationFailed(msg) from exc
    client.loop_start()
    try:
        info = client.publish(full_topic, payload, qos=1, retain=True)
        info.wait_for_publish(PUBLISH_TIMEOUT_S)
        if not info.is_published():
            msg = f"the broker did not acknowledge the rotation within {PUBLISH_TIMEOUT_S:g} s"
            raise RotationFailed(msg)
    finally:
        client.disconnect()
        client.loop_stop()


def rotate_command(
    gateway_id: Annotated[str, typer.Argument(help="The gateway whose key epoch to rotate.")],
    config: Annotated[
        Path, typer.Option("--config", "-c", help="Sink TOML file (see configs/sink.toml).")
    ] = Path("configs/sink.toml"),
    grace_h: Annotated[
        float,
        typer.Option(
            "--grace-hours",
            help="How long frames sealed under the old epochs still open (a spooled backlog).",
            min=0.0,
            max=24.0 * 365,
        ),
    ] = DEFAULT_GRACE_S / 3600,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON line.")] = False,
    token_file: TokenFileOption = None,
) -> None:
    """Start a new key epoch for a gateway: the sink accepts the old epochs for the grace only,
    and a retained, sealed command on the gateway's down/keys topic moves the gateway (now, or
    when it next connects). The master secret is unchanged; revoke + add replaces that."""
    try:
        if not GATEWAY_ID_RE.fullmatch(gateway_id):
            msg = f"gateway id {gateway_id!r} is invalid: 3-32 characters from a-z, 0-9, '-'"
            raise RotationFailed(msg)
        detail: dict[str, DetailValue] = {"command": "rotate", "grace_s": round(grace_h * 3600)}
        admitted = admit(config, token_file, "key_rotate", subject=gateway_id, detail=detail)
        settings = admitted.settings
        path = key_file(settings.keyring_dir, gateway_id)
        try:
            secret = read_secret_file(path, MASTER_SECRET_BYTES)
        except SettingsError as exc:
            msg = f"{gateway_id!r} is not enrolled, or its key file is unusable: {exc.why}"
            raise RotationFailed(msg) from None
        # The gateway is told first and the old epochs retired after: if the command cannot
        # be delivered nothing changes, and if saving fails the gateway has merely moved early.
        policy = plan_rotation(settings.keyring_dir, gateway_id, grace_h * 3600)
        epoch = policy.floor
        full_topic, payload = rotation_message(
            secret, gateway_id, epoch, settings.mqtt.topic_prefix
        )
        publish_retained(settings.mqtt, full_topic, payload)
        save_policy(settings.keyring_dir, gateway_id, policy)
    except (CloudSinkError, EpochStateError) as exc:
        _err.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(code=2) from None
    if as_json:
        typer.echo(json.dumps({"gateway": gateway_id, "epoch": epoch, "grace_hours": grace_h}))
    else:
        _out.print(
            f"{gateway_id}: key epoch {epoch} from now on; older epochs open for {grace_h:g} h"
        )
