"""The BeaconServer: answers SeekChat hellos so that sweeping nodes can find the cluster.

The beacon shares the node's TCP port with membership push-pull and store sync. The
node's stream dispatcher (``MembershipRunner``) reads the first frame of every inbound
stream and routes a `BeaconHello` to `BeaconServer.handle`; the beacon never reads the
socket itself in that mode. For a beacon without a membership runner (tests, tools)
`BeaconServer.handle_stream` reads the first frame itself and `BeaconServer.run`
serves a whole transport.

What a beacon tells whom:

* a hello that is not sealed with the cluster key never reaches the beacon: the frame
  layer rejects it (and a peer without the key could not read the reply anyway);
* a hello naming another cluster, or speaking no common protocol version, gets an
  `ErrorReply` with a code and no membership information — not even our cluster name;
* anything else (garbage, an oversized frame, a mute peer, another message type) gets
  nothing and is disconnected within the read deadline;
* only a correct hello gets a `BeaconReply`: cluster name, this node's identity and a
  handful of live members, sampled at random so load spreads over the cluster.

Every refusal is counted in `BeaconServer.stats` and logged at debug with the peer.
Each stream is handled in its own task by the transport (which caps concurrent inbound
streams); the beacon does a few microseconds of work per hello and holds no lock, so a
burst of connects from a large sweep never blocks membership traffic.
"""

from __future__ import annotations

import contextlib
import logging
import random
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, NoReturn

import attrs
import trio

from beethoven.address import Address
from beethoven.discovery.seekchat import (
    ERR_VERSION,
    ERR_WRONG_CLUSTER,
    PEER_ERRORS,
    SEEKCHAT_MAX_FRAME,
    ChannelFactory,
    MessageChannel,
    classify_error,
    default_channel_factory,
)
from beethoven.wire.messages import (
    PROTOCOL_MAX,
    PROTOCOL_MIN,
    BeaconHello,
    BeaconMember,
    BeaconReply,
    ErrorReply,
    Message,
)

if TYPE_CHECKING:
    from beethoven.transport.base import Transport
    from beethoven.wire.security import Keyring

__all__ = ["BeaconServer", "BeaconStats"]

logger = logging.getLogger(__name__)


@attrs.frozen
class BeaconStats:
    """Counters of one `BeaconServer` (a snapshot).

    Attributes:
        answered: hellos answered with a `BeaconReply`.
        wrong_cluster: hellos naming another cluster (refused, no member info).
        bad_version: hellos with no protocol version in common (refused).
        bad_request: first frames that were another message type (dropped).
        auth_failures: first frames that failed authentication (`handle_stream` only;
            under the runner, the runner counts them as bad first frames).
        garbage: undecodable or oversized first frames (`handle_stream` only).
        timeouts: peers that sent no complete hello within the read deadline
            (`handle_stream` only), or did not take the reply in time.
        closed: peers that closed or reset before a complete hello.
        send_failures: replies that could not be delivered.
    """

    answered: int = 0
    wrong_cluster: int = 0
    bad_version: int = 0
    bad_request: int = 0
    auth_failures: int = 0
    garbage: int = 0
    timeouts: int = 0
    closed: int = 0
    send_failures: int = 0

    @property
    def refused(self) -> int:
        """Every stream that got no membership information."""
        return (
            self.wrong_cluster
            + self.bad_version
            + self.bad_request
            + self.auth_failures
            + self.garbage
            + self.timeouts
            + self.closed
        )


@attrs.define
class _Counters:
    answered: int = 0
    wrong_cluster: int = 0
    bad_version: int = 0
    bad_request: int = 0
    auth_failures: int = 0
    garbage: int = 0
    timeouts: int = 0
    closed: int = 0
    send_failures: int = 0


class BeaconServer:
    """Answers SeekChat hellos of our cluster with our identity and a few live members.

    Args:
        cluster: the cluster name a hello must carry.
        name: this node's name.
        addr: this node's advertised address (what joiners should push-pull with).
        members: returns live members to offer (self may be included; it is removed).
            Called once per answered hello; keep it cheap (a snapshot).
        keyring: cluster keys for `handle_stream` (frames sealed), or ``None``.
        read_timeout: seconds a peer gets to deliver its hello, and to take our reply.
        max_members: members offered per reply at most.
        max_frame: largest hello frame accepted by `handle_stream`.
        rng: randomness for sampling members (inject a seeded one in tests).
        channel_factory: builds framed channels in `handle_stream` (tests inject fakes).
    """

    def __init__(
        self,
        *,
        cluster: str,
        name: str,
        addr: Address,
        members: Callable[[], Sequence[BeaconMember]],
        keyring: Keyring | None = None,
        read_timeout: float = 2.0,
        max_members: int = 8,
        max_frame: int = SEEKCHAT_MAX_FRAME,
        rng: random.Random | None = None,
        channel_factory: ChannelFactory | None = None,
    ) -> None:
        if read_timeout <= 0:
            raise ValueError("read_timeout must be positive")
        if max_members < 0:
            raise ValueError("max_members must not be negative")
        self.cluster = cluster
        self.name = name
        self.addr = addr
        self._members = members
        self._keyring = keyring
        self._read_timeout = read_timeout
        self._max_members = max_members
        self._max_frame = max_frame
        self._rng = rng or random.Random()
        self._factory = channel_factory or default_channel_factory
        self._n = _Counters()

    def stats(self) -> BeaconStats:
        """Return a snapshot of the beacon's counters."""
        return BeaconStats(**attrs.asdict(self._n))

    def reply_for(self, hello: BeaconHello) -> Message:
        """Decide the answer to one hello (pure; counts the decision).

        Args:
            hello: the received hello (already authenticated by the frame layer).

        Returns:
            A `BeaconReply` for a hello of our cluster and a common version, else an
            `ErrorReply` that carries no membership information.
        """
        if hello.cluster != self.cluster:
            self._n.wrong_cluster += 1
            logger.debug("beacon: hello from %r for another cluster", hello.sender)
            return ErrorReply(code=ERR_WRONG_CLUSTER, reason="cluster name mismatch")
        if hello.vmax < PROTOCOL_MIN or hello.vmin > PROTOCOL_MAX:
            self._n.bad_version += 1
            logger.debug(
                "beacon: hello from %r speaks %d..%d", hello.sender, hello.vmin, hello.vmax
            )
            return ErrorReply(
                code=ERR_VERSION, reason=f"supported versions {PROTOCOL_MIN}..{PROTOCOL_MAX}"
            )
        self._n.answered += 1
        return BeaconReply(
            cluster=self.cluster, name=self.name, addr=self.addr, members=self._offer()
        )

    def _offer(self) -> tuple[BeaconMember, ...]:
        try:
            live = [m for m in self._members() if m.name != self.name]
        except Exception:
            # A failing member snapshot must not take the beacon down; answer with self only.
            logger.exception("beacon: the members callable failed")
            live = []
        if len(live) > self._max_members:
            live = self._rng.sample(live, self._max_members)
        return tuple(live)

    async def handle(self, channel: MessageChannel, peer: Address, first: Message) -> None:
        """Answer one inbound stream whose first frame has already been read.

        This is the handler the node's stream dispatcher calls for a `BeaconHello`
        (``runner.add_stream_handler(BeaconHello, beacon.handle)``). It sends at most
        one frame, within the read deadline, and returns; the caller closes the
        channel. It never raises for anything the peer does.

        Args:
            channel: the framed channel the first message came from.
            peer: the peer's address, for logs.
            first: the first message of the stream.
        """
        if not isinstance(first, BeaconHello):
            self._n.bad_request += 1
            logger.debug("beacon: %s opened with %s, dropped", peer, type(first).__name__)
            return
        answer = self.reply_for(first)
        try:
            with trio.fail_after(self._read_timeout):
                await channel.send(answer)
        except trio.TooSlowError:
            self._n.timeouts += 1
            logger.debug("beacon: %s did not take the reply in time", peer)
        except PEER_ERRORS as exc:
            self._n.send_failures += 1
            logger.debug("beacon: reply to %s failed: %r", peer, exc)

    async def handle_stream(self, stream: trio.abc.Stream, peer: Address) -> None:
        """Serve one raw inbound stream: read the hello within the deadline, answer, close.

        Use this when no membership runner dispatches streams (a beacon-only process,
        tests). Garbage, failed authentication, oversized frames and mute peers are
        counted and dropped within ``read_timeout``.

        Args:
            stream: the accepted stream (closed on return).
            peer: the peer's address.
        """
        channel = self._factory(stream, self._keyring, self._max_frame, self._read_timeout)
        try:
            try:
                with trio.fail_after(self._read_timeout):
                    first = await channel.receive()
            except PEER_ERRORS as exc:
                kind = classify_error(exc)
                if kind == "auth":
                    self._n.auth_failures += 1
                elif kind == "timeout":
                    self._n.timeouts += 1
                elif kind == "closed":
                    self._n.closed += 1
                else:
                    self._n.garbage += 1
                logger.debug("beacon: dropped %s (%s): %r", peer, kind, exc)
                return
            await self.handle(channel, peer, first)
        finally:
            with (
                trio.CancelScope(shield=True),
                trio.move_on_after(0.5),
                contextlib.suppress(*PEER_ERRORS),
            ):
                await channel.aclose()

    async def run(
        self,
        transport: Transport,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> NoReturn:
        """Serve every inbound stream of *transport* as a beacon, until cancelled.

        Only for a process without a membership runner; a full node routes hellos to
        `handle` instead, so the beacon and push-pull share one port.

        Args:
            transport: a bound transport; its ``serve_streams`` caps concurrency.
            task_status: ``started()`` once streams are being accepted.
        """
        await transport.serve_streams(self.handle_stream, task_status=task_status)
