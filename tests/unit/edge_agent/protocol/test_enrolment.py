"""Gateway enrolment: both sides derive one master secret, and nothing else verifies."""

from __future__ import annotations

import contextlib
import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.protocol.enrolment import (
    EnrolmentError,
    EnrolRequest,
    EnrolResponse,
    GatewayEnrolment,
    answer,
    mint_token,
    token_bytes,
    token_digest,
)

GATEWAY = "ward3-bed12"


def test_both_sides_derive_the_same_master_secret_and_epoch() -> None:
    token = mint_token()
    gateway = GatewayEnrolment(GATEWAY, token)
    request = EnrolRequest.decode(gateway.request().encode())
    response, sink_master = answer(request, token, epoch=7)
    gateway_master, epoch = gateway.finish(EnrolResponse.decode(response.encode()))
    assert gateway_master == sink_master
    assert len(gateway_master) == 32
    assert epoch == 7
    # Ephemeral keys: enrolling again gives another secret.
    again = GatewayEnrolment(GATEWAY, token)
    assert answer(again.request(), token, epoch=7)[1] != sink_master


def test_a_wrong_token_is_refused_on_either_side() -> None:
    token, other = mint_token(), mint_token()
    gateway = GatewayEnrolment(GATEWAY, token)
    with pytest.raises(EnrolmentError, match="does not verify"):
        answer(gateway.request(), other, epoch=1)
    impostor = GatewayEnrolment(GATEWAY, other)
    response, _ = answer(impostor.request(), other, epoch=1)
    with pytest.raises(EnrolmentError, match="does not verify"):
        gateway.finish(response)


@pytest.mark.parametrize(
    "change",
    [
        {"public_key": bytes(31) + b"\x09"},
        {"nonce": bytes(16)},
        {"epoch": 4},
        {"gateway_id": "ward3-bed13"},
    ],
)
def test_a_changed_response_field_is_refused(change: dict[str, bytes | int | str]) -> None:
    token = mint_token()
    gateway = GatewayEnrolment(GATEWAY, token)
    response, _ = answer(gateway.request(), token, epoch=3)
    with pytest.raises(EnrolmentError):
        gateway.finish(dataclasses.replace(response, **change))  # type: ignore[arg-type]


def test_a_changed_request_is_refused_and_a_low_order_key_too() -> None:
    token = mint_token()
    request = GatewayEnrolment(GATEWAY, token).request()
    with pytest.raises(EnrolmentError, match="does not verify"):
        answer(dataclasses.replace(request, gateway_id="ward3-bed13"), token, epoch=1)
    # A MAC-valid request with the all-zero public key (a low-order point, RFC 7748 §6.1).
    zero = GatewayEnrolment(GATEWAY, token)
    forged = dataclasses.replace(zero.request(), public_key=bytes(32))
    from edge_agent.protocol import enrolment  # noqa: PLC0415 - the private MAC helper

    key = enrolment._auth_key(token, GATEWAY)
    forged = dataclasses.replace(
        forged, mac=enrolment._mac(key, enrolment.REQUEST_LABEL, *forged.transcript)
    )
    with pytest.raises(EnrolmentError, match="low-order"):
        answer(forged, token, epoch=1)


def test_tokens_are_forgiving_to_type_and_kept_only_as_a_digest() -> None:
    token = mint_token()
    assert len(token) == 26
    spaced = " ".join(token[i : i + 4] for i in range(0, 26, 4)).lower()
    assert token_bytes(spaced) == token_bytes(token)
    assert token_digest(spaced) == token_digest(token)
    with pytest.raises(EnrolmentError, match="26-character"):
        token_bytes("not a token")


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_random_bytes_raise_only_our_error(payload: bytes) -> None:
    for decode in (EnrolRequest.decode, EnrolResponse.decode):
        with contextlib.suppress(EnrolmentError):
            decode(payload)
