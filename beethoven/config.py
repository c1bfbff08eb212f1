"""Node configuration: one validated, frozen `Config` built from kwargs, TOML or env.

Precedence, lowest first: built-in defaults, a TOML file, ``BEETHOVEN_*`` environment
variables, explicit keyword arguments. Every key is validated when the `Config` is
built; a bad value raises `ConfigError` naming the key, so nothing starts with a
configuration that cannot work — never an ``AttributeError`` or ``TypeError`` from a
value of the wrong shape. A list-valued key (``cluster_net``, ``seeds``, ``keys``,
``tags``) takes a lone string as a one-item list; in the environment lists are
comma-separated.
"""

from __future__ import annotations

import ipaddress
import math
import os
import socket
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from beethoven.address import parse_address
from beethoven.errors import ConfigError
from beethoven.roles import Role

__all__ = ["PRESETS", "Config", "load_config"]

#: Names of the membership timing presets (see ``specs/membership.md``).
PRESETS = ("lan", "wan", "local")

ENV_PREFIX = "BEETHOVEN_"

#: Bytes a TCP frame needs beyond one ``max_value`` value: a store sync reply also
#: carries up to the store's 60 000-byte delta budget, chunk heads and a digest.
FRAME_OVERHEAD = 256 * 1024


def _positive(name: str, value: float) -> None:
    if not (isinstance(value, int | float) and not isinstance(value, bool)):
        raise ConfigError(f"{name}: expected a number, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{name}: must be a positive number, got {value!r}")


def _positive_int(name: str, value: int, *, maximum: int | None = None) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{name}: must be a whole number >= 1, got {value!r}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{name}: must be at most {maximum}, got {value!r}")


def _to_roles(value: Any) -> tuple[Role, ...]:
    if not isinstance(value, list | tuple):
        raise ConfigError(f"roles: expected a list of roles, got {value!r}")
    roles: list[Role] = []
    for item in value:
        if isinstance(item, Role):
            roles.append(item)
            continue
        if not isinstance(item, Mapping):
            raise ConfigError(f"roles: each role must be a table, got {item!r}")
        unknown = set(item) - {"name", "count", "run", "args", "eligible"}
        if unknown:
            raise ConfigError(f"roles: unknown role keys {sorted(unknown)} in {item!r}")
        if "name" not in item or "run" not in item:
            raise ConfigError(f"roles: every role needs 'name' and 'run', got {item!r}")
        try:
            roles.append(
                Role(
                    item["name"],
                    item.get("count", 1),
                    item["run"],
                    args=dict(item.get("args", {})),
                    eligible=item.get("eligible", ()),
                )
            )
        except ConfigError as exc:
            raise ConfigError(f"roles: {exc}") from None
    names = [r.name for r in roles]
    if len(set(names)) != len(names):
        raise ConfigError(f"roles: role names must be unique, got {names}")
    return tuple(roles)


def _as_tuple(value: Any) -> Any:
    """Bring a list-valued key to a tuple; a lone string is a one-item list.

    Anything else that is not a list, tuple or set is left as is, for the validation
    to refuse with a `ConfigError` naming the key.
    """
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list | tuple):
        return tuple(value)
    if isinstance(value, set | frozenset):
        return tuple(sorted(value, key=repr))
    return value


def _check_strings(key: str, value: Any, one: str, many: str) -> None:
    """Refuse a list-valued key that is not a tuple of non-empty strings."""
    if not isinstance(value, tuple):
        raise ConfigError(f"{key}: expected a list of {many}, got {value!r}")
    for item in value:
        if not isinstance(item, str) or not item.strip():
            raise ConfigError(f"{key}: every {one} must be a non-empty string, got {item!r}")


def _default_name(port: int) -> str:
    return f"{socket.gethostname()}:{port}"


@attrs.frozen(kw_only=True)
class Config:
    """Everything a node needs to know, validated.

    Attributes:
        name: unique node name in the cluster; default ``"<hostname>:<port>"``.
        cluster: cluster name; nodes of another cluster are refused.
        bind: IP address to bind UDP and TCP on (never all interfaces by default).
        port: UDP and TCP port, the same on every node (the original's ``listener_port``).
        advertise: ``host[:port]`` peers should use to reach this node, when it
            differs from the bind address (NAT, ``0.0.0.0`` binds).
        cluster_net: CIDR(s) the Locator sweeps to find the cluster.
        seeds: explicit ``host:port`` addresses to join through; skips the sweep.
        sweeps: number of sweeps before starting standalone.
        connect_timeout: seconds to wait for one beacon connect during a sweep.
        backoff: ``(low, high)`` seconds of random pause between sweeps.
        sweep_concurrency: connects in flight at once during a sweep.
        max_sweep_hosts: refuse a ``cluster_net`` with more hosts than this.
        resweep_interval: seconds between re-sweeps (standalone; slower, jittered,
            when clustered, so split clusters find each other).
        keys: cluster keys (base64 text, see ``beethoven keygen``); the first is
            the primary. Empty means an open, unauthenticated cluster.
        preset: membership timing preset, one of ``lan``, ``wan``, ``local``.
        membership: overrides of individual membership parameters.
        store: store backend URL, e.g. ``memory://`` or ``sqlite:///var/lib/node.db``.
        reap_after: seconds an offline node stays listed before it is forgotten.
        hwmon_interval: seconds between CPU/RAM samples.
        tags: this node's tags; a role with ``eligible`` tags runs only on nodes
            carrying all of them.
        roles: the roles the cluster runs, as `Role` objects or tables with the
            keys ``name``, ``count``, ``run`` (``"package.module:function"``),
            ``args`` and ``eligible``.
        max_payload: largest UDP payload in bytes.
        max_frame: largest TCP frame in bytes; it must hold a ``max_value`` value
            plus `FRAME_OVERHEAD` (a store sync reply carries one such value).
        max_value: largest value a ``kv.put`` (or any store write) accepts, in bytes
            of its msgpack encoding; a larger one raises ``StoreError``.
    """

    name: str | None = None
    cluster: str = "beethoven"
    bind: str = "127.0.0.1"
    port: int = 33000
    advertise: str | None = None
    cluster_net: tuple[str, ...] = attrs.field(default=("127.0.0.0/29",), converter=_as_tuple)
    seeds: tuple[str, ...] = attrs.field(default=(), converter=_as_tuple)
    sweeps: int = 3
    connect_timeout: float = 0.25
    backoff: tuple[float, float] = attrs.field(default=(0.15, 0.30), converter=_as_tuple)
    sweep_concurrency: int = 64
    max_sweep_hosts: int = 4096
    resweep_interval: float = 30.0
    keys: tuple[str, ...] = attrs.field(default=(), converter=_as_tuple)
    preset: str = "lan"
    membership: Mapping[str, float] = attrs.field(factory=dict)
    store: str = "memory://"
    reap_after: float = 24 * 3600.0
    hwmon_interval: float = 5.0
    tags: tuple[str, ...] = attrs.field(default=(), converter=_as_tuple)
    roles: tuple[Role, ...] = attrs.field(default=(), converter=_to_roles)
    max_payload: int = 1400
    max_frame: int = 20 * 2**20
    max_value: int = 2**20

    def __attrs_post_init__(self) -> None:
        """Validate every key; raise `ConfigError` naming the first bad one."""
        if self.name is not None and (not isinstance(self.name, str) or not self.name.strip()):
            raise ConfigError(f"name: must be a non-empty string, got {self.name!r}")
        if not isinstance(self.cluster, str) or not self.cluster or len(self.cluster) > 64:
            raise ConfigError(f"cluster: must be 1..64 characters, got {self.cluster!r}")
        try:
            if not isinstance(self.bind, str):
                raise TypeError(self.bind)
            ipaddress.ip_address(self.bind)
        except (ValueError, TypeError):
            raise ConfigError(f"bind: {self.bind!r} is not an IP address") from None
        if (
            not isinstance(self.port, int)
            or isinstance(self.port, bool)
            or not (0 <= self.port <= 65535)
        ):
            raise ConfigError(f"port: must be 0..65535, got {self.port!r}")
        if self.advertise is not None:
            if not isinstance(self.advertise, str):
                raise ConfigError(f"advertise: expected 'host[:port]' text, got {self.advertise!r}")
            try:
                parse_address(self.advertise, default_port=self.port)
            except ConfigError as exc:
                raise ConfigError(f"advertise: {exc}") from None
        _check_strings("cluster_net", self.cluster_net, "network", "networks")
        if not self.cluster_net:
            raise ConfigError("cluster_net: at least one network is required")
        for net in self.cluster_net:
            try:
                ipaddress.ip_network(net, strict=False)
            except (ValueError, TypeError):
                raise ConfigError(f"cluster_net: {net!r} is not a CIDR network") from None
        _check_strings("seeds", self.seeds, "seed address", "seed addresses")
        for seed in self.seeds:
            try:
                parse_address(seed, default_port=self.port)
            except ConfigError as exc:
                raise ConfigError(f"seeds: {exc}") from None
        _positive_int("sweeps", self.sweeps, maximum=100)
        _positive("connect_timeout", self.connect_timeout)
        if not isinstance(self.backoff, tuple) or len(self.backoff) != 2:
            raise ConfigError(f"backoff: expected [low, high], got {self.backoff!r}")
        low, high = self.backoff
        _positive("backoff", low)
        _positive("backoff", high)
        if low > high:
            raise ConfigError(f"backoff: low {low} is above high {high}")
        _positive_int("sweep_concurrency", self.sweep_concurrency, maximum=4096)
        _positive_int("max_sweep_hosts", self.max_sweep_hosts, maximum=2**20)
        _positive("resweep_interval", self.resweep_interval)
        if not isinstance(self.keys, tuple):
            raise ConfigError("keys: expected a list of base64 keys")
        for key in self.keys:
            if not isinstance(key, str) or not key:
                raise ConfigError("keys: every key must be non-empty base64 text")
        if self.preset not in PRESETS:
            raise ConfigError(f"preset: must be one of {', '.join(PRESETS)}, got {self.preset!r}")
        if not isinstance(self.membership, Mapping):
            raise ConfigError(
                f"membership: expected a table of parameter = value, got {self.membership!r}"
            )
        for param, value in self.membership.items():
            _positive(f"membership.{param}", value)
        if not isinstance(self.store, str) or "://" not in self.store:
            raise ConfigError(f"store: expected a URL such as 'memory://', got {self.store!r}")
        _positive("reap_after", self.reap_after)
        _positive("hwmon_interval", self.hwmon_interval)
        _check_strings("tags", self.tags, "tag", "tags")
        _positive_int("max_payload", self.max_payload, maximum=65507)
        if self.max_payload < 512:
            raise ConfigError(f"max_payload: must be at least 512, got {self.max_payload}")
        _positive_int("max_frame", self.max_frame, maximum=2**30)
        _positive_int("max_value", self.max_value, maximum=2**30)
        if self.max_frame < self.max_value + FRAME_OVERHEAD:
            raise ConfigError(
                f"max_frame: {self.max_frame} bytes cannot carry a max_value value"
                f" ({self.max_value} bytes) plus {FRAME_OVERHEAD} bytes of sync overhead;"
                f" raise max_frame to at least {self.max_value + FRAME_OVERHEAD} or lower max_value"
            )

    @property
    def node_name(self) -> str:
        """The effective node name (``name`` or ``"<hostname>:<port>"``)."""
        return self.name if self.name is not None else _default_name(self.port)


_FIELDS = {f.name: f for f in attrs.fields(Config)}
_DEFAULTS = Config()


def _coerce(key: str, value: Any, *, from_text: bool) -> Any:
    """Bring a TOML/env value to the field's shape; leave type checks to validation."""
    if key not in _FIELDS:
        known = ", ".join(sorted(_FIELDS))
        raise ConfigError(f"unknown configuration key {key!r} (known keys: {known})")
    default = getattr(_DEFAULTS, key)
    if from_text and isinstance(value, str):
        if key in {"cluster_net", "seeds", "keys", "tags"}:
            return tuple(part.strip() for part in value.split(",") if part.strip())
        if key == "backoff":
            value = [part.strip() for part in value.split(",")]
        elif key == "membership":
            pairs = [part.split("=", 1) for part in value.split(",") if part.strip()]
            if any(len(pair) != 2 for pair in pairs):
                raise ConfigError(f"membership: expected 'param=value,...', got {value!r}")
            value = {k.strip(): v.strip() for k, v in pairs}
        elif isinstance(default, bool):
            return value.lower() in {"1", "true", "yes", "on"}
        elif isinstance(default, int):
            try:
                return int(value)
            except ValueError:
                raise ConfigError(f"{key}: expected a whole number, got {value!r}") from None
        elif isinstance(default, float):
            try:
                return float(value)
            except ValueError:
                raise ConfigError(f"{key}: expected a number, got {value!r}") from None
    if key == "roles":
        return value
    if key in {"cluster_net", "seeds", "keys", "backoff", "tags"}:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        if key == "backoff":
            try:
                return tuple(float(v) for v in value)
            except (TypeError, ValueError):
                raise ConfigError(f"backoff: expected two numbers, got {value!r}") from None
        return tuple(value)
    if key == "membership":
        if not isinstance(value, Mapping):
            raise ConfigError(f"membership: expected a table, got {value!r}")
        try:
            return {str(k): float(v) for k, v in value.items()}
        except (TypeError, ValueError):
            raise ConfigError(f"membership: every value must be a number, got {value!r}") from None
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    **overrides: Any,
) -> Config:
    """Build a `Config` from a TOML file, the environment and keyword overrides.

    Args:
        path: a TOML file whose top-level keys (or a ``[beethoven]`` table) are
            config keys. ``None`` reads no file.
        env: the environment to read ``BEETHOVEN_*`` variables from (``os.environ``
            when ``None``; pass ``{}`` to ignore the environment).
        **overrides: config keys given directly; they win over file and env.

    Returns:
        The validated configuration.

    Raises:
        ConfigError: an unreadable or malformed file, an unknown key, or a bad value.
    """
    values: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read config file {os.fspath(path)!r}: {exc}") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config file {os.fspath(path)!r} is not valid TOML: {exc}") from None
        table = data.get("beethoven", data)
        if not isinstance(table, dict):
            raise ConfigError(f"config file {os.fspath(path)!r}: [beethoven] must be a table")
        for key, value in table.items():
            values[key] = _coerce(key, value, from_text=False)
    environ = os.environ if env is None else env
    for var, text in environ.items():
        if var.startswith(ENV_PREFIX):
            key = var[len(ENV_PREFIX) :].lower()
            values[key] = _coerce(key, text, from_text=True)
    for key, value in overrides.items():
        values[key] = _coerce(key, value, from_text=False)
    try:
        return Config(**values)
    except TypeError as exc:  # pragma: no cover - _coerce already names unknown keys
        raise ConfigError(str(exc)) from None
