"""Storage backends for the replicated store, found by URL scheme."""
