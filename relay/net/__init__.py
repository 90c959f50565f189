"""Sockets in, sessions out: the acceptor, the listener (HTTP/1.1 and WebSocket on one port) and its HTTP types."""
