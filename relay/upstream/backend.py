"""The backend that answers the relay's clients from a real upstream Flow (the embedded Chain's twin), and the
mirror that copies each request to a shadow Flow whose answers are measured and discarded.

A client's request is forwarded by the pool (relay.upstream.pool) and its answer handed straight back to the
client's door through `submit`'s callback. A Jina gateway strips route entries it did not write, so the answer's
routes are rebuilt: the relay's own `gateway` entry first, then the upstream's entries, with the upstream
gateway's own entry renamed `upstream`. A load test through the relay thus sees every hop and the relay's cost.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from relay.upstream.pool import UPSTREAM_ROUTE, UpstreamError, UpstreamPool, upstream_error_status
from relay.wire.errors import WireError
from relay.wire.messages import DataRequest, Route, Status


@dataclass
class MirrorStats:
    """The shadow Flow's figures, beside the primary's."""

    sent: int = 0
    ok: int = 0
    failed: int = 0
    durations_s: list[float] = field(default_factory=list)


class UpstreamBackend:
    """What the server runs requests through when it fronts a real Flow (the embedded Chain's twin)."""

    is_async = True

    def __init__(self, primary: UpstreamPool, mirror: UpstreamPool | None = None, observer: Any = None) -> None:
        self.executors: list[Any] = []
        self.primary = primary
        self.mirror = mirror
        self.observer = observer
        self.mirror_stats = MirrorStats()
        self._shadow_tasks: set[asyncio.Task[None]] = set()

    def describe(self) -> str:
        cfg = self.primary.cfg
        text = f"upstream {cfg.url} ({cfg.subprotocol}, docarray {cfg.docarray}, {len(self.primary.links)} links)"
        if self.mirror is not None:
            text += f", mirrored to {self.mirror.cfg.url}"
        return text

    async def start(self) -> None:
        await self.primary.start()
        if self.mirror is not None:
            await self.mirror.start()

    async def close(self) -> None:
        for task in list(self._shadow_tasks):
            task.cancel()
        await self.primary.close()
        if self.mirror is not None:
            await self.mirror.close()

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {"upstream": self.primary.status()}
        if self.mirror is not None:
            m = self.mirror_stats
            out["mirror"] = {**self.mirror.status(), "sent": m.sent, "ok": m.ok, "failed": m.failed}
        return out

    async def dry_run(self) -> Status:
        return await self.primary.dry_run()

    async def run(self, req: DataRequest) -> None:
        """Forward `req`, then fill it in with the upstream's answer (docs, status, parameters, routes)."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.submit(req, lambda _req: fut.done() or fut.set_result(None))
        await fut

    def submit(self, req: DataRequest, respond: Callable[[DataRequest], None]) -> None:
        """As `run`, but `respond(req)` is called once `req` holds the answer (or the failure): straight from
        the upstream link's read, with no task per request."""
        # Documents in protobuf form come from a bytes client, which can be answered in that form too.
        answer_in_proto = req.raw is not None
        if self.mirror is not None:
            # Built now, before the answer replaces req.docs: the shadow gets what the client sent.
            shadow = DataRequest(
                exec_endpoint=req.exec_endpoint,
                target_executor=req.target_executor,
                parameters=dict(req.parameters) if req.parameters else None,
                docs=req.docs,
            )
            # Documents in protobuf form stay so: the shadow's copy for its Flow reads them, never writes.
            shadow.raw, shadow.raw_docs = req.raw, req.raw_docs
            task = asyncio.create_task(self._shadow(shadow))
            self._shadow_tasks.add(task)
            task.add_done_callback(self._shadow_tasks.discard)

        def done(resp: DataRequest | None, error: str | None) -> None:
            self._fill(req, resp, error, answer_in_proto)
            respond(req)

        self.primary.submit(req, done)

    def _fill(self, req: DataRequest, resp: DataRequest | None, error: str | None, answer_in_proto: bool) -> None:
        if resp is None:
            req.status = upstream_error_status(error or "upstream failed", "UpstreamError")
            return
        if resp.raw is not None and not answer_in_proto:
            try:
                resp.load_docs()
            except WireError as exc:
                req.status = upstream_error_status(f"upstream {self.primary.cfg.url} answered: {exc.reason}")
                return
        req.take_docs(resp)
        req.status = resp.status
        if resp.parameters is not None:
            req.parameters = resp.parameters
        own = req.routes[:1]
        for r in resp.routes:
            own.append(Route(UPSTREAM_ROUTE, r.start_ns, r.end_ns, r.status) if r.executor == "gateway" else r)
        req.routes = own

    async def _shadow(self, shadow: DataRequest) -> None:
        assert self.mirror is not None
        stats = self.mirror_stats
        stats.sent += 1
        start = time.perf_counter()
        try:
            resp = await self.mirror.forward(shadow)
        except UpstreamError:
            stats.failed += 1
            ok = False
        else:
            ok = not resp.is_error
            if ok:
                stats.ok += 1
            else:
                stats.failed += 1
        duration = time.perf_counter() - start
        if len(stats.durations_s) < 100_000:
            stats.durations_s.append(duration)
        if self.observer is not None and hasattr(self.observer, "mirror_finished"):
            self.observer.mirror_finished(ok, duration)
