"""`edge-agent enroll TOKEN`: the gateway's side of enrolment over MQTT (docs/enrolment.md).

The gateway publishes its request on its own `enrol/request` topic (again every few seconds, in
case the sink's enrolment was started later) and waits on `enrol/response`; only a response
whose MAC verifies under the token yields the master secret. Nothing is written before that.
On a secured broker the gateway logs in with the broker password `cloud-sink gateways add`
printed (docs/broker-security.md); the broker's ACL lets it use only its own enrolment topics.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import logging
import os
import secrets
from pathlib import Path
from typing import Final

import aiomqtt
from aiomqtt.exceptions import MqttConnectError

from edge_agent.errors import EdgeAgentError
from edge_agent.protocol import Channel, topic
from edge_agent.protocol.enrolment import EnrolmentError, EnrolResponse, GatewayEnrolment
from edge_agent.publisher import BrokerSettings, tls_context

_LOGGER = logging.getLogger(__name__)
RESEND_S: Final = 3.0


class EnrollError(EdgeAgentError):
    """Enrolment did not complete; the message says why and what to try."""


def read_password_input(path: Path) -> str:
    """The broker password from `--broker-password-file` (one line)."""
    try:
        password = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        msg = f"{path}: cannot read the broker password: {exc}"
        raise EnrollError(msg) from exc
    if not password or "\n" in password:
        msg = f"{path}: must hold the broker password on one line"
        raise EnrollError(msg)
    return password


def prompt_password(gateway_id: str) -> str:
    """Ask for the broker password without echoing it (it never appears on a command line)."""
    try:
        password = getpass.getpass(
            f"broker password of {gateway_id} (printed by `cloud-sink gateways add`): "
        ).strip()
    except (EOFError, KeyboardInterrupt):
        password = ""
    if not password:
        msg = (
            "no broker password given: type the one `cloud-sink gateways add` printed, pass "
            "--broker-password-file, or --no-broker-password for a broker without logins"
        )
        raise EnrollError(msg)
    return password


def store_password(path: Path, password: str) -> None:
    """Write the broker password for `edge-agent run`: mode 0600 from the start, atomically."""
    staging = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, password.encode("utf-8") + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(staging, path)
    except OSError as exc:
        staging.unlink(missing_ok=True)
        msg = f"{path}: cannot store the broker password: {exc.strerror or exc}"
        raise EnrollError(msg) from exc


async def enroll(
    broker: BrokerSettings, gateway_id: str, token: str, timeout_s: float
) -> tuple[bytes, int]:
    """Run the exchange; return (master secret, key epoch) or raise EnrollError."""
    enrolment = GatewayEnrolment(gateway_id, token)
    try:
        request = enrolment.request().encode()  # checks the token's form before any I/O
    except EnrolmentError as exc:
        raise EnrollError(str(exc)) from exc
    request_topic = topic(gateway_id, Channel.ENROL_REQUEST, broker.topic_prefix)
    response_topic = topic(gateway_id, Channel.ENROL_RESPONSE, broker.topic_prefix)
    try:
        async with (
            asyncio.timeout(timeout_s),
            aiomqtt.Client(
                broker.host,
                broker.port,
                identifier=f"{broker.client_id}-enrol",
                username=broker.username,
                password=broker.password,
                protocol=aiomqtt.ProtocolVersion.V5,
                timeout=broker.connect_timeout_s,
                tls_context=tls_context(broker),
            ) as client,
        ):
            await client.subscribe(response_topic, qos=1)
            resend = asyncio.create_task(_resend(client, request_topic, request))
            try:
                async for message in client.messages:
                    try:
                        return enrolment.finish(EnrolResponse.decode(message.payload))
                    except EnrolmentError as exc:
                        # Someone else's answer, or a forgery: keep waiting for ours.
                        _LOGGER.warning("ignored an enrolment response: %s", exc)
            finally:
                resend.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await resend
    except TimeoutError:
        msg = (
            f"no valid answer from the sink within {timeout_s:g} s: is `cloud-sink gateways add "
            f"{gateway_id}` waiting, and is the token the one it printed (valid 10 minutes)?"
        )
        raise EnrollError(msg) from None
    except MqttConnectError as exc:
        # CONNACK 0x86/0x87 (MQTT 5.0 §3.2.2.2): the broker knows no such login.
        msg = (
            f"broker {broker.host}:{broker.port} refused the connection of {broker.username!r}: "
            f"{exc}; give the broker password `cloud-sink gateways add` printed with this token"
        )
        raise EnrollError(msg) from exc
    except aiomqtt.MqttError as exc:
        msg = f"broker {broker.host}:{broker.port} unavailable: {exc}"
        raise EnrollError(msg) from exc
    msg = "the broker closed the connection during enrolment"
    raise EnrollError(msg)


async def _resend(client: aiomqtt.Client, request_topic: str, request: bytes) -> None:
    while True:
        await client.publish(request_topic, request, qos=1)
        await asyncio.sleep(RESEND_S)
