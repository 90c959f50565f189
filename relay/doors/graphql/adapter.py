"""The GraphQL door's FlowSeam over the relay's gateway (relay.gateway): the one place that binds the door to the
rest of the relay.

The gateway admits a request (id, `gateway` route, document ids), runs it through the backend with its error
path, finishes it and counts it in the relay's counters and metrics; the token check and the body limit are the
gateway's too. The answer is encoded by the door itself (only the fields a query selects), so the gateway
finishes it without encoding, and the door reports the bytes it wrote.
"""

from __future__ import annotations

import asyncio

from relay.doors.graphql.seam import DOOR
from relay.gateway import Gateway
from relay.net.http_types import HttpRequest
from relay.wire.messages import DataRequest


class GatewaySeam:
    """relay.doors.graphql.seam.FlowSeam over a Gateway."""

    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway

    @property
    def max_body_bytes(self) -> int:
        return self._gateway.config.max_message_size

    def authorized(self, request: HttpRequest) -> bool:
        return self._gateway.authorized(request.header("authorization"), request.query)

    async def run(self, req: DataRequest, size: int) -> None:
        gateway = self._gateway
        # A GraphQL client cannot choose the request id: the gateway makes one, as for HTTP.
        gateway.admit(req, size, False)
        answered: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def respond(done: DataRequest) -> None:
            gateway.finish(done, None, DOOR)
            if not answered.done():
                answered.set_result(None)

        gateway.run(req, respond)
        await answered

    def sent(self, size: int) -> None:
        self._gateway.observer.bytes_out(size)
