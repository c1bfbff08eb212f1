"""The Locator: find the cluster by sweeping ``cluster_net`` (or asking ``seeds``), then join.

Bootstrap keeps the original's contract — up to ``sweeps`` passes with a random
``backoff`` pause between them; join through what answered and become ``clustered``,
or become ``standalone`` — and fixes what it got wrong:

* a sweep is concurrent (``sweep_concurrency`` exchanges in flight, each bounded by
  ``connect_timeout`` and a reply deadline), so a silent ``/24`` takes about
  ``ceil(254 / 64) × 0.25 s ≈ 1 s`` instead of a minute;
* the host list comes from `beethoven.discovery.netplan` (masked, capped, ``/31`` and
  ``/32`` handled, own addresses skipped): the Locator never contacts anything else,
  and join targets it hands to membership are filtered by the same rule;
* after bootstrap it keeps re-sweeping: every ``resweep_interval`` (jittered) while
  standalone, and ``clustered_resweep_factor`` times slower while clustered. A beacon
  of our cluster whose node is not among our members means a split cluster (nodes
  started at the same moment, a healed partition); the Locator joins through it and
  membership push-pull, which is symmetric, merges the two views.

The Locator knows nothing of membership internals: it takes a ``join`` callable
(push-pull through these addresses, True if it joined) and a ``members`` callable (the
names of the other online members).
"""

from __future__ import annotations

import logging
import math
import random
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Iterable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

import attrs
import trio

from beethoven.address import Address, parse_address
from beethoven.discovery.netplan import SweepPlan, count_hosts, parse_networks, plan_sweep
from beethoven.discovery.seekchat import (
    SEEKCHAT_MAX_FRAME,
    ChannelFactory,
    HelloOutcome,
    HelloResult,
    exchange,
)
from beethoven.errors import ConfigError, NameConflictError
from beethoven.wire.messages import BeaconReply

if TYPE_CHECKING:
    from beethoven.config import Config
    from beethoven.transport.base import Transport
    from beethoven.wire.security import Keyring

__all__ = [
    "Found",
    "JoinFn",
    "Locator",
    "LocatorSettings",
    "LocatorStats",
    "LocatorStatus",
    "MembersFn",
    "SweepResult",
]

logger = logging.getLogger(__name__)

JoinFn = Callable[[Sequence[Address]], Awaitable[bool]]
"""``await join(addresses)``: push-pull through these addresses; True if it joined."""

MembersFn = Callable[[], Collection[str]]
"""``members()``: names of the *other* members currently online (empty = alone)."""


# --- settings ---------------------------------------------------------------------------


def _number(name: str, value: Any, *, allow_zero: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{name}: expected a number, got {value!r}")
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"{name}: must be a positive number, got {value!r}")


def _whole(name: str, value: Any, *, maximum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= maximum:
        raise ConfigError(f"{name}: must be a whole number 1..{maximum}, got {value!r}")


def _to_str_tuple(value: str | Iterable[str]) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(value)


def _to_seeds(value: Iterable[Address | str]) -> tuple[Address | str, ...]:
    return (value,) if isinstance(value, str) else tuple(value)


@attrs.frozen(kw_only=True)
class LocatorSettings:
    """What the Locator sweeps, how fast and how often (validated on construction).

    The node's `Config` maps onto this with `from_config`; the keys and defaults are
    the same.

    Attributes:
        cluster_net: CIDR network(s) to sweep, IPv4 or IPv6.
        port: the beacon port, the same on every node.
        seeds: explicit beacon addresses (``Address`` or ``"host:port"`` text, the port
            defaulting to *port*); when set, they replace the sweep.
        sweeps: passes at bootstrap before starting standalone.
        connect_timeout: seconds allowed for one TCP connect.
        reply_timeout: seconds allowed for the hello and the reply once connected.
        backoff: ``(low, high)`` seconds of uniform random pause between sweeps.
        sweep_concurrency: exchanges in flight at once during a sweep.
        max_sweep_hosts: refuse networks holding more hosts than this.
        resweep_interval: mean seconds between re-sweeps while standalone.
        clustered_resweep_factor: re-sweeps are this many times rarer while clustered.
        resweep_jitter: each re-sweep pause is scaled by a uniform factor in
            ``[1 - jitter, 1 + jitter]`` so nodes never sweep in lock-step.
        max_join_targets: addresses handed to ``join`` at most per attempt.
    """

    cluster_net: tuple[str, ...] = attrs.field(default=("127.0.0.0/29",), converter=_to_str_tuple)
    port: int = 33000
    seeds: tuple[Address | str, ...] = attrs.field(default=(), converter=_to_seeds)
    sweeps: int = 3
    connect_timeout: float = 0.25
    reply_timeout: float = 1.0
    backoff: tuple[float, float] = (0.15, 0.30)
    sweep_concurrency: int = 64
    max_sweep_hosts: int = 4096
    resweep_interval: float = 30.0
    clustered_resweep_factor: float = 4.0
    resweep_jitter: float = 0.25
    max_join_targets: int = 4

    def __attrs_post_init__(self) -> None:
        """Validate every field; raise `ConfigError` naming the first bad one."""
        if isinstance(self.port, bool) or not isinstance(self.port, int):
            raise ConfigError(f"port: expected a whole number, got {self.port!r}")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port: must be 0..65535, got {self.port!r}")
        if self.port == 0 and not self.seeds:
            raise ConfigError("port: 0 (any free port) cannot be swept; set a port or seeds")
        _whole("sweeps", self.sweeps, maximum=100)
        _number("connect_timeout", self.connect_timeout)
        _number("reply_timeout", self.reply_timeout)
        if not isinstance(self.backoff, tuple | list) or len(self.backoff) != 2:
            raise ConfigError(f"backoff: expected (low, high), got {self.backoff!r}")
        low, high = self.backoff
        _number("backoff", low, allow_zero=True)
        _number("backoff", high, allow_zero=True)
        if low > high:
            raise ConfigError(f"backoff: low {low} is above high {high}")
        _whole("sweep_concurrency", self.sweep_concurrency, maximum=4096)
        _whole("max_sweep_hosts", self.max_sweep_hosts, maximum=2**20)
        _number("resweep_interval", self.resweep_interval)
        _number("clustered_resweep_factor", self.clustered_resweep_factor)
        if self.clustered_resweep_factor < 1:
            raise ConfigError(
                f"clustered_resweep_factor: must be at least 1, got {self.clustered_resweep_factor}"
            )
        _number("resweep_jitter", self.resweep_jitter, allow_zero=True)
        if self.resweep_jitter >= 1:
            raise ConfigError(f"resweep_jitter: must be below 1, got {self.resweep_jitter}")
        _whole("max_join_targets", self.max_join_targets, maximum=64)
        networks = parse_networks(self.cluster_net)
        total = count_hosts(networks)
        if total > self.max_sweep_hosts:
            # plan_sweep words the error; call it to raise the same message.
            plan_sweep(self.cluster_net, max_sweep_hosts=self.max_sweep_hosts)
        for seed in self.seeds:
            if isinstance(seed, Address):
                continue
            if not isinstance(seed, str):
                raise ConfigError(f"seeds: expected 'host:port' text, got {seed!r}")
            try:
                parse_address(seed, default_port=self.port)
            except ConfigError as exc:
                raise ConfigError(f"seeds: {exc}") from None

    @property
    def seed_addresses(self) -> tuple[Address, ...]:
        """The seeds as `Address` records (port defaulting to `port`)."""
        return tuple(
            seed if isinstance(seed, Address) else parse_address(seed, default_port=self.port)
            for seed in self.seeds
        )

    @classmethod
    def from_config(cls, config: Config, **overrides: Any) -> LocatorSettings:
        """Build settings from a node `Config` (same keys, same defaults).

        Args:
            config: the node configuration.
            **overrides: settings that `Config` does not carry (``reply_timeout``,
                ``clustered_resweep_factor``, ...).

        Returns:
            The validated settings.
        """
        values: dict[str, Any] = {
            "cluster_net": config.cluster_net,
            "port": config.port,
            "seeds": config.seeds,
            "sweeps": config.sweeps,
            "connect_timeout": config.connect_timeout,
            "backoff": tuple(config.backoff),
            "sweep_concurrency": config.sweep_concurrency,
            "max_sweep_hosts": config.max_sweep_hosts,
            "resweep_interval": config.resweep_interval,
        }
        values.update(overrides)
        return cls(**values)


# --- records ----------------------------------------------------------------------------


class LocatorStatus:
    """Where the Locator stands, as stable strings."""

    SEARCHING = "searching"  # bootstrap sweeps in progress
    CLUSTERED = "clustered"  # joined, or at least one other member is online
    STANDALONE = "standalone"  # nobody found; beacon serving, re-sweeping


@attrs.frozen
class Found:
    """A beacon of our cluster that answered a sweep.

    Attributes:
        addr: the address the sweep reached it at (inside the configured networks).
        reply: what it answered.
    """

    addr: Address
    reply: BeaconReply


@attrs.frozen
class SweepResult:
    """The outcome of one sweep.

    Attributes:
        found: beacons of our cluster, in the order they answered.
        contacted: addresses contacted.
        outcomes: `HelloOutcome` value → count, for every address contacted.
        duration: seconds the sweep took (trio clock).
    """

    found: tuple[Found, ...]
    contacted: int
    outcomes: tuple[tuple[str, int], ...]
    duration: float


@attrs.frozen
class LocatorStats:
    """Counters of one `Locator` (a snapshot).

    Attributes:
        status: a `LocatorStatus` value.
        sweeps: sweeps completed.
        contacted: addresses contacted over all sweeps.
        beacons_found: beacon replies of our cluster over all sweeps.
        no_answer: contacts that were refused, unreachable or timed out on connect.
        wrong_cluster: beacons of another cluster.
        refused: beacons that answered with an error (version, cluster name).
        bad_replies: contacts that answered garbage, failed authentication, timed out
            or closed after connecting.
        joins: calls to ``join``.
        joins_failed: calls to ``join`` that returned False or raised.
        merges: successful joins made while already clustered (split clusters healed).
        last_sweep_duration: seconds the last sweep took.
    """

    status: str
    sweeps: int = 0
    contacted: int = 0
    beacons_found: int = 0
    no_answer: int = 0
    wrong_cluster: int = 0
    refused: int = 0
    bad_replies: int = 0
    joins: int = 0
    joins_failed: int = 0
    merges: int = 0
    last_sweep_duration: float = 0.0


@attrs.define
class _Counters:
    sweeps: int = 0
    contacted: int = 0
    beacons_found: int = 0
    no_answer: int = 0
    wrong_cluster: int = 0
    refused: int = 0
    bad_replies: int = 0
    joins: int = 0
    joins_failed: int = 0
    merges: int = 0
    last_sweep_duration: float = 0.0


# --- the service ------------------------------------------------------------------------


class Locator:
    """Finds the cluster by sweeping (or through seeds), joins it, and keeps looking.

    Args:
        settings: what to sweep and how.
        transport: the node's transport (``connect`` and ``local_address`` are used).
        cluster: our cluster name.
        name: this node's name (a beacon answering with it is ourselves).
        join: ``await join(addresses) -> bool`` — membership push-pull through them.
        members: names of the other online members (empty while alone).
        keyring: cluster keys (SeekChat frames sealed), or ``None`` for an open cluster.
        own_addresses: this node's IP addresses besides ``transport.local_address``
            (bind address, interface addresses); never contacted.
        rng: all randomness (back-off, jitter, join order); inject a seeded one in tests.
        channel_factory: builds framed channels (tests inject fakes).
        on_found: called for every beacon of our cluster any sweep finds (logging,
            metrics, benchmarks); must not block.

    Raises:
        ConfigError: the settings' networks exceed ``max_sweep_hosts``.
    """

    def __init__(
        self,
        settings: LocatorSettings,
        *,
        transport: Transport,
        cluster: str,
        name: str,
        join: JoinFn,
        members: MembersFn,
        keyring: Keyring | None = None,
        own_addresses: Iterable[str] = (),
        rng: random.Random | None = None,
        channel_factory: ChannelFactory | None = None,
        on_found: Callable[[Found], None] | None = None,
    ) -> None:
        self.settings = settings
        self._on_found = on_found
        self._transport = transport
        self.cluster = cluster
        self.name = name
        self._join = join
        self._members = members
        self._keyring = keyring
        self._rng = rng or random.Random()
        self._factory = channel_factory
        local = transport.local_address
        self._own_hosts = frozenset({local.host, *own_addresses})
        self._own_addr = local
        self._seeds = tuple(a for a in settings.seed_addresses if a != local)
        self.plan: SweepPlan = plan_sweep(
            settings.cluster_net,
            max_sweep_hosts=settings.max_sweep_hosts,
            own_addresses=self._own_hosts,
        )
        self._status = LocatorStatus.SEARCHING
        self._n = _Counters()
        self._wakeup = trio.Event()

    # --- public API -------------------------------------------------------------------

    @property
    def status(self) -> str:
        """The current `LocatorStatus` value.

        ``searching`` until bootstrap is done; then ``clustered`` whenever another
        member is online (whoever joined whom) and ``standalone`` otherwise.
        """
        if self._status == LocatorStatus.SEARCHING:
            return self._status
        return LocatorStatus.CLUSTERED if self._members() else self._status

    def stats(self) -> LocatorStats:
        """Return a snapshot of the Locator's counters."""
        return LocatorStats(status=self.status, **attrs.asdict(self._n))

    def targets(self) -> tuple[Address, ...]:
        """The addresses one sweep contacts, in order (the seeds when configured)."""
        if self._seeds:
            return self._seeds
        port = self.settings.port
        return tuple(Address(host, port) for host in self.plan.hosts)

    def allows(self, addr: Address) -> bool:
        """True when the Locator may contact or offer *addr* to ``join``.

        Args:
            addr: a candidate address.

        Returns:
            Whether *addr* is a configured seed, or inside ``cluster_net`` — and in
            both cases not one of this node's own addresses.
        """
        if addr == self._own_addr:
            return False
        if self._seeds:
            return addr in self._seeds
        return addr.host not in self._own_hosts and self.plan.allows(addr.host)

    def resweep_soon(self) -> None:
        """Cut the current re-sweep pause short (e.g. after a network change)."""
        self._wakeup.set()

    async def sweep(self, *, on_found: Callable[[Found], None] | None = None) -> SweepResult:
        """Contact every target once, ``sweep_concurrency`` at a time.

        Args:
            on_found: called as soon as each beacon of our cluster answers (after the
                constructor's ``on_found``).

        Returns:
            What answered. Never raises for network errors.
        """
        targets = self.targets()
        start = trio.current_time()
        found: list[Found] = []
        outcomes: Counter[str] = Counter()
        pending = iter(targets)

        async def worker() -> None:
            # Workers pull from one shared iterator: at most `sweep_concurrency`
            # exchanges are ever in flight, without a task per host.
            for addr in pending:
                result = await self._exchange(addr)
                outcomes[result.outcome] += 1
                self._count(result)
                reply = result.reply
                if reply is None:
                    continue
                if reply.name == self.name and reply.addr == self._own_addr:
                    logger.debug("locator: %s is ourselves", addr)
                    continue
                item = Found(addr=addr, reply=reply)
                found.append(item)
                if self._on_found is not None:
                    self._on_found(item)
                if on_found is not None:
                    on_found(item)

        async with trio.open_nursery() as nursery:
            for _ in range(min(self.settings.sweep_concurrency, len(targets))):
                nursery.start_soon(worker)
        duration = trio.current_time() - start
        self._n.sweeps += 1
        self._n.contacted += len(targets)
        self._n.last_sweep_duration = duration
        logger.debug(
            "locator: swept %d addresses in %.3f s, %d beacon(s)",
            len(targets),
            duration,
            len(found),
        )
        return SweepResult(
            found=tuple(found),
            contacted=len(targets),
            outcomes=tuple(sorted(outcomes.items())),
            duration=duration,
        )

    async def bootstrap(self) -> str:
        """Run the bootstrap passes: sweep, join what answered, else back off and retry.

        Returns:
            `LocatorStatus.CLUSTERED` or `LocatorStatus.STANDALONE` (also the new status).
        """
        self._status = LocatorStatus.SEARCHING
        low, high = self.settings.backoff
        joined = False
        for attempt in range(self.settings.sweeps):
            if attempt:
                await trio.sleep(self._rng.uniform(low, high))
            result = await self.sweep()
            joined = await self._join_found(result)
            if joined or self._members():
                # Joined, or someone joined *us* meanwhile (push-pull is symmetric).
                break
        self._status = (
            LocatorStatus.CLUSTERED if joined or self._members() else LocatorStatus.STANDALONE
        )
        logger.info("locator: bootstrap done, %s", self._status)
        return self._status

    async def resweep(self) -> bool:
        """One re-sweep: join through any beacon whose node is not among our members.

        Returns:
            True if it joined through something new.
        """
        result = await self.sweep()
        joined = await self._join_found(result)
        self._status = (
            LocatorStatus.CLUSTERED if joined or self._members() else LocatorStatus.STANDALONE
        )
        return joined

    def next_pause(self) -> float:
        """Seconds until the next re-sweep, for the current status, with jitter."""
        base = self.settings.resweep_interval
        if self._members():
            base *= self.settings.clustered_resweep_factor
        jitter = self.settings.resweep_jitter
        return base * self._rng.uniform(1 - jitter, 1 + jitter)

    async def run(
        self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED
    ) -> NoReturn:
        """Bootstrap, report the outcome, then re-sweep forever.

        ``await nursery.start(locator.run)`` returns `LocatorStatus.CLUSTERED` or
        `LocatorStatus.STANDALONE` once the bootstrap passes are done; the node is
        ready then. Start the beacon (or the runner that routes to it) first, so that
        nodes starting at the same moment can find this one.

        Args:
            task_status: ``started(status)`` after bootstrap.
        """
        status = await self.bootstrap()
        task_status.started(status)
        while True:
            self._wakeup = trio.Event()
            with trio.move_on_after(self.next_pause()):
                await self._wakeup.wait()
            await self.resweep()

    # --- internals ----------------------------------------------------------------------

    async def _exchange(self, addr: Address) -> HelloResult:
        if not self.allows(addr):  # pragma: no cover - targets() only yields allowed ones
            raise AssertionError(f"refusing to contact {addr}: outside the sweep plan")
        return await exchange(
            self._transport,
            addr,
            cluster=self.cluster,
            sender=self.name,
            keyring=self._keyring,
            connect_timeout=self.settings.connect_timeout,
            reply_timeout=self.settings.reply_timeout,
            max_frame=SEEKCHAT_MAX_FRAME,
            channel_factory=self._factory,
        )

    def _count(self, result: HelloResult) -> None:
        outcome = result.outcome
        n = self._n
        if outcome == HelloOutcome.BEACON:
            n.beacons_found += 1
        elif outcome == HelloOutcome.NO_ANSWER:
            n.no_answer += 1
        elif outcome == HelloOutcome.WRONG_CLUSTER:
            n.wrong_cluster += 1
        elif outcome == HelloOutcome.REFUSED:
            n.refused += 1
        else:
            n.bad_replies += 1

    def join_targets(self, found: Sequence[Found]) -> list[Address]:
        """Choose the addresses to join through from a sweep's beacons.

        Only beacons whose node is not already a member count (while alone that is
        every beacon). One beacon per distinct group comes first — a group being a
        beacon and the members it offered — so that two other split clusters are both
        merged; then offered members fill up to ``max_join_targets``. Everything is
        filtered by `allows`.

        Args:
            found: the beacons of one sweep.

        Returns:
            The addresses to hand to ``join`` (empty: nothing new).
        """
        known = set(self._members())
        # A beacon with our name at another address is kept: joining through it lets
        # membership tell whether that name is held by a live node (NameConflictError).
        fresh = [f for f in found if f.reply.name not in known]
        self._rng.shuffle(fresh)
        covered: set[str] = set()
        primary: list[Address] = []
        extra: list[Address] = []
        for item in fresh:
            if item.reply.name not in covered:
                primary.append(item.addr)
            else:
                extra.append(item.addr)
            covered.add(item.reply.name)
            for member in item.reply.members:
                covered.add(member.name)
                if member.name not in known and member.name != self.name:
                    extra.append(member.addr)
        targets: list[Address] = []
        limit = self.settings.max_join_targets
        for addr in [*primary, *extra]:
            if addr in targets or not self.allows(addr):
                continue
            if len(targets) >= max(limit, len(primary)):
                break
            targets.append(addr)
        return targets

    async def _join_found(self, result: SweepResult) -> bool:
        targets = self.join_targets(result.found)
        if not targets:
            return False
        was_clustered = bool(self._members())
        self._n.joins += 1
        try:
            ok = await self._join(targets)
        except NameConflictError:
            raise  # our name is taken: no retry can succeed, the node must stop
        except Exception:
            # The join callable belongs to membership; its failure must not stop discovery.
            logger.exception("locator: join through %s failed", targets)
            ok = False
        if not ok:
            self._n.joins_failed += 1
            logger.debug("locator: join through %s failed", targets)
            return False
        if was_clustered:
            self._n.merges += 1
            logger.info("locator: merged with a split cluster through %s", targets[0])
        else:
            logger.info("locator: joined the cluster through %s", targets[0])
        return True
