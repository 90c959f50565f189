"""The hooks a relay calls on each event (connections, requests, bytes, mirrored requests): what its exporters
implement.

The Prometheus exporter (relay.metrics) counts them; the default does nothing. Kept apart from the server so
that an exporter (or a test) imports the interface without the server.
"""

from __future__ import annotations

from relay.wire.messages import DataRequest

# Why a client was refused for want of capacity (Observer.connection_refused): out of file descriptors at
# accept (relay.net.acceptor), or past --max-connections at the handshake.
REFUSED_FD_LIMIT = "fd_limit"
REFUSED_MAX_CONNECTIONS = "max_connections"
REFUSAL_REASONS = (REFUSED_FD_LIMIT, REFUSED_MAX_CONNECTIONS)


class Observer:
    """Hooks the gateway and the server call on each event; the Prometheus exporter implements them."""

    def connection_opened(self, subprotocol: str) -> None: ...
    def connection_closed(self, subprotocol: str, code_sent: int | None, code_received: int | None) -> None: ...
    def connection_refused(self, reason: str) -> None:
        """A client turned away for want of capacity; `reason` is one of REFUSAL_REASONS."""
    def request_started(self, endpoint: str) -> None: ...
    def request_finished(self, req: DataRequest, duration_s: float) -> None: ...
    def door_request_finished(self, door: str, req: DataRequest) -> None:
        """`req`, which came in through `door` (`http`, `graphql`), was answered (after `request_finished`)."""
    def bytes_in(self, n: int) -> None: ...
    def bytes_out(self, n: int) -> None: ...
    def mirror_finished(self, ok: bool, duration_s: float) -> None:
        """The shadow Flow (`--mirror`) answered a copy of a request (`ok`: without an error) or failed to."""
