"""`edge-agent enroll TOKEN`: the gateway's side of enrolment over MQTT (docs/enrolment.md).

The gateway publishes its request on its own `enrol/request` topic (again every few seconds, in
case the sink's enrolment was started later) and waits on `enrol/response`; only a response
whose MAC verifies under the token yields the master secret. Nothing is written before that.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Final

import aiomqtt

from edge_agent.errors import EdgeAgentError
from edge_agent.protocol import Channel, topic
from edge_agent.protocol.enrolment import EnrolmentError, EnrolResponse, GatewayEnrolment
from edge_agent.publisher import BrokerSettings

_LOGGER = logging.getLogger(__name__)
RESEND_S: Final = 3.0


class EnrollError(EdgeAgentError):
    """Enrolment did not complete; the message says why and what to try."""


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
                protocol=aiomqtt.ProtocolVersion.V5,
                timeout=broker.connect_timeout_s,
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
    except aiomqtt.MqttError as exc:
        msg = f"broker {broker.host}:{broker.port} unavailable: {exc}"
        raise EnrollError(msg) from exc
    msg = "the broker closed the connection during enrolment"
    raise EnrollError(msg)


async def _resend(client: aiomqtt.Client, request_topic: str, request: bytes) -> None:
    while True:
        await client.publish(request_topic, request, qos=1)
        await asyncio.sleep(RESEND_S)
