"""The GraphQL door's FlowSeam on the relay of today: the HTTP door's request lifecycle (relay.doors.http).

The one place that binds the GraphQL door to the rest of the relay. `HttpDoor.execute` admits a request (id,
`gateway` route, document ids), runs it through the backend with its error path, finishes it and counts it in
the relay's counters and metrics; the token check and the body limit are the HTTP door's. When the relay's
requests go through one gateway for every door, this class wraps that gateway instead.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from relay.doors.graphql.seam import DOOR
from relay.net.http_types import HttpRequest
from relay.wire.messages import DataRequest

if TYPE_CHECKING:
    from relay.doors.http import HttpDoor


class HttpDoorSeam:
    """relay.doors.graphql.seam.FlowSeam over an HttpDoor (and through it, its RelayServer)."""

    def __init__(self, door: HttpDoor) -> None:
        self._door = door

    @property
    def max_body_bytes(self) -> int:
        return self._door.server.config.max_message_size

    def authorized(self, request: HttpRequest) -> bool:
        return self._door._authorized(request)

    async def run(self, req: DataRequest, size: int) -> None:
        await self._door.execute(req, size, door=DOOR)

    def sent(self, size: int) -> None:
        self._door.server.observer.bytes_out(size)
