"""beethoven_store: hybrid logical clock, delta CRDTs and the replicated `Store`.

Open a store with :func:`open_store` (``memory://`` or ``sqlite:///path.db``, or
any backend registered in the ``beethoven.stores`` entry-point group). The pure
lattice core is :mod:`beethoven_store.crdt`; the clock is :mod:`beethoven_store.hlc`;
third-party backends are checked with :class:`beethoven_store.testing.BackendContract`.
"""

from __future__ import annotations

import logging

from beethoven_store.backends import available_backends, open_store
from beethoven_store.crdt import Key, Value
from beethoven_store.hlc import HybridClock
from beethoven_store.store import (
    Changes,
    Delta,
    GcReport,
    Store,
    StoreConfig,
    StoreStats,
    Subscription,
    SyncReply,
)

__all__ = [
    "Changes",
    "Delta",
    "GcReport",
    "HybridClock",
    "Key",
    "Store",
    "StoreConfig",
    "StoreStats",
    "Subscription",
    "SyncReply",
    "Value",
    "available_backends",
    "open_store",
]

logging.getLogger(__name__).addHandler(logging.NullHandler())
