"""The one request lifecycle every door uses: authorize, admit, run through the backend, finish.

A door (relay.doors: WebSocket, HTTP, gRPC) decodes its own framing into `DataRequest`s and answers in its own
shape; everything between is here, once:

* `authorized`: the `--auth-token` check, for a WebSocket handshake, plain HTTP (`Authorization: Bearer TOKEN`
  or `?token=TOKEN`) and gRPC metadata (`authorization: Bearer TOKEN`).
* `admit`: a request id (a door may keep the client's), the relay's own `gateway` route entry, `execEndpoint`
  default `/`, `parameters` default `{}`, ids for documents without one; counted, and reported to the observer.
* `run`: through the backend (relay.backend), with an error path: whatever the backend raises becomes an
  error-status answer, never a lost request.
* `finish`: the gateway entry's end time, the answer encoded by the door's encoder (an encoder that fails
  yields an error answer instead), counted, reported. `in_flight` always comes back down.
* `call`: run and finish for a door that awaits one answer (HTTP, gRPC); `dry_run`, `endpoints`, `status`.
* `--record DIR` (relay.capture): a door asks `capture_connection` for a connection's tap (None when the relay
  does not record, or sampling leaves the connection out) and passes it, with the raw frame or body, to `admit`
  (which records the request) and to `finish` (which records the answer as encoded for the client).

The per-message path (WebSocket door -> admit -> run -> backend -> finish) stays callback-driven: no task,
future or await per request. The gateway owns the id source, the counters (`RelayStats`), the observer, and a
task group (`serve`, then `spawn`, relay.common.tasks) for the few things a door runs beyond one callback:
dry-run probes and plain HTTP requests.

Imports: anyio, the standard library, relay.backend, relay.capture, relay.common.tasks, relay.config,
relay.observer and relay.wire.
"""

from __future__ import annotations

import asyncio
import hmac
import itertools
import logging
import os
import platform
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import anyio
from anyio.abc import TaskStatus

from relay.backend import Backend, Respond, relay_error_status
from relay.capture.tap import CaptureTap, ConnectionTap
from relay.common.tasks import CallbackTasks
from relay.config import RelayConfig
from relay.observer import Observer
from relay.wire.messages import DataRequest, Route, Status, format_utc_seconds, now_ns

log = logging.getLogger("flowrelay.relay")

# How a door turns an answered request into the bytes it sends (a codec's encode_response, say).
Encode = Callable[[DataRequest], bytes]

UNAUTHORIZED_DETAIL = "missing or wrong token: send 'Authorization: Bearer TOKEN' or ?token=TOKEN"


@dataclass
class RelayStats:
    """Counters a person or /status can read; the observer (the metrics module) sees the same events."""

    started_at: float = field(default_factory=time.time)
    connections_open: int = 0
    connections_total: int = 0
    requests_total: int = 0
    requests_failed: int = 0
    in_flight: int = 0
    closes_sent: dict[int, int] = field(default_factory=dict)


class IdSource:
    """Request and document ids of the same shape as a Jina gateway's (32 hex characters, like
    uuid4().hex): a random per-process prefix and a counter, at a fifth of uuid4's cost."""

    def __init__(self, prefix: str | None = None) -> None:
        self._prefix = prefix if prefix is not None else os.urandom(8).hex()
        self._counter = itertools.count(1)

    def next(self) -> str:
        return f"{self._prefix}{next(self._counter):016x}"


def relay_version() -> str:
    try:
        from importlib.metadata import version

        return version("flowrelay")
    except Exception:
        return "dev"


class Gateway:
    """The request lifecycle over one backend, with the counters and the observer of one relay."""

    def __init__(self, config: RelayConfig, backend: Backend, observer: Observer | None = None,
                 ids: IdSource | None = None) -> None:
        self.config = config
        self.backend = backend
        self._submit = backend.submit  # looked up once: it is called for every request
        self.observer = observer or Observer()
        self.stats = RelayStats()
        self.ids = ids or IdSource()
        # What doors start from their callbacks and must await: dry-run probes, plain HTTP requests.
        self._tasks = CallbackTasks()
        # `--record DIR`: what the doors record through (relay.capture.tap); None when the relay does not record.
        self.capture: CaptureTap | None = None

    # ---- lifetime ------------------------------------------------------------------------------

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run the backend, and the tasks doors spawn, until cancelled (or until one of them fails)."""
        async with anyio.create_task_group() as tasks:
            await tasks.start(self.backend.serve)
            await tasks.start(self._tasks.run)
            task_status.started()

    @property
    def tasks_running(self) -> int:
        """Tasks the doors started that have not ended (dry-run probes, plain HTTP requests being answered)."""
        return len(self._tasks)

    def spawn(self, fn: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> None:
        """Run `fn(*args)` as a task of the gateway; callable from a protocol callback. The task must handle its
        own errors: one that escapes stops the relay. Raises RuntimeError when the gateway is not serving."""
        self._tasks.start_soon(fn, *args)

    # ---- authorize -----------------------------------------------------------------------------

    def authorized(self, authorization: str | None, query: str = "") -> bool:
        """Whether a caller may pass: no token configured, `authorization` is `Bearer TOKEN`, or the query
        string has `token=TOKEN` (browsers cannot set headers on a WebSocket handshake)."""
        token = self.config.auth_token
        if not token:
            return True
        expected = token.encode()
        bearer = authorization is not None and authorization.startswith("Bearer ")
        if bearer and hmac.compare_digest(authorization[7:].strip().encode(), expected):  # type: ignore[index]
            return True
        if not query:
            return False
        return any(hmac.compare_digest(t.encode(), expected) for t in parse_qs(query).get("token", []))

    # ---- connections (the WebSocket door's) ----------------------------------------------------

    def connection_opened(self, subprotocol: str) -> None:
        self.stats.connections_open += 1
        self.stats.connections_total += 1
        self.observer.connection_opened(subprotocol)

    def connection_closed(self, subprotocol: str, code_sent: int | None, code_received: int | None) -> None:
        stats = self.stats
        stats.connections_open -= 1
        if code_sent is not None:
            stats.closes_sent[code_sent] = stats.closes_sent.get(code_sent, 0) + 1
        self.observer.connection_closed(subprotocol, code_sent, code_received)

    # ---- recording -----------------------------------------------------------------------------

    def capture_connection(self, door: str, subprotocol: str, encode: Encode) -> ConnectionTap | None:
        """A new connection's recorder (`encode`: how its answers are encoded), or None when the relay does not
        record or sampling leaves the connection out."""
        capture = self.capture
        return capture.connection(door, subprotocol, encode) if capture is not None else None

    def capture_http_connection(self, key: int, encode: Encode) -> ConnectionTap | None:
        """The recorder of the HTTP connection the listener numbered `key` (keep-alive: several requests)."""
        capture = self.capture
        return capture.http_connection(key, encode) if capture is not None else None

    # ---- requests ------------------------------------------------------------------------------

    def admit(self, req: DataRequest, size: int, keep_client_id: bool, capture: ConnectionTap | None = None,
              raw: bytes | str = b"") -> None:
        """Stamp a decoded request as a Jina gateway does, and count it (`size`: the bytes it came in).
        `keep_client_id`: keep a non-empty request id the client chose (bytes and gRPC clients match answers
        by it); a json or HTTP client cannot choose, and gets one of ours. With `capture`, the request is
        recorded, `raw` being the frame or body it came in."""
        ids = self.ids
        if not (keep_client_id and req.request_id):
            req.request_id = ids.next()
        # Route entries a client sent are dropped, as a Jina gateway drops the ones it did not write.
        req.routes = [Route(self.config.name, now_ns())]
        if req.exec_endpoint is None:
            req.exec_endpoint = "/"
        if req.parameters is None:
            # A Jina gateway always answers with `parameters`, empty if none were sent (`12 00` in bytes).
            req.parameters = {}
        # In Documents, or in the protobuf documents of a bytes request (left unconverted, see proto_codec).
        req.fill_doc_ids(ids.next)
        stats = self.stats
        stats.requests_total += 1
        stats.in_flight += 1
        observer = self.observer
        observer.bytes_in(size)
        observer.request_started(req.exec_endpoint)
        if capture is not None:
            capture.request(req.request_id, req.exec_endpoint, raw)

    def run(self, req: DataRequest, respond: Respond) -> None:
        """Hand an admitted request to the backend; `respond(req)` once it holds its answer. A failure of the
        backend itself is answered as an error status (reported from the gateway hop)."""
        try:
            self._submit(req, respond)
        except Exception as exc:
            log.exception("request %s failed in the relay", req.request_id)
            req.status = relay_error_status(exc)
            respond(req)

    def finish(self, req: DataRequest, encode: Encode | None, door: str,
               capture: ConnectionTap | None = None) -> bytes | None:
        """End an answered request: the gateway entry's end time, its answer encoded (None: the client is gone,
        nothing to encode), counted and reported. Never raises: an answer that cannot be encoded is replaced by
        an error answer. With `capture`, the answer is recorded (encoded for the recording if the client is gone)."""
        gateway = req.routes[0]
        req.target_executor = ""
        end = gateway.end_ns = now_ns()
        payload = None
        observer = self.observer
        if encode is not None:
            try:
                payload = encode(req)
            except Exception as exc:
                payload = self._encode_failure(req, encode, exc)
            if payload is not None:
                observer.bytes_out(len(payload))
        stats = self.stats
        stats.in_flight -= 1
        if req.is_error:
            stats.requests_failed += 1
        observer.request_finished(req, (end - gateway.start_ns) / 1e9, door)  # type: ignore[operator]
        if capture is not None:
            capture.answered(req, payload)
        return payload

    def _encode_failure(self, req: DataRequest, encode: Encode, exc: Exception) -> bytes | None:
        log.exception("request %s: its answer could not be encoded", req.request_id)
        req.status = status = relay_error_status(exc, "encoding the answer")
        # The answer without what could not be encoded; without the Executors' route entries if even that fails.
        for routes in (req.routes, req.routes[:1]):
            bare = DataRequest(req.request_id, req.exec_endpoint, parameters={}, routes=routes, status=status)
            try:
                return encode(bare)
            except Exception:
                continue
        log.error("request %s: not even an error answer could be encoded; the client gets none", req.request_id)
        return None

    async def call(self, req: DataRequest, encode: Encode, door: str,
                   capture: ConnectionTap | None = None) -> bytes | None:
        """Run an admitted request and return its encoded answer, for a door that awaits one answer per call.
        If the caller is cancelled (its client left), the request is still finished when the backend answers,
        without being encoded."""
        answer: asyncio.Future[bytes | None] = asyncio.get_running_loop().create_future()

        def respond(done: DataRequest) -> None:
            wanted = not answer.done()
            payload = self.finish(done, encode if wanted else None, door, capture)
            if wanted:
                answer.set_result(payload)

        self.run(req, respond)
        return await answer

    # ---- about the backend ---------------------------------------------------------------------

    async def dry_run(self) -> Status:
        """The backend's dry run; a failure of the relay itself is reported as an error status."""
        try:
            return await self.backend.dry_run()
        except Exception as exc:
            log.exception("the dry run failed in the relay")
            return relay_error_status(exc, "dry run")

    async def endpoints(self) -> list[str]:
        """The backend's endpoints. Raises relay.backend.BackendUnavailable."""
        return await self.backend.endpoints()

    def status(self) -> dict[str, Any]:
        """The body of /status (and of gRPC `_status`), in the shape of a Jina gateway's."""
        s = self.stats
        return {
            "jina": {
                "flowrelay": relay_version(),
                "python": platform.python_version(),
                "platform": platform.system(),
                "architecture": platform.machine(),
                "uptime": format_utc_seconds(int(s.started_at)),
                "executors": ",".join(self.backend.executor_names),
                "prefetch": str(self.config.prefetch),
            },
            "envs": {"connections_open": str(s.connections_open), "requests_total": str(s.requests_total)},
            **self.backend.status(),
        }
