"""Beethoven: coordination-free clustering for trio programs.

Nodes find each other, agree on who is alive (SWIM + Lifeguard gossip), replicate
their state through CRDTs, spread roles across the cluster, move them when a node
dies, and send new work to the least-busy node — with no coordination service.

Start here: `open_node`, `Config`, `Role`; the README has a complete example.
"""

from __future__ import annotations

__version__ = "0.1.0.dev0"

import logging

from beethoven.address import Address, parse_address
from beethoven.allocator import SignalType
from beethoven.config import Config, load_config
from beethoven.core import NodeRecord, NodeStatus, NodeUpdate
from beethoven.errors import (
    BeethovenError,
    CodecError,
    ConfigError,
    SecurityError,
    StoreError,
    TransportError,
)
from beethoven.node import ClusterKV, Node, NodeMode, NodeStats, RoleInfo, SignalHandle, open_node
from beethoven.roles import Role, RoleContext, RoleStatus
from beethoven.wire.security import Keyring, generate_key

__all__ = [
    "Address",
    "BeethovenError",
    "ClusterKV",
    "CodecError",
    "Config",
    "ConfigError",
    "Keyring",
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

logging.getLogger(__name__).addHandler(logging.NullHandler())
