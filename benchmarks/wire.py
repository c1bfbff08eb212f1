"""Wire benchmarks: codec speed, message sizes, packet sealing cost.

    python -m benchmarks.wire                 # print the table
    python -m benchmarks.wire --json out.json # also write the figures as JSON

Times are the best of several timeit-style runs of many iterations (per operation,
microseconds). Targets (issue 2): an open ping body of at most 40 bytes, encode+decode
of a ping within 10 µs, seal+open of a packet within 15 µs.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from beethoven.address import Address
from beethoven.wire.codec import decode, encode
from beethoven.wire.messages import (
    Alive,
    MemberDigest,
    MemberState,
    Message,
    Ping,
    PushPullReply,
)
from beethoven.wire.packet import PacketCodec
from beethoven.wire.security import Keyring, nonce

PEER = Address("10.0.0.9", 33000)


def best_us(fn: Callable[[], object], *, number: int, repeat: int = 7) -> float:
    """Best per-call time of *fn* in microseconds over *repeat* runs of *number* calls."""
    return min(timeit.repeat(fn, number=number, repeat=repeat)) / number * 1e6


def sample_ping() -> Ping:
    return Ping(seq=48_213, target="10.0.0.12:33000", source="10.0.0.7:33000")


def sample_alive() -> Alive:
    return Alive(
        name="10.0.0.7:33000",
        generation=(1_700_000_000_000 << 16) | 3,
        incarnation=12,
        addr=Address("10.0.0.7", 33000),
        meta=b"role=web",
    )


def sample_push_pull(members: int = 50) -> PushPullReply:
    states = tuple(
        MemberState(
            name=f"10.0.{i // 250}.{i % 250 + 1}:33000",
            addr=Address(f"10.0.{i // 250}.{i % 250 + 1}", 33000),
            generation=(1_700_000_000_000 << 16) | i,
            incarnation=i % 7,
            status=0,
            meta=b"role=web",
            last_change=(1_700_000_100_000 << 16) | i,
        )
        for i in range(members)
    )
    digest = tuple(MemberDigest(s.name, s.generation, s.incarnation, s.status) for s in states)
    return PushPullReply(
        cluster="prod", sender="10.0.0.7:33000", root=bytes(32), digest=digest, members=states
    )


def message_times(msg: Message, number: int) -> dict[str, Any]:
    wire = encode(msg)
    return {
        "body_bytes": len(wire),
        "encode_us": best_us(lambda: encode(msg), number=number),
        "decode_us": best_us(lambda: decode(wire), number=number),
        "encode_decode_us": best_us(lambda: decode(encode(msg)), number=number),
    }


def codec_figures() -> dict[str, Any]:
    return {
        "ping": message_times(sample_ping(), 100_000),
        "alive": message_times(sample_alive(), 100_000),
        "push_pull_50": message_times(sample_push_pull(), 1_000),
    }


def packet_figures() -> dict[str, Any]:
    logging.getLogger("beethoven.wire.packet").setLevel(logging.ERROR)  # open-cluster warning
    keyring = Keyring(bytes(range(32)))
    out: dict[str, Any] = {}
    samples: list[tuple[str, Message]] = [("ping", sample_ping()), ("alive", sample_alive())]
    for name, msg in samples:
        out[name] = {
            "datagram_open_bytes": len(PacketCodec(None).pack([msg])[0]),
            "datagram_sealed_bytes": len(PacketCodec(keyring).pack([msg])[0]),
        }
    out["ping"].update(ping_packet_times(keyring))
    return out


def ping_packet_times(keyring: Keyring, number: int = 20_000) -> dict[str, float]:
    """Per-packet times for a ping; each call makes a fresh datagram (a repeat is a replay)."""
    msg = sample_ping()
    body = encode(msg)
    tx, rx = PacketCodec(keyring), PacketCodec(keyring)
    open_tx, open_rx = PacketCodec(None), PacketCodec(None)
    aead = ChaCha20Poly1305(bytes(32))
    n, aad = nonce(1), bytes(40)
    figures = {
        "seal_us": best_us(lambda: tx.seal(body), number=number),
        # seal, then check and open it, compound decode included
        "seal_open_us": best_us(lambda: rx.unpack(tx.seal(body), PEER), number=number),
        "pack_unpack_sealed_us": best_us(lambda: rx.unpack(tx.pack([msg])[0], PEER), number=number),
        "pack_unpack_open_us": best_us(
            lambda: open_rx.unpack(open_tx.pack([msg])[0], PEER), number=number
        ),
        "bare_aead_encrypt_decrypt_us": best_us(
            lambda: aead.decrypt(n, aead.encrypt(n, body, aad), aad), number=number
        ),
    }
    assert rx.stats().dropped == 0, rx.stats()
    return figures


TARGETS = {
    "ping_body_bytes": 40,
    "ping_encode_decode_us": 10.0,
    "ping_seal_open_us": 15.0,
}


def run() -> dict[str, Any]:
    codec = codec_figures()
    packet = packet_figures()
    measured = {
        "ping_body_bytes": codec["ping"]["body_bytes"],
        "ping_encode_decode_us": codec["ping"]["encode_decode_us"],
        "ping_seal_open_us": packet["ping"]["seal_open_us"],
    }
    return {
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "codec": codec,
        "packet": packet,
        "targets": {
            k: {"target": TARGETS[k], "measured": v, "met": v <= TARGETS[k]}
            for k, v in measured.items()
        },
    }


def print_table(result: dict[str, Any]) -> None:
    w = sys.stdout.write
    w(f"Python {result['python']} on {result['machine']}\n\n")
    w(f"{'message':<14}{'body B':>8}{'encode µs':>11}{'decode µs':>11}{'enc+dec µs':>12}\n")
    for name, f in result["codec"].items():
        w(
            f"{name:<14}{f['body_bytes']:>8}{f['encode_us']:>11.2f}"
            f"{f['decode_us']:>11.2f}{f['encode_decode_us']:>12.2f}\n"
        )
    w(f"\n{'datagram':<14}{'open B':>8}{'sealed B':>10}\n")
    for name, f in result["packet"].items():
        w(f"{name:<14}{f['datagram_open_bytes']:>8}{f['datagram_sealed_bytes']:>10}\n")
    p = result["packet"]["ping"]
    w("\nper ping packet (µs)\n")
    for key in (
        "seal_us",
        "seal_open_us",
        "pack_unpack_sealed_us",
        "pack_unpack_open_us",
        "bare_aead_encrypt_decrypt_us",
    ):
        w(f"  {key:<30}{p[key]:>8.2f}\n")
    w("\ntargets\n")
    for key, t in result["targets"].items():
        verdict = "ok" if t["met"] else "MISSED"
        w(f"  {key:<24}{t['measured']:>8.2f}  ≤ {t['target']:<6} {verdict}\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Beethoven wire benchmarks")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write the figures as JSON")
    args = parser.parse_args(argv)
    result = run()
    print_table(result)
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0 if all(t["met"] for t in result["targets"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
