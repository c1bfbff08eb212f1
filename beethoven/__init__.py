"""Beethoven: coordination-free clustering for trio programs.

Nodes find each other, agree on who is alive (SWIM + Lifeguard gossip), replicate
their state through CRDTs, spread roles across the cluster, move them when a node
dies, and send new work to the least-busy node — with no coordination service.

Start here: `open_node`, `Config`, `Role`; the README has a complete example.
The heavier names are imported lazily, on first use, so ``import beethoven.x`` stays
cheap and ``beethoven_store`` (which uses ``beethoven.errors``) can be imported alone.
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Any

from beethoven.address import Address, parse_address
from beethoven.errors import (
    BeethovenError,
    ClockSkewError,
    CodecError,
    ConfigError,
    NameConflictError,
    SecurityError,
    StoreError,
    TransportError,
)

__version__ = "0.1.0.dev0"

if TYPE_CHECKING:
    from beethoven.allocator import SignalType
    from beethoven.config import Config, load_config
    from beethoven.core import NodeRecord, NodeStatus, NodeUpdate
    from beethoven.node import (
        ClusterKV,
        Node,
        NodeMode,
        NodeStats,
        RoleInfo,
        SignalHandle,
        open_node,
    )
    from beethoven.roles import Role, RoleContext, RoleStatus
    from beethoven.wire.security import Keyring, generate_key

_LAZY = {
    "SignalType": "beethoven.allocator",
    "Config": "beethoven.config",
    "load_config": "beethoven.config",
    "NodeRecord": "beethoven.core",
    "NodeStatus": "beethoven.core",
    "NodeUpdate": "beethoven.core",
    "ClusterKV": "beethoven.node",
    "Node": "beethoven.node",
    "NodeMode": "beethoven.node",
    "NodeStats": "beethoven.node",
    "RoleInfo": "beethoven.node",
    "SignalHandle": "beethoven.node",
    "open_node": "beethoven.node",
    "Role": "beethoven.roles",
    "RoleContext": "beethoven.roles",
    "RoleStatus": "beethoven.roles",
    "Keyring": "beethoven.wire.security",
    "generate_key": "beethoven.wire.security",
}

__all__ = [
    "Address",
    "BeethovenError",
    "ClockSkewError",
    "ClusterKV",
    "CodecError",
    "Config",
    "ConfigError",
    "Keyring",
    "NameConflictError",
    "Node",
    "NodeMode",
    "NodeRecord",
    "NodeStats",
    "NodeStatus",
    "NodeUpdate",
    "Role",
    "RoleContext",
    "RoleInfo",
    "RoleStatus",
    "SecurityError",
    "SignalHandle",
    "SignalType",
    "StoreError",
    "TransportError",
    "__version__",
    "generate_key",
    "load_config",
    "open_node",
    "parse_address",
]


def __getattr__(name: str) -> Any:
    """Import the public names of the heavier modules on first use (PEP 562)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'beethoven' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


logging.getLogger(__name__).addHandler(logging.NullHandler())
