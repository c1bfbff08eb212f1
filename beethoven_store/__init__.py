"""beethoven_store: hybrid logical clock, delta CRDTs and the replicated `Store`."""

from __future__ import annotations

import logging

logging.getLogger(__name__).addHandler(logging.NullHandler())
