"""Every timing, fanout and size parameter of the SWIM + Lifeguard core, with presets.

`SwimParams` is a frozen attrs record. The presets are classmethods:

* `SwimParams.lan` — the default: data-centre latency, tuned to detect a crash at
  N = 100 in under 5 s median while keeping zero false deaths at 10 % loss;
* `SwimParams.wan` — slow links, long timeouts;
* `SwimParams.local` — one host or a very fast network (tests, demos);
* `SwimParams.memberlist` — hashicorp/memberlist's ``DefaultLANConfig`` with every
  Beethoven extension switched off, for side-by-side comparison.

The formulas that use these values are in ``specs/membership.md``.
"""

from __future__ import annotations

import math
from typing import Any

import attrs

from beethoven.errors import ConfigError

__all__ = ["SwimParams", "pushpull_scale", "retransmit_limit", "suspicion_timeout"]


def _positive(_inst: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not value > 0:
        raise ConfigError(f"{attribute.name} must be > 0, got {value!r}")


def _non_negative(_inst: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if value < 0:
        raise ConfigError(f"{attribute.name} must be >= 0, got {value!r}")


@attrs.frozen
class SwimParams:
    """Parameters of the membership core. All durations are in seconds.

    Attributes:
        probe_interval: time between two probes of this node (× local health).
        probe_timeout: wait for a direct ack before indirect probes (× local health).
        indirect_checks: k, members asked to probe the target indirectly.
        tcp_fallback: also probe over TCP (a `StreamRequest`) when the direct ping fails.
        gossip_interval: period of the gossip tick (only runs while facts are queued).
        gossip_nodes: members each gossip tick sends to.
        gossip_to_dead: dead members stay gossip targets this long (so they can refute).
        relay_gap: a fresh fact triggers a gossip round at most this long after the
            previous one instead of waiting for the tick; ``None`` disables the relay.
        retransmit_mult: a queued fact is sent ``retransmit_mult·ceil(log10(N+1))`` times.
        suspicion_mult: minimum suspicion timeout is
            ``suspicion_mult·max(1, log10 N)·probe_interval``.
        suspicion_max_mult: maximum suspicion timeout = this × the minimum.
        suspicion_confirmations: independent accusers needed to shrink the timeout
            from the maximum to the minimum (Lifeguard's k).
        reprobe_fanout: expected number of members that probe a freshly suspected
            member at their next probe tick (0 disables re-probing).
        local_health: enable Lifeguard's local health multiplier, the stall guard and
            the inconclusive-probe rule.
        inconclusive_probes: with local health on, a failed probe that got no nack
            from any relay raises no suspicion.
        awareness_max: local health multiplier ceiling (score 0..awareness_max-1,
            timeouts scaled by score+1).
        stall_threshold: a timer firing this late proves our own loop stalled.
        pushpull_interval: base period of anti-entropy (scaled with N).
        pushpull_scale_threshold: N above which the push-pull period grows with log2 N.
        reconnect_interval: period of the attempt to push-pull with a random dead
            member (heals partitions); 0 disables.
        join_sync_rounds: early push-pulls with a random member after a successful
            join (at ``join_sync_delay``, then doubling), so a node that joined in a
            burst learns the members that joined right after it (which no one
            relays to it: they learned each other from join replies); 0 disables.
        join_sync_delay: delay of the first early push-pull after a join.
        stream_timeout: timeout of push-pull and join streams.
        reap_after: dead and left members are forgotten this long after their last change.
        udp_payload: datagram payload budget in bytes.
        datagram_overhead: bytes reserved per datagram for framing and encryption.
        max_meta: largest accepted per-node metadata, in bytes.
    """

    probe_interval: float = attrs.field(default=0.8, validator=_positive)
    probe_timeout: float = attrs.field(default=0.4, validator=_positive)
    indirect_checks: int = attrs.field(default=3, validator=_non_negative)
    tcp_fallback: bool = True
    gossip_interval: float = attrs.field(default=0.2, validator=_positive)
    gossip_nodes: int = attrs.field(default=3, validator=_positive)
    gossip_to_dead: float = attrs.field(default=30.0, validator=_non_negative)
    relay_gap: float | None = 0.02
    retransmit_mult: int = attrs.field(default=4, validator=_positive)
    suspicion_mult: float = attrs.field(default=1.25, validator=_positive)
    suspicion_max_mult: float = attrs.field(default=6.0, validator=_positive)
    suspicion_confirmations: int = attrs.field(default=3, validator=_non_negative)
    reprobe_fanout: int = attrs.field(default=8, validator=_non_negative)
    local_health: bool = True
    inconclusive_probes: bool = True
    awareness_max: int = attrs.field(default=8, validator=_positive)
    stall_threshold: float = attrs.field(default=0.2, validator=_positive)
    pushpull_interval: float = attrs.field(default=30.0, validator=_positive)
    pushpull_scale_threshold: int = attrs.field(default=32, validator=_positive)
    reconnect_interval: float = attrs.field(default=30.0, validator=_non_negative)
    join_sync_rounds: int = attrs.field(default=3, validator=_non_negative)
    join_sync_delay: float = attrs.field(default=1.0, validator=_positive)
    stream_timeout: float = attrs.field(default=10.0, validator=_positive)
    reap_after: float = attrs.field(default=24 * 3600.0, validator=_positive)
    udp_payload: int = attrs.field(default=1400, validator=_positive)
    datagram_overhead: int = attrs.field(default=64, validator=_non_negative)
    max_meta: int = attrs.field(default=512, validator=_non_negative)

    def __attrs_post_init__(self) -> None:
        if self.probe_timeout >= self.probe_interval:
            raise ConfigError("probe_timeout must be shorter than probe_interval")
        if self.suspicion_max_mult < 1:
            raise ConfigError("suspicion_max_mult must be >= 1")
        if self.udp_payload <= self.datagram_overhead + 64:
            raise ConfigError("udp_payload too small for datagram_overhead")

    @classmethod
    def lan(cls) -> SwimParams:
        """The default preset: a data-centre network (see ``specs/membership.md``)."""
        return cls()

    @classmethod
    def wan(cls) -> SwimParams:
        """Slow, lossy links between sites: long timeouts, conservative suspicion."""
        return cls(
            probe_interval=5.0,
            probe_timeout=3.0,
            gossip_interval=0.5,
            gossip_nodes=4,
            gossip_to_dead=60.0,
            relay_gap=0.1,
            suspicion_mult=3.0,
            stall_threshold=1.0,
            pushpull_interval=60.0,
            reconnect_interval=60.0,
            stream_timeout=30.0,
        )

    @classmethod
    def local(cls) -> SwimParams:
        """One host or a very fast network: short timeouts, fewer retransmits."""
        return cls(
            probe_interval=0.5,
            probe_timeout=0.2,
            indirect_checks=2,
            suspicion_mult=1.0,
            gossip_interval=0.1,
            gossip_to_dead=15.0,
            relay_gap=0.01,
            retransmit_mult=3,
            stall_threshold=0.1,
            pushpull_interval=15.0,
            reconnect_interval=15.0,
            stream_timeout=5.0,
        )

    @classmethod
    def memberlist(cls) -> SwimParams:
        """hashicorp/memberlist ``DefaultLANConfig``, Beethoven extensions off.

        ProbeInterval 1 s, ProbeTimeout 500 ms, IndirectChecks 3, GossipInterval
        200 ms, GossipNodes 3, GossipToTheDeadTime 30 s, RetransmitMult 4,
        SuspicionMult 4, SuspicionMaxTimeoutMult 6, AwarenessMaxMultiplier 8,
        PushPullInterval 30 s, UDPBufferSize 1400; memberlist expects
        ``SuspicionMult - 2`` confirmations, has no fresh-fact relay, no suspect
        re-probe, no stall guard, no inconclusive-probe rule and no reconnect.
        """
        return cls(
            probe_interval=1.0,
            probe_timeout=0.5,
            relay_gap=None,
            inconclusive_probes=False,
            suspicion_mult=4.0,
            suspicion_confirmations=2,
            reprobe_fanout=0,
            reconnect_interval=0.0,
            join_sync_rounds=0,
            stall_threshold=1e9,
            datagram_overhead=0,
        )

    @classmethod
    def preset(cls, name: str) -> SwimParams:
        """Return the preset called *name* (``lan``, ``wan``, ``local`` or ``memberlist``).

        Raises:
            ConfigError: no such preset.
        """
        factories = {
            "lan": cls.lan,
            "wan": cls.wan,
            "local": cls.local,
            "memberlist": cls.memberlist,
        }
        try:
            return factories[name]()
        except KeyError:
            raise ConfigError(f"unknown membership preset {name!r}") from None


def retransmit_limit(mult: int, n: int) -> int:
    """How many times a queued fact is sent: ``mult·ceil(log10(n+1))``.

    Args:
        mult: `SwimParams.retransmit_mult`.
        n: the number of members (alive or suspect), self included.
    """
    return mult * max(1, math.ceil(math.log10(n + 1)))


def suspicion_timeout(mult: float, n: int, interval: float) -> float:
    """Minimum suspicion timeout: ``mult·max(1, log10 n)·interval`` seconds."""
    return mult * max(1.0, math.log10(max(1, n))) * interval


def pushpull_scale(interval: float, threshold: int, n: int) -> float:
    """Push-pull period for *n* members (memberlist's pushPullScale).

    *interval* up to *threshold* members, then ``interval·(ceil(log2 n − log2 threshold) + 1)``.
    """
    if n <= threshold:
        return interval
    return interval * (math.ceil(math.log2(n) - math.log2(threshold)) + 1.0)
