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
# The ways into the relay, as the `door` of a finished request (and the label of its metrics).
DOOR_WEBSOCKET = "websocket"
DOOR_HTTP = "http"
DOOR_GRAPHQL = "graphql"
DOOR_GRPC = "grpc"
DOORS = (DOOR_WEBSOCKET, DOOR_HTTP, DOOR_GRAPHQL, DOOR_GRPC)


class Observer:
    """Hooks the gateway and the server call on each event; the Prometheus exporter implements them."""

    def connection_opened(self, subprotocol: str) -> None: ...
    def connection_closed(self, subprotocol: str, code_sent: int | None, code_received: int | None) -> None: ...
    def connection_refused(self, reason: str) -> None:
        """A client turned away for want of capacity; `reason` is one of REFUSAL_REASONS."""
    def request_started(self, endpoint: str) -> None: ...
    def request_finished(self, req: DataRequest, duration_s: float, door: str) -> None:
        """`req` was answered `duration_s` after it was admitted; it came in through `door` (one of DOORS)."""
    def bytes_in(self, n: int) -> None: ...
    def bytes_out(self, n: int) -> None: ...
    def mirror_finished(self, ok: bool, duration_s: float) -> None:
        """The shadow Flow (`--mirror`) answered a copy of a request (`ok`: without an error) or failed to."""
