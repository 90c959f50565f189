"""A backend (relay.backend.Backend) inside a test's event loop, without the doors around it.

    async with serving(Chain.from_specs(["sleep:1ms"])) as backend:
        req = await answer(backend, request)

`serving` runs the backend's lifetime (`serve`) in a task group and cancels it on exit; `answer` submits a
request and waits for the callback, as the gateway does for one request.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import TypeVar

from relay_process import serving_while

from relay.backend import Backend
from relay.wire.messages import DataRequest

B = TypeVar("B", bound=Backend)


@contextlib.asynccontextmanager
async def serving(backend: B) -> AsyncIterator[B]:
    async with serving_while(backend.serve):
        yield backend


async def answer(backend: Backend, req: DataRequest) -> DataRequest:
    """Submit `req` and return it once the backend has answered it."""
    answered: asyncio.Future[DataRequest] = asyncio.get_running_loop().create_future()
    backend.submit(req, answered.set_result)
    return await answered
