"""The sink's side of gateway enrolment (docs/enrolment.md): mint a token, answer one request.

`cloud-sink gateways add GATEWAY_ID` runs this as a process of its own: it prints the token, waits
(at most the token's lifetime) on the gateway's `enrol/request` topic, answers the first request
whose MAC verifies under the token, and only then writes the gateway's master secret into the
keyring (mode 0600), where the running sink picks it up. The token lives only in this process's
memory; a request that does not verify is counted and ignored, never answered.

Each outcome is written to the audit log as action `enrol` by actor `system`, subject the
gateway id: a completed enrolment (ok, before the secret is stored: no audit, no enrolment), a
refused request (denied; the first MAX_AUDITED_REFUSALS of a run, the rest counted in the
final entry, so a flood of bad requests cannot flood the log), and a run that ends without one
(failed).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from cloud_sink.audit import AuditError, AuditLog, DetailValue, Outcome
from cloud_sink.consumer import ConsumerSettings, tls_context
from cloud_sink.errors import CloudSinkError
from edge_agent.protocol import Channel, topic
from edge_agent.protocol.enrolment import EnrolmentError, EnrolRequest, answer
from edge_agent.protocol.keys import MAX_EPOCH
from edge_agent.protocol.settings import write_secret_file

_LOGGER = logging.getLogger(__name__)
TOKEN_LIFETIME_S: Final = 600.0
CONNECT_TIMEOUT_S: Final = 10.0
CREDENTIAL_CHECK_S: Final = 10.0
"""How long `check_credential` retries while the broker is still re-reading its files."""
_CHECK_RETRY_S: Final = 0.2
MAX_AUDITED_REFUSALS: Final = 20
"""Refused requests audited one by one in one `serve` run; further ones are only counted."""


class EnrolmentFailed(CloudSinkError):
    """No gateway completed enrolment in time, or the keyring could not be written."""


@dataclass(slots=True, frozen=True)
class Enrolled:
    gateway_id: str
    epoch: int
    key_file: Path
    refused_requests: int


def key_file(keyring_dir: Path, gateway_id: str) -> Path:
    return keyring_dir / f"{gateway_id}.key"


def paho_client(
    settings: ConsumerSettings,
    client_id: str,
    *,
    username: str | None = None,
    password: str | None = None,
) -> mqtt.Client:
    """A paho MQTT v5 client for the sink's short admin sessions (enrolment, rotation), with the
    sink's TLS settings and, unless others are given, the sink identity's credentials."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    if username is None:
        username, password = settings.username, settings.password
    if username is not None:
        client.username_pw_set(username, password)
    context = tls_context(settings)
    if context is not None:
        client.tls_set_context(context)
    return client


def _connack(settings: ConsumerSettings, client_id: str, username: str, password: str) -> str:
    """Connect once with these credentials; the CONNACK's reason ("Success" when accepted)."""
    client = paho_client(settings, client_id, username=username, password=password)
    answered = threading.Event()
    verdict: list[str] = []

    def on_connect(
        _client: mqtt.Client, _userdata: object, _flags: object, reason: ReasonCode, _props: object
    ) -> None:
        verdict.append("Success" if not reason.is_failure else str(reason))
        answered.set()

    client.on_connect = on_connect
    try:
        client.connect(settings.host, settings.port, keepalive=settings.keepalive_s)
    except OSError as exc:
        return f"unreachable ({exc.strerror or exc})"
    client.loop_start()
    try:
        answered.wait(CONNECT_TIMEOUT_S)
    finally:
        client.disconnect()
        client.loop_stop()
    return verdict[0] if verdict else "no CONNACK"


def check_credential(
    settings: ConsumerSettings, username: str, password: str, timeout_s: float = CREDENTIAL_CHECK_S
) -> None:
    """Wait until the broker accepts a credential just written (it re-reads its password file
    shortly after SIGHUP); EnrolmentFailed if it never does, so no unusable credential is shown.
    The check connects with a throw-away client id and a session that ends with it."""
    deadline = time.monotonic() + timeout_s
    while True:
        verdict = _connack(settings, f"{username}-credential-check", username, password)
        if verdict == "Success":
            return
        if time.monotonic() > deadline:
            msg = (
                f"the broker at {settings.host}:{settings.port} does not accept the new "
                f"credential of {username!r} ({verdict}): did it reload its password_file?"
            )
            raise EnrolmentFailed(msg)
        time.sleep(_CHECK_RETRY_S)


def _request_for(payload: bytes, gateway_id: str) -> EnrolRequest:
    request = EnrolRequest.decode(payload)
    if request.gateway_id != gateway_id:
        msg = f"request names gateway {request.gateway_id!r}, not {gateway_id!r}"
        raise EnrolmentError(msg)
    return request


def _subscribe_on_connect(client: mqtt.Client, request_topic: str) -> list[str]:
    """Subscribe once connected; the returned list receives the reason of a refused CONNACK."""
    refused: list[str] = []

    def on_connect(
        c: mqtt.Client, _userdata: object, _flags: object, reason: ReasonCode, _props: object
    ) -> None:
        if reason.is_failure:
            refused.append(str(reason))
        else:
            c.subscribe(request_topic, qos=1)

    client.on_connect = on_connect
    return refused


def _audit(
    audit: AuditLog, gateway_id: str, outcome: Outcome, detail: dict[str, DetailValue]
) -> None:
    """One `enrol` entry by the system; EnrolmentFailed when it cannot be written."""
    try:
        audit.append(
            actor="system",
            role="system",
            action="enrol",
            outcome=outcome,
            subject=gateway_id,
            detail=detail,
        )
    except AuditError as exc:
        msg = f"the enrolment of {gateway_id} could not be audited, so it stops: {exc}"
        raise EnrolmentFailed(msg) from exc


def _audit_failure(audit: AuditLog, gateway_id: str, reason: str, refused: int) -> None:
    """Record a run that ends without an enrolment; the failure already being raised wins."""
    try:
        _audit(audit, gateway_id, "failed", {"reason": reason, "rejected_requests": refused})
    except EnrolmentFailed as exc:
        _LOGGER.warning("%s", exc)


def _store(
    audit: AuditLog, keyring_dir: Path, gateway_id: str, master: bytes, *, epoch: int, refused: int
) -> Path:
    """Audit the enrolment, then write the gateway's secret to the keyring; its path."""
    # Recorded before the secret is stored: an enrolment that cannot be audited does not happen.
    _audit(audit, gateway_id, "ok", {"epoch": epoch, "rejected_requests": refused})
    path = key_file(keyring_dir, gateway_id)
    try:
        write_secret_file(path, master)
    except OSError as exc:
        _audit_failure(audit, gateway_id, "keyring_write", refused)
        msg = f"{path}: cannot write the gateway's secret: {exc.strerror}"
        raise EnrolmentFailed(msg) from exc
    return path


def serve(
    settings: ConsumerSettings,
    keyring_dir: Path,
    gateway_id: str,
    token: str,
    *,
    audit: AuditLog,
    timeout_s: float = TOKEN_LIFETIME_S,
) -> Enrolled:
    """Wait for the gateway's request, answer it and store the secret; EnrolmentFailed if not.

    Every outcome is written to `audit` (see the module's docstring).
    """
    requests: queue.Queue[bytes] = queue.Queue()
    client = paho_client(settings, f"{settings.client_id}-enrol-{gateway_id}")
    request_topic = topic(gateway_id, Channel.ENROL_REQUEST, settings.topic_prefix)
    response_topic = topic(gateway_id, Channel.ENROL_RESPONSE, settings.topic_prefix)
    client.on_message = lambda _client, _userdata, message: requests.put(bytes(message.payload))
    connect_refused = _subscribe_on_connect(client, request_topic)
    try:
        client.connect(settings.host, settings.port, keepalive=settings.keepalive_s)
    except OSError as exc:
        _audit_failure(audit, gateway_id, "broker_unavailable", 0)
        msg = f"broker {settings.host}:{settings.port} unavailable: {exc.strerror or exc}"
        raise EnrolmentFailed(msg) from exc
    client.loop_start()
    refused = 0
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            remaining_s = deadline - time.monotonic()
            if remaining_s <= 0:
                _audit_failure(audit, gateway_id, "timeout", refused)
                msg = (
                    f"no valid enrolment request from {gateway_id} within {timeout_s:g} s; run "
                    f"`edge-agent enroll TOKEN` on the gateway while this waits"
                )
                raise EnrolmentFailed(msg)
            if connect_refused:
                _audit_failure(audit, gateway_id, "broker_refused_sink", refused)
                msg = (
                    f"the broker refused the sink identity {settings.username!r}: "
                    f"{connect_refused[0]} "
                    "(check [mqtt] username and password_file)"
                )
                raise EnrolmentFailed(msg)
            try:
                payload = requests.get(timeout=min(remaining_s, 1.0))
            except queue.Empty:
                continue
            # The gateway's first key epoch: the current UNIX time, like a counter reset.
            epoch = min(int(time.time()), MAX_EPOCH)
            try:
                request = _request_for(payload, gateway_id)
                response, master = answer(request, token, epoch)
            except EnrolmentError as exc:
                refused += 1
                _LOGGER.warning("enrolment request refused: %s", exc)
                if refused <= MAX_AUDITED_REFUSALS:
                    _audit(audit, gateway_id, "denied", {"reason": "request_refused"})
                continue
            path = _store(audit, keyring_dir, gateway_id, master, epoch=epoch, refused=refused)
            client.publish(response_topic, response.encode(), qos=1).wait_for_publish(
                CONNECT_TIMEOUT_S
            )
            return Enrolled(gateway_id, epoch, path, refused)
    finally:
        client.disconnect()
        client.loop_stop()
