"""The member table: who is in the cluster, at which generation and incarnation.

A `Member` is an immutable record of one fact (a new fact makes a new record), so
tables can share records: the simulator bootstraps thousands of cores from one
`TableSnapshot` without copying members.

Precedence (``specs/membership.md`` §Precedence) is a lexicographic order on
``(generation, incarnation, status rank)`` with ranks alive 0 < suspect 1 <
dead 2 < left 3: a fact replaces what a table holds iff its key is strictly greater.

The table also owns the probe order: a shuffled list of names walked round-robin,
new members inserted at a random position (swap-insert, O(1)), reshuffled at each
wrap-around; and an XOR-of-hashes root over every member's digest, updated in O(1)
per change, which push-pull compares first.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator

from beethoven.address import Address
from beethoven.wire.messages import (
    PROTOCOL_MAX,
    PROTOCOL_MIN,
    MemberDigest,
    MemberState,
    MemberStatus,
)

__all__ = ["Member", "MemberTable", "TableSnapshot", "fact_key", "member_hash", "supersedes"]

_LIVE = (MemberStatus.ALIVE, MemberStatus.SUSPECT)


def fact_key(generation: int, incarnation: int, status: int) -> tuple[int, int, int]:
    """The precedence key of a fact: compare keys to decide which fact wins."""
    return (generation, incarnation, status)


def supersedes(new: tuple[int, int, int], old: tuple[int, int, int]) -> bool:
    """True when a fact with key *new* replaces a held fact with key *old*."""
    return new > old


def member_hash(name: str, generation: int, incarnation: int, status: int) -> int:
    """A 128-bit digest of one member's precedence key (stable across processes)."""
    data = f"{name}\x00{generation}\x00{incarnation}\x00{status}".encode()
    return int.from_bytes(hashlib.blake2b(data, digest_size=16).digest(), "big")


class Member:
    """One member as a table knows it. Immutable by convention: replace, never mutate.

    Args:
        name: unique node name.
        addr: its UDP/TCP address.
        generation: boot timestamp of this life (a restart gets a greater one).
        incarnation: SWIM incarnation within the generation.
        status: a `MemberStatus` value.
        meta: application metadata (bounded by ``SwimParams.max_meta``).
        last_change: driver time at which this table's status for it last changed.
        vmin: lowest protocol version it speaks.
        vmax: highest protocol version it speaks.
    """

    __slots__ = (
        "addr",
        "generation",
        "hash",
        "incarnation",
        "last_change",
        "meta",
        "name",
        "status",
        "vmax",
        "vmin",
    )

    def __init__(
        self,
        name: str,
        addr: Address,
        generation: int,
        incarnation: int,
        status: int,
        meta: bytes = b"",
        last_change: float = 0.0,
        vmin: int = PROTOCOL_MIN,
        vmax: int = PROTOCOL_MAX,
    ) -> None:
        self.name = name
        self.addr = addr
        self.generation = generation
        self.incarnation = incarnation
        self.status = status
        self.meta = meta
        self.last_change = last_change
        self.vmin = vmin
        self.vmax = vmax
        self.hash = member_hash(name, generation, incarnation, status)

    def __repr__(self) -> str:
        return (
            f"Member({self.name!r}, gen={self.generation}, inc={self.incarnation}, "
            f"status={self.status})"
        )

    @property
    def key(self) -> tuple[int, int, int]:
        """The precedence key ``(generation, incarnation, status)``."""
        return (self.generation, self.incarnation, self.status)

    @property
    def live(self) -> bool:
        """True when alive or suspect (the node counts as online)."""
        return self.status in _LIVE

    def evolve(
        self,
        *,
        incarnation: int | None = None,
        status: int | None = None,
        last_change: float | None = None,
    ) -> Member:
        """A copy with some of incarnation, status and last_change replaced."""
        return Member(
            self.name,
            self.addr,
            self.generation,
            self.incarnation if incarnation is None else incarnation,
            self.status if status is None else status,
            self.meta,
            self.last_change if last_change is None else last_change,
            self.vmin,
            self.vmax,
        )

    def digest(self) -> MemberDigest:
        """The compact wire digest of this member."""
        return MemberDigest(self.name, self.generation, self.incarnation, self.status)

    def state(self) -> MemberState:
        """The full wire state of this member (``last_change`` is not shipped)."""
        return MemberState(
            self.name,
            self.addr,
            self.generation,
            self.incarnation,
            self.status,
            self.meta,
            0,
            self.vmin,
            self.vmax,
        )


class TableSnapshot:
    """A member table to install, unchanged, into many cores (simulator bootstrap).

    Args:
        members: every member, self included; records are shared, the dict is copied.
    """

    __slots__ = ("live", "members", "order", "root")

    def __init__(self, members: dict[str, Member], rng: random.Random) -> None:
        self.members = members
        self.order = list(members)
        rng.shuffle(self.order)
        root = 0
        live = 0
        for m in members.values():
            root ^= m.hash
            if m.live:
                live += 1
        self.root = root
        self.live = live


class MemberTable:
    """Members by name, the probe order, the digest root and the live count.

    Args:
        self_name: the local node's name (never probed, never picked at random).
        rng: the core's seeded random source.
    """

    __slots__ = (
        "_idx",
        "_m",
        "_order",
        "_order_shared",
        "_rng",
        "_walked",
        "live_count",
        "root",
        "self_name",
    )

    def __init__(self, self_name: str, rng: random.Random) -> None:
        self.self_name = self_name
        self._rng = rng
        self._m: dict[str, Member] = {}
        self._order: list[str] = []
        self._order_shared = False
        self._idx = 0
        self._walked = 0
        self.root = 0
        self.live_count = 0

    def install(self, snapshot: TableSnapshot) -> None:
        """Replace the whole table with *snapshot* (its probe order is shared copy-on-write)."""
        self._m = dict(snapshot.members)
        self._order = snapshot.order
        self._order_shared = True
        # Walk the shared order from a random offset, all the way round, before the
        # first reshuffle: every member is probed once by every node per pass.
        self._idx = self._rng.randrange(len(self._order)) if self._order else 0
        self._walked = 0
        self.root = snapshot.root
        self.live_count = snapshot.live

    def __len__(self) -> int:
        return len(self._m)

    def __contains__(self, name: str) -> bool:
        return name in self._m

    def __iter__(self) -> Iterator[Member]:
        return iter(list(self._m.values()))

    def get(self, name: str) -> Member | None:
        """The member called *name*, or None."""
        return self._m.get(name)

    def root_bytes(self) -> bytes:
        """The 16-byte XOR-of-hashes digest root."""
        return self.root.to_bytes(16, "big")

    def put(self, member: Member) -> Member | None:
        """Store *member* (replacing any record of the same name); return the old record."""
        name = member.name
        old = self._m.get(name)
        self._m[name] = member
        if old is None:
            self.root ^= member.hash
            if member.status in _LIVE:
                self.live_count += 1
            self._insert_order(name)
        else:
            self.root ^= old.hash ^ member.hash
            self.live_count += (member.status in _LIVE) - (old.status in _LIVE)
        return old

    def remove(self, name: str) -> Member | None:
        """Forget *name* entirely (reaping); the probe order is cleaned lazily."""
        old = self._m.pop(name, None)
        if old is not None:
            self.root ^= old.hash
            if old.status in _LIVE:
                self.live_count -= 1
        return old

    def _own_order(self) -> None:
        if self._order_shared:
            self._order = list(self._order)
            self._order_shared = False

    def _insert_order(self, name: str) -> None:
        self._own_order()
        order = self._order
        n = len(order)
        order.append(name)
        if n:
            j = self._rng.randrange(n + 1)
            order[j], order[n] = order[n], order[j]

    def _reshuffle(self) -> None:
        self._own_order()
        m = self._m
        self._order = [name for name in self._order if name in m]
        self._rng.shuffle(self._order)
        self._idx = 0
        self._walked = 0

    def next_probe(self) -> Member | None:
        """The next live member other than self in round-robin order, or None."""
        m = self._m
        self_name = self.self_name
        for _ in range(len(self._order) + 2):
            if self._walked >= len(self._order):
                self._reshuffle()
                if not self._order:
                    return None
            if self._idx >= len(self._order):
                self._idx = 0
            name = self._order[self._idx]
            self._idx += 1
            self._walked += 1
            member = m.get(name)
            if member is not None and name != self_name and member.status in _LIVE:
                return member
        return None

    def random_live(self, k: int, exclude: tuple[str, ...] = ()) -> list[Member]:
        """Up to *k* distinct random live members, never self nor one in *exclude*."""
        if k <= 0:
            return []
        order = self._order
        n = len(order)
        if n == 0:
            return []
        m = self._m
        picked: dict[str, Member] = {}
        rand = self._rng.random
        for _ in range(3 * k + 8):
            name = order[int(rand() * n)]
            if name in picked or name == self.self_name or name in exclude:
                continue
            member = m.get(name)
            if member is None or member.status not in _LIVE:
                continue
            picked[name] = member
            if len(picked) >= k:
                return list(picked.values())
        # Rejection sampling failed (few live members): scan.
        pool = [
            mem
            for mem in m.values()
            if mem.status in _LIVE
            and mem.name != self.self_name
            and mem.name not in exclude
            and mem.name not in picked
        ]
        need = k - len(picked)
        if len(pool) > need:
            pool = self._rng.sample(pool, need)
        return list(picked.values()) + pool

    def digests(self) -> tuple[MemberDigest, ...]:
        """Digests of every member, sorted by name."""
        return tuple(self._m[name].digest() for name in sorted(self._m))

    def states(self) -> tuple[MemberState, ...]:
        """Full states of every member, sorted by name."""
        return tuple(self._m[name].state() for name in sorted(self._m))
