"""What `flowrelay serve` is told: one `RelayConfig`, read by the server, the gateway and the doors alike.

Kept apart from the server so that the doors and the gateway read their settings without importing the server
(which imports them). Imports: the standard library only.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_PORT = 12345
DEFAULT_PREFETCH = 1000
DEFAULT_MAX_MESSAGE_SIZE = 64 * 1024 * 1024
DEFAULT_PING_INTERVAL_S = 20.0


@dataclass
class RelayConfig:
    """Every limit is explicit, with the default a user gets."""

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    # Requests in flight per connection (WebSocket) or stream (gRPC) before reading pauses; 0: no limit.
    prefetch: int = DEFAULT_PREFETCH
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    drain_timeout_s: float = 10.0
    compression: bool = False
    ping_interval_s: float | None = DEFAULT_PING_INTERVAL_S
    # The relay's own route entry, first in every answer's `routes`.
    name: str = "gateway"
    max_connections: int = 0  # 0: no limit
    handshake_timeout_s: float = 10.0
    auth_token: str | None = None
    allowed_origins: tuple[str, ...] = ()  # empty: any origin
    certfile: str | None = None
    keyfile: str | None = None
    cors: bool = False
    # gc.freeze() long-lived objects (relay.common.gc_freeze); `flowrelay serve` turns it on (--no-gc-freeze: off).
    gc_freeze: bool = False
