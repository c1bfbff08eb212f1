"""The ``beethoven`` command: run an agent, ask it questions, make keys, demo, simulate.

Exit codes (every subcommand):

* 0 — success (an agent stopped by SIGTERM left the cluster gracefully);
* 1 — a runtime failure: an unreachable agent, a wrong key, a port in use, ...;
* 2 — bad usage: a bad flag, a bad or unreadable config file, a bad value;
* 130 — stopped by Ctrl-C (SIGINT), after a clean stop (an agent has left the
  cluster); 143 — another command stopped by SIGTERM before it finished.

Errors are printed as one line on stderr, never as a traceback.

Ctrl-C is handled one way for every command: the trio commands (agent, demo,
members/roles/status) run under `run_interruptible`, where SIGINT or SIGTERM
cancels the command's work — its nodes leave the cluster gracefully on the way
out — and then `Interrupted` says which signal; `sim`, plain Python, gets a
``KeyboardInterrupt``. `main` turns both into one line and the exit code.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import trio

from beethoven import __version__
from beethoven.address import parse_address
from beethoven.config import Config, load_config
from beethoven.errors import BeethovenError, ConfigError
from beethoven.wire.framing import FrameChannel
from beethoven.wire.messages import Query, QueryReply
from beethoven.wire.security import Keyring, generate_key, key_to_string

__all__ = ["Interrupted", "main", "run_interruptible"]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
#: 128 + SIGINT, what a shell reports for a command stopped by Ctrl-C.
EXIT_INTERRUPTED = 128 + signal.SIGINT

_T = TypeVar("_T")


class _UsageError(Exception):
    """Bad flags or configuration: exit code 2."""


class Interrupted(Exception):
    """A signal stopped a command after its work was cancelled and cleaned up.

    Attributes:
        signum: the signal (``SIGINT`` for Ctrl-C, or ``SIGTERM``).
    """

    def __init__(self, signum: int) -> None:
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.signum = signum


def run_interruptible(
    async_fn: Callable[[], Awaitable[_T]],
    *,
    on_signal: Callable[[int], None] | None = None,
) -> _T:
    """Run *async_fn* under trio until it returns, or until SIGINT or SIGTERM arrives.

    A signal cancels *async_fn*, so whatever it runs unwinds as on any
    cancellation (an `open_node` block leaves the cluster gracefully, within its
    bounded deadline); a second signal meanwhile is ignored.

    Args:
        async_fn: the command's work.
        on_signal: called with the signal number when one arrives (to log it).

    Returns:
        What *async_fn* returned.

    Raises:
        Interrupted: a signal stopped it (raised once it has unwound).
    """
    received: list[int] = []
    outcome: list[Any] = []

    async def guarded() -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:

                async def watch() -> None:
                    async for signum in signals:
                        if not received:
                            received.append(signum)
                            if on_signal is not None:
                                on_signal(signum)
                            nursery.cancel_scope.cancel()

                nursery.start_soon(watch)
                try:
                    outcome.append((True, await async_fn()))
                except BaseException as exc:
                    cancelled = isinstance(exc, trio.Cancelled) or (
                        isinstance(exc, BaseExceptionGroup) and not exc.split(trio.Cancelled)[1]
                    )
                    if cancelled:
                        raise  # this nursery's scope catches it
                    outcome.append((False, exc))  # re-raised below, outside the nursery's group
                nursery.cancel_scope.cancel()

    trio.run(guarded)
    if outcome and not outcome[0][0]:
        raise outcome[0][1]
    if received:
        raise Interrupted(received[0])
    value: _T = outcome[0][1]
    return value


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _UsageError(f"{self.prog}: {message}")


def _add_node_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", type=Path, help="TOML config file (every key documented)")
    p.add_argument("--name", help="node name (default: <hostname>:<port>)")
    p.add_argument("--cluster", help="cluster name")
    p.add_argument("--bind", help="IP address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="UDP/TCP port (default 33000)")
    p.add_argument("--advertise", help="host[:port] peers should use to reach this node")
    p.add_argument("--cluster-net", action="append", help="CIDR to sweep (repeatable)")
    p.add_argument("--seed", action="append", dest="seeds", help="host:port to join (repeatable)")
    p.add_argument("--key", action="append", dest="keys", help="cluster key (first = primary)")
    p.add_argument("--tag", action="append", dest="tags", help="node tag (repeatable)")
    p.add_argument("--preset", choices=["lan", "wan", "local"], help="membership timing preset")
    p.add_argument("--store", help="store URL: memory:// or sqlite:///path.db")


def _add_query_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--address", "-a", default="127.0.0.1:33000", help="agent host:port")
    p.add_argument("--key", help="the cluster key, when the cluster has one")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the agent")


def _parser() -> _Parser:
    parser = _Parser(prog="beethoven", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"beethoven {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    agent = sub.add_parser("agent", help="run one node until SIGINT/SIGTERM")
    _add_node_flags(agent)
    agent.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING, ERROR")

    for name, what in (
        ("members", "list the cluster's nodes as a running agent sees them"),
        ("roles", "list the roles and their holders"),
        ("status", "show one agent's status"),
    ):
        _add_query_flags(sub.add_parser(name, help=what))

    sub.add_parser("keygen", help="print a new random cluster key")

    demo = sub.add_parser("demo", help="a 5-node cluster on loopback: failover live")
    demo.add_argument("--nodes", type=int, default=5, help="number of nodes (2..50)")
    demo.add_argument("--duration", type=float, default=30.0, help="seconds, at least 10")
    demo.add_argument("--json", action="store_true", help="print a JSON summary at the end")

    sim = sub.add_parser("sim", help="run the membership simulator")
    sim.add_argument("--nodes", "-n", type=int, default=100, help="simulated nodes")
    sim.add_argument("--seconds", type=float, default=60.0, help="virtual seconds to simulate")
    sim.add_argument("--loss", type=float, default=0.0, help="packet loss rate, 0..1")
    sim.add_argument("--preset", default="lan", help="lan, wan, local or memberlist")
    sim.add_argument(
        "--scenario", default="crash", choices=["join", "crash", "steady"], help="what to measure"
    )
    sim.add_argument("--seed", type=int, default=1, help="random seed (runs replay exactly)")
    sim.add_argument("--json", dest="json_path", type=Path, help="write the metrics as JSON here")
    sim.add_argument("--plot", type=Path, help="write a PNG plot here (needs matplotlib)")
    return parser


# --- agent -------------------------------------------------------------------------------


def _config_from_flags(args: argparse.Namespace) -> Config:
    overrides: dict[str, Any] = {}
    for key in (
        "name",
        "cluster",
        "bind",
        "port",
        "advertise",
        "preset",
        "store",
    ):
        value = getattr(args, key)
        if value is not None:
            overrides[key] = value
    for key, attr in (
        ("cluster_net", "cluster_net"),
        ("seeds", "seeds"),
        ("keys", "keys"),
        ("tags", "tags"),
    ):
        value = getattr(args, attr)
        if value:
            overrides[key] = tuple(value)
    return load_config(args.config, **overrides)


async def _run_agent(config: Config) -> None:
    from beethoven.node import open_node

    log = logging.getLogger("beethoven.agent")
    try:
        async with open_node(config) as node:
            log.info(
                "node %s listening on %s (cluster %s)", node.name, node.address, config.cluster
            )
            await node.wait_ready()
            online = node.get_active_cluster_nodes()
            log.info("ready: %s, online %s", node.get_node_status(), online)
            await trio.sleep_forever()
    finally:
        log.info("stopped")


def _agent(args: argparse.Namespace) -> int:
    level = getattr(logging, str(args.log_level).upper(), None)
    if not isinstance(level, int):
        raise _UsageError(f"beethoven agent: bad --log-level {args.log_level!r}")
    logging.basicConfig(
        level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    config = _config_from_flags(args)

    def announce(signum: int) -> None:
        logging.getLogger("beethoven.agent").info(
            "received %s: leaving the cluster", signal.Signals(signum).name
        )

    try:
        run_interruptible(lambda: _run_agent(config), on_signal=announce)
    except Interrupted as exc:
        # SIGTERM is how a service manager stops an agent: after the graceful leave
        # that is success (exit 0). Ctrl-C is reported as every command reports it.
        if exc.signum != signal.SIGTERM:
            raise
    return EXIT_OK


# --- queries -----------------------------------------------------------------------------


async def query_agent(
    address: str,
    kind: str,
    *,
    key: str | None,
    timeout: float,  # noqa: ASYNC109 - mirrors the CLI's --timeout flag
) -> Any:
    """Ask the agent at *address* a `Query`; return the decoded JSON answer.

    Raises:
        BeethovenError: unreachable, no answer in time (often a wrong key), or a
            malformed answer.
    """
    addr = parse_address(address, default_port=33000)
    keyring = Keyring.from_strings(key) if key else None
    try:
        with trio.fail_after(timeout):
            stream = await trio.open_tcp_stream(addr.host, addr.port)
    except (OSError, trio.TooSlowError) as exc:
        raise BeethovenError(f"cannot reach an agent at {addr}: {exc or 'timed out'}") from None
    channel = FrameChannel(stream, keyring, read_timeout=timeout)
    try:
        with trio.fail_after(timeout):
            await channel.send(Query(kind))
            reply = await channel.receive()
    except (trio.TooSlowError, trio.EndOfChannel, trio.BrokenResourceError):
        raise BeethovenError(
            f"no answer from the agent at {addr} within {timeout:g} s "
            "(a wrong or missing --key? the agent drops frames it cannot authenticate)"
        ) from None
    except BeethovenError as exc:
        raise BeethovenError(f"bad answer from the agent at {addr}: {exc}") from None
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(1):
            await channel.aclose()
    if not isinstance(reply, QueryReply):
        raise BeethovenError(f"unexpected answer from {addr}: {type(reply).__name__}")
    try:
        return json.loads(reply.body)
    except ValueError:
        raise BeethovenError(f"the agent at {addr} sent malformed JSON") from None


def _table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> str:
    widths = [len(h) for h in header]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
    lines += [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
    return "\n".join(lines)


def _format(kind: str, body: Any) -> str:
    if isinstance(body, dict) and "error" in body:
        raise BeethovenError(str(body["error"]))
    if kind == "members":
        rows = [[m["node"], m["status"], m["address"], m["last_change"]] for m in body]
        return _table(rows, ["NODE", "STATUS", "ADDRESS", "LAST CHANGE"])
    if kind == "roles":
        rows = [
            [r["role"], str(r["count"]), str(r["assigned"]), ", ".join(r["nodes"]) or "-"]
            for r in body
        ]
        return _table(rows, ["ROLE", "COUNT", "ASSIGNED", "NODES"]) if rows else "no roles"
    rows = [[k, json.dumps(v) if not isinstance(v, str) else v] for k, v in body.items()]
    return _table(rows, ["FIELD", "VALUE"])


def _query(args: argparse.Namespace) -> int:
    if args.timeout <= 0:
        raise _UsageError("--timeout must be positive")
    body = run_interruptible(
        lambda: query_agent(args.address, args.command, key=args.key, timeout=args.timeout)
    )
    print(json.dumps(body, indent=2, sort_keys=True) if args.json else _format(args.command, body))
    return EXIT_OK


# --- small commands ----------------------------------------------------------------------


def _keygen(args: argparse.Namespace) -> int:
    print(key_to_string(generate_key()))
    return EXIT_OK


def _demo(args: argparse.Namespace) -> int:
    from beethoven.demo import run_demo

    if not 2 <= args.nodes <= 50:
        raise _UsageError("--nodes must be between 2 and 50")
    if args.duration < 10:
        raise _UsageError("--duration must be at least 10 seconds")
    return run_demo(nodes=args.nodes, duration=args.duration, as_json=args.json)


def _sim(args: argparse.Namespace) -> int:
    from beethoven.simcli import run_sim

    if args.nodes < 2 or not 0 <= args.loss < 1 or args.seconds <= 0:
        raise _UsageError("need --nodes >= 2, 0 <= --loss < 1 and --seconds > 0")
    return run_sim(args)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    try:
        args = _parser().parse_args(argv)
        handler = {
            "agent": _agent,
            "members": _query,
            "roles": _query,
            "status": _query,
            "keygen": _keygen,
            "demo": _demo,
            "sim": _sim,
        }[args.command]
        return handler(args)
    except _UsageError as exc:
        print(exc, file=sys.stderr)
        return EXIT_USAGE
    except ConfigError as exc:
        print(f"beethoven: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BeethovenError as exc:
        print(f"beethoven: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except OSError as exc:
        print(f"beethoven: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except Interrupted as exc:
        print(f"beethoven: {exc}", file=sys.stderr)
        return 128 + exc.signum
    except KeyboardInterrupt:  # plain Python (sim), or Ctrl-C before trio started
        print("beethoven: interrupted by SIGINT", file=sys.stderr)
        return EXIT_INTERRUPTED


def entry_point() -> NoReturn:
    """The ``[project.scripts]`` entry: exit with `main`'s code."""
    sys.exit(main())
