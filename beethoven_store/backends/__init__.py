"""Storage backends for the replicated store, found by URL scheme.

Backends register in the ``beethoven.stores`` entry-point group, keyed by URL
scheme; the value names a class implementing :class:`~beethoven_store.backends.base.Backend`::

    [project.entry-points."beethoven.stores"]
    lmdb = "beethoven_lmdb:LMDBBackend"

The two built-ins (``memory``, ``sqlite``) are declared the same way in
Beethoven's own ``pyproject.toml``; :func:`available_backends` also knows them
directly, so a bare checkout without installed metadata still works, and it
de-duplicates entries listed twice (editable installs). On a name clash the
first entry point wins and a warning is logged.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import urllib.parse
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from beethoven.errors import StoreError

if TYPE_CHECKING:
    from beethoven_store.backends.base import Backend
    from beethoven_store.store import Store, StoreConfig

__all__ = ["ENTRY_POINT_GROUP", "available_backends", "load_backend", "open_backend", "open_store"]

logger = logging.getLogger(__name__)

#: The entry-point group backends register in.
ENTRY_POINT_GROUP = "beethoven.stores"

_BUILTIN = {
    "memory": "beethoven_store.backends.memory:MemoryBackend",
    "sqlite": "beethoven_store.backends.sqlite:SQLiteBackend",
}


def available_backends() -> dict[str, str]:
    """Return ``scheme → "module:Class"`` for every installed backend.

    Entry points come first (the first one of a name wins; a conflicting
    duplicate is logged), then the built-ins not already listed.
    """
    found: dict[str, str] = {}
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        name = ep.name.lower()
        prev = found.get(name)
        if prev is None:
            found[name] = ep.value
        elif prev != ep.value:
            logger.warning(
                "store backend %r registered twice (%s, %s); using the first", name, prev, ep.value
            )
    for name, target in _BUILTIN.items():
        found.setdefault(name, target)
    return found


def load_backend(scheme: str) -> type[Backend]:
    """Import and return the backend class registered for ``scheme``.

    Raises:
        StoreError: If no backend has that scheme (the message names the installed
            ones) or its module cannot be imported.
    """
    backends = available_backends()
    target = backends.get(scheme.lower())
    if target is None:
        raise StoreError(
            f"unknown store scheme {scheme!r}; installed: {', '.join(sorted(backends))}"
        )
    module_name, _, attr = target.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split(".") if attr else ():
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise StoreError(f"cannot load store backend {scheme!r} ({target}): {exc}") from exc
    if not callable(getattr(obj, "from_url", None)):
        raise StoreError(f"store backend {scheme!r} ({target}) has no from_url()")
    cls: type[Backend] = obj
    return cls


def open_backend(url: str) -> Backend:
    """Open the backend for ``url`` (``scheme://…?option=value``).

    Raises:
        StoreError: For an unknown scheme, a malformed URL or a backend error.
    """
    if "://" not in url:
        raise StoreError(f"a store URL looks like 'memory://' or 'sqlite:///path.db', got {url!r}")
    try:
        parts = urllib.parse.urlsplit(url)
        query = urllib.parse.parse_qs(parts.query, keep_blank_values=True, strict_parsing=False)
    except ValueError as exc:
        raise StoreError(f"malformed store URL {url!r}: {exc}") from exc
    options: dict[str, str] = {}
    for k, vals in query.items():
        if len(vals) != 1:
            raise StoreError(f"store URL option {k!r} given {len(vals)} times")
        options[k] = vals[0]
    cls = load_backend(parts.scheme)
    factory: Callable[..., Backend] = cls.from_url
    return factory(parts._replace(query=""), **options)


def open_store(
    url: str = "memory://",
    *,
    owner: str,
    clock: Callable[[], float] | None = None,
    config: StoreConfig | None = None,
) -> Store:
    """Open a replicated store over the backend named by ``url``.

    Args:
        url: ``memory://`` (default) or ``sqlite:///path.db?synchronous=normal|full``,
            or any scheme a third-party package registers.
        owner: This node's name: the owner of its keyspace and its LWW writer id.
        clock: Physical clock in seconds (``time.time`` by default;
            ``trio.current_time`` in simulation).
        config: Tunables; see :class:`~beethoven_store.store.StoreConfig`.

    Returns:
        An open :class:`~beethoven_store.store.Store` (close it, or use ``with``).

    Raises:
        StoreError: For an unknown scheme (naming the installed ones), a bad path, a
            file that is not a store, or a store that belongs to another node.
    """
    from beethoven_store.store import Store

    backend = open_backend(url)
    try:
        return Store(backend, owner=owner, clock=clock, config=config)
    except BaseException:
        backend.close()
        raise
