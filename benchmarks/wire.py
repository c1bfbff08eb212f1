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


def codec_figures() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, msg, number in [
        ("ping", sample_ping(), 100_000),
        ("alive", sample_alive(), 100_000),
        ("push_pull_50", sample_push_pull(), 1_000),
    ]:
        wire = encode(msg)
        m: Message = msg
        out[name] = {
            "body_bytes": len(wire),
            "encode_us": best_us(lambda m=m: encode(m), number=number),
            "decode_us": best_us(lambda w=wire: decode(w), number=number),
            "encode_decode_us": best_us(lambda m=m: decode(encode(m)), number=number),
        }
    return out


def packet_figures() -> dict[str, Any]:
    logging.getLogger("beethoven.wire.packet").setLevel(logging.ERROR)  # open-cluster warning
    out: dict[str, Any] = {}
    keyring = Keyring(bytes(range(32)))
    for name, msg in [("ping", sample_ping()), ("alive", sample_alive())]:
        body = encode(msg)
        open_codec = PacketCodec(None)
        sealed_tx, sealed_rx = PacketCodec(keyring), PacketCodec(keyring)
        out[name] = {
            "datagram_open_bytes": len(open_codec.pack([msg])[0]),
            "datagram_sealed_bytes": len(sealed_tx.pack([msg])[0]),
        }
        if name != "ping":
            continue
        number = 20_000
        out[name]["seal_us"] = best_us(lambda b=body: sealed_tx.seal(b), number=number)
        # A fresh datagram every call (the replay window would refuse a repeat):
        # seal, then check and open it, compound decode included.
        out[name]["seal_open_us"] = best_us(
            lambda b=body: sealed_rx.unpack(sealed_tx.seal(b), PEER), number=number
        )
        out[name]["pack_unpack_sealed_us"] = best_us(
            lambda m=msg: sealed_rx.unpack(sealed_tx.pack([m])[0], PEER), number=number
        )
        rx_open = PacketCodec(None)
        out[name]["pack_unpack_open_us"] = best_us(
            lambda m=msg: rx_open.unpack(open_codec.pack([m])[0], PEER), number=number
        )
        assert sealed_rx.stats().dropped == 0, sealed_rx.stats()
        # The bare AEAD, for reference.
        from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

        aead = ChaCha20Poly1305(bytes(32))
        n, aad = nonce(1), bytes(40)
        ct = aead.encrypt(n, body, aad)
        out[name]["bare_aead_encrypt_decrypt_us"] = best_us(
            lambda: aead.decrypt(n, aead.encrypt(n, body, aad), aad), number=number
        )
        del ct
    return out


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
