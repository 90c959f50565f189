"""What the GraphQL door needs of the relay, and nothing more: the seam between the door and the request lifecycle.

A door decodes its own framing and hands `DataRequest`s to the relay's one request lifecycle. For GraphQL that
lifecycle is reached through `FlowSeam`: the token check, the body limit, running one request through the Flow
(admission, the backend with its error path, the counters and the observer), and counting the bytes of the
answer. relay.doors.graphql.adapter implements it over the gateway. Imports: relay.wire, relay.net.http_types and
relay.observer only.
"""

from __future__ import annotations

from typing import Protocol

from relay.net.http_types import HttpRequest
from relay.observer import DOOR_GRAPHQL
from relay.wire.messages import DataRequest

DOOR = DOOR_GRAPHQL


class FlowSeam(Protocol):
    """The relay as the GraphQL door sees it."""

    @property
    def max_body_bytes(self) -> int:
        """The largest request body accepted (0: no limit), as on the other doors."""
        ...

    def authorized(self, request: HttpRequest) -> bool:
        """Whether `request` carries the relay's token (always True when the relay has none)."""
        ...

    async def run(self, req: DataRequest, size: int) -> None:
        """Admit `req` (`size` bytes of request), run it through the Flow and finish it, counting it under the
        door label `graphql`. On return `req` is the answer: its documents, routes and status. Never raises for an
        Executor's error or an unreachable upstream: those are in `req.status`."""
        ...

    def sent(self, size: int) -> None:
        """`size` bytes of answer were written."""
        ...
