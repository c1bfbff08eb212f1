"""Transports: the `Transport` protocol, real UDP/TCP sockets and an in-memory network."""
