"""Gossip membership: a sans-I/O SWIM + Lifeguard core and its trio runner."""
