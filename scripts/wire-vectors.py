"""Prints the envelope test vectors of docs/wire-format.md (inputs fixed, outputs computed)."""

from __future__ import annotations

import numpy as np

from edge_agent.protocol import (
    AlertEvent,
    DeviceBlock,
    DeviceStatus,
    Direction,
    Frame,
    GatewayHealth,
    by_name,
    derive_session_key,
    encode_frame,
    seal,
)
from edge_agent.protocol.envelope import CONTENT_FRAME_V1, Header, aad

PATIENT = "5f1c0a2b9d8e7f60a1b2c3d4e5f60718"
DEVICE = "0badc0de0badc0de0badc0de0badc0de"
TS_NS = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z


def _block() -> DeviceBlock:
    codes = [by_name("heart_rate").code, by_name("spo2").code]
    return DeviceBlock(
        DEVICE,
        PATIENT,
        "pulse-oximeter",
        np.array(codes, np.uint16),
        np.array([TS_NS, TS_NS], np.int64),
        np.array([72.0, 97.0], np.float64),
        np.array([0, 0], np.uint32),
        np.array([0, 0], np.uint32),
    )


CASES = (
    (
        "1: two readings, first sequence number after a fresh epoch",
        bytes(range(32)),
        "ward3-bed12",
        1,
        "bt/v1/gw/ward3-bed12/up/telemetry",
        1,
        Frame("ward3-bed12", TS_NS, (_block(),)),
    ),
    (
        "2: empty frame, epoch 0, sequence 0, topic prefix",
        bytes.fromhex("ff" * 32),
        "gw-001",
        0,
        "staging/bt/v1/gw/gw-001/up/telemetry",
        0,
        Frame("gw-001", TS_NS),
    ),
    (
        "3: alert and device status, largest epoch and sequence number",
        bytes.fromhex("00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"),
        "icu-7",
        2**32 - 1,
        "bt/v1/gw/icu-7/up/alerts",
        2**64 - 1,
        Frame(
            "icu-7",
            TS_NS,
            alerts=(
                AlertEvent(
                    "a-0001",
                    PATIENT,
                    DEVICE,
                    by_name("spo2").code,
                    "spo2_low",
                    "critical",
                    "raised",
                    TS_NS,
                    87.0,
                    "SpO2 < 90 % for 15 s",
                ),
            ),
            statuses=(
                DeviceStatus(DEVICE, "pulse-oximeter", TS_NS, True, 81.0, -67, 1.0, 0, None),
            ),
        ),
    ),
    (
        "4: frame v2, the gateway's own health record",
        bytes(range(32)),
        "ward3-bed12",
        1,
        "bt/v1/gw/ward3-bed12/up/telemetry",
        2,
        Frame(
            "ward3-bed12",
            TS_NS,
            gateway=GatewayHealth(TS_NS, 3600.5, 2, 1480, 1.5, 0.08, 0, 0, 3.2, 96.4, 1),
        ),
    ),
)


def main() -> None:
    for name, secret, gateway_id, epoch, full_topic, seq, frame in CASES:
        key = derive_session_key(secret, gateway_id, epoch, Direction.UP)
        plaintext = encode_frame(frame)
        header = Header(gateway_id, epoch, seq, CONTENT_FRAME_V1).to_bytes()
        envelope = seal(key, full_topic, seq, plaintext, CONTENT_FRAME_V1)
        print("```vector")
        print(f"name: {name}")
        print(f"master_secret: {secret.hex()}")
        print(f"gateway_id: {gateway_id}")
        print(f"epoch: {epoch}")
        print("direction: up")
        print(f"topic: {full_topic}")
        print(f"seq: {seq}")
        print(f"content_type: {CONTENT_FRAME_V1}")
        print(f"plaintext: {plaintext.hex()}")
        print(f"key: {key.key.hex()}")
        print(f"iv_base: {key.iv_base.hex()}")
        print(f"nonce: {key.nonce(seq).hex()}")
        print(f"header: {header.hex()}")
        print(f"aad: {aad(full_topic, header).hex()}")
        print(f"envelope: {envelope.hex()}")
        print("```\n")


if __name__ == "__main__":
    main()
