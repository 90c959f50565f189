"""What answers the relay's requests: the `Backend` protocol, which the embedded chain of built-in Executors
(relay.executors.Chain) and the link to a real upstream Flow (relay.upstream.backend.UpstreamBackend) implement.

The gateway (relay.gateway) hands every admitted request to `Backend.submit` with a callback, and reads the
backend's health, status and endpoints through the same protocol: no door or server asks which backend it has.

Imports: anyio, the standard library and relay.wire.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import anyio
from anyio.abc import TaskStatus

from relay.wire.messages import STATUS_ERROR, DataRequest, ExceptionInfo, Status

# Called once per submitted request, with the request holding its answer (documents, status, routes). It never
# raises: the gateway's answer path turns its own failures into an error answer (relay.gateway.Gateway.finish).
Respond = Callable[[DataRequest], None]

# The route entry a failure of the relay itself is reported from.
GATEWAY_EXECUTOR = "gateway"
# What endpoint discovery answers for Executors that serve every endpoint, as the built-in ones do.
DEFAULT_ENDPOINTS = ("/default", "_jina_dry_run_")


class BackendUnavailable(Exception):
    """The backend cannot tell now (an upstream Flow is unreachable); the message names the cause."""


class Backend(Protocol):
    """A chain of Executors or an upstream Flow, as every door sees it."""

    @property
    def executor_names(self) -> Sequence[str]:
        """The Executors this backend runs itself, in order (none for an upstream Flow): /status lists them."""
        ...

    @property
    def healthy(self) -> bool:
        """Whether requests can be answered now (gRPC health, /status)."""
        ...

    def describe(self) -> str:
        """One line for the log and the serving banner."""
        ...

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """The backend's lifetime: connect, report started, run its background tasks (and the tasks of requests
        that await) until cancelled, then clean up. A background task that fails raises out of here."""
        ...

    def submit(self, req: DataRequest, respond: Respond) -> None:
        """Run an admitted request; `respond(req)` is called once, when `req` holds the answer (or an error
        status), possibly before this returns. May raise only before `respond` is called."""
        ...

    async def dry_run(self) -> Status:
        """An empty request through the whole Flow, as a Jina gateway's dry run: its status."""
        ...

    async def endpoints(self) -> list[str]:
        """The endpoints the Flow serves (gRPC endpoint discovery). Raises BackendUnavailable."""
        ...

    def status(self) -> dict[str, Any]:
        """What the backend adds to /status (an upstream's health and recoveries, the mirror's figures)."""
        ...


def relay_error_status(exc: BaseException, doing: str = "") -> Status:
    """An error status for a failure of the relay itself (not of an Executor): what the client is answered
    instead of nothing, reported as from the gateway hop."""
    text = f"{type(exc).__name__}: {exc}"
    if doing:
        text = f"{doing}: {text}"
    return Status(STATUS_ERROR, text, ExceptionInfo(type(exc).__name__, [text], executor=GATEWAY_EXECUTOR))
