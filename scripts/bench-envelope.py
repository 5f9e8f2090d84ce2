"""Opening envelopes: open + frame decode per 10-reading message, against AES-GCM alone.

The baseline is the `cryptography` AESGCM decrypt of the very same ciphertexts with the same
nonces and AAD, the floor any opener pays. Each figure is the best of several passes over
20 000 distinct messages (1000 patients, consecutive sequence numbers), in microseconds per
message; `points_us` adds the sink's validation and line-protocol encoding of the frame.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

from cloud_sink.validate import frame_points
from edge_agent.protocol import Channel, Direction, decode_frame, derive_session_key, open_envelope
from edge_agent.protocol import topic as topic_of
from edge_agent.protocol.envelope import aad, parse_header, split
from edge_agent.protocol.keys import SessionKey

TARGET_US: Final = 5.0
PASSES: Final = 7


def _bench_sink() -> object:
    """scripts/bench-sink.py, for the very frames and sealing the sink benchmark uses."""
    spec = importlib.util.spec_from_file_location(
        "bench_sink", Path(__file__).with_name("bench-sink.py")
    )
    if spec is None or spec.loader is None:
        msg = "scripts/bench-sink.py is missing"
        raise RuntimeError(msg)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _best_us(run: Callable[[], object], count: int) -> float:
    best = float("inf")
    for _ in range(PASSES):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best / count * 1e6


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench envelope", description=__doc__)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    args = parser.parse_args(argv)

    bench_sink = _bench_sink()
    batch = bench_sink.frames(args.messages)  # type: ignore[attr-defined]
    secret = os.urandom(32)
    envelopes: list[bytes] = bench_sink.sealed_messages(batch, secret)  # type: ignore[attr-defined]
    gateway: str = bench_sink.GATEWAY  # type: ignore[attr-defined]
    full_topic = topic_of(gateway, Channel.TELEMETRY)
    key = derive_session_key(secret, gateway, 1, Direction.UP)

    def lookup(_gateway: str, _epoch: int) -> SessionKey:
        return key

    # The floor: exactly the decrypt calls the opener makes, inputs prepared beforehand.
    decrypt_inputs = []
    for envelope in envelopes:
        header_bytes, ciphertext = split(envelope)
        nonce = key.nonce(parse_header(header_bytes).seq)
        decrypt_inputs.append((nonce, ciphertext, aad(full_topic, header_bytes)))
    plaintexts = [open_envelope(full_topic, e, lookup).plaintext for e in envelopes]
    frames = [decode_frame(p) for p in plaintexts]
    decrypt = key.aead.decrypt
    count = len(envelopes)

    # Each pass drops every result at once, as the sink does: nothing accumulates.
    def floor() -> None:
        for nonce, ciphertext, associated in decrypt_inputs:
            decrypt(nonce, ciphertext, associated)

    def opening() -> None:
        for envelope in envelopes:
            open_envelope(full_topic, envelope, lookup)

    def decoding() -> None:
        for plaintext in plaintexts:
            decode_frame(plaintext)

    def both() -> None:
        for envelope in envelopes:
            decode_frame(open_envelope(full_topic, envelope, lookup).plaintext)

    def points() -> None:
        for frame in frames:
            frame_points(frame)

    aesgcm_us = _best_us(floor, count)
    open_us = _best_us(opening, count)
    decode_us = _best_us(decoding, count)
    both_us = _best_us(both, count)
    points_us = _best_us(points, count)
    result = {
        "messages": count,
        "readings_per_message": len(batch[0].blocks[0]),
        "envelope_bytes": len(envelopes[0]),
        "aesgcm_us": round(aesgcm_us, 2),
        "open_us": round(open_us, 2),
        "decode_us": round(decode_us, 2),
        "open_decode_us": round(both_us, 2),
        "ratio_to_aesgcm": round(both_us / aesgcm_us, 2),
        "points_us": round(points_us, 2),
        "target_us": TARGET_US,
        "met": both_us <= TARGET_US,
        "python": platform.python_version(),
    }
    if not args.json:
        print(
            f"AES-GCM alone {aesgcm_us:.2f} µs; open {open_us:.2f} + decode {decode_us:.2f}; "
            f"open+decode {both_us:.2f} µs per message (target {TARGET_US} µs); "
            f"validate+encode {points_us:.2f} µs"
        )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
