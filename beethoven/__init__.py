"""Beethoven: coordination-free clustering for trio programs.

Nodes find each other, agree on who is alive (SWIM + Lifeguard gossip), replicate
their state through CRDTs, spread roles across the cluster, move them when a node
dies, and send new work to the least-busy node — with no coordination service.
"""

from __future__ import annotations

import logging

from beethoven.address import Address, parse_address
from beethoven.errors import (
    BeethovenError,
    CodecError,
    ConfigError,
    SecurityError,
    StoreError,
    TransportError,
)

__all__ = [
    "Address",
    "BeethovenError",
    "CodecError",
    "ConfigError",
    "SecurityError",
    "StoreError",
    "TransportError",
    "__version__",
    "parse_address",
]

__version__ = "0.1.0.dev0"

logging.getLogger(__name__).addHandler(logging.NullHandler())
