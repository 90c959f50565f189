"""The backend that answers the relay's clients from a real upstream Flow (the embedded Chain's twin, both
relay.backend.Backend), and the mirror that copies each request to a shadow Flow whose answers are measured
and discarded.

A client's request is forwarded by the pool (relay.upstream.pool) and its answer handed straight back to the
client's door through `submit`'s callback; the mirror's copy goes the same way, with a callback that only
counts. No task or future per request. A Jina gateway strips route entries it did not write, so the answer's
routes are rebuilt: the relay's own `gateway` entry first, then the upstream's entries, with the upstream
gateway's own entry renamed `upstream`. A load test through the relay thus sees every hop and the relay's cost.

Imports: anyio, the standard library, relay.backend, relay.observer, relay.upstream.pool and relay.wire.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import anyio
from anyio.abc import TaskStatus

from relay.backend import BackendUnavailable, Respond, relay_error_status
from relay.observer import Observer
from relay.upstream.pool import UPSTREAM_ROUTE, UpstreamError, UpstreamPool, upstream_error_status
from relay.wire.errors import WireError
from relay.wire.messages import DataRequest, Route, Status
from relay.wire.splice import GATEWAY_EXECUTOR

# Mirror durations kept for /status, at most (the histogram in /metrics has them all).
MIRROR_DURATIONS_KEPT = 100_000


@dataclass
class MirrorStats:
    """The shadow Flow's figures, beside the primary's."""

    sent: int = 0
    ok: int = 0
    failed: int = 0
    durations_s: list[float] = field(default_factory=list)


class UpstreamBackend:
    """What the gateway runs requests through when the relay fronts a real Flow."""

    def __init__(self, primary: UpstreamPool, mirror: UpstreamPool | None = None,
                 observer: Observer | None = None) -> None:
        self.primary = primary
        self.mirror = mirror
        # Where the mirror's figures go besides /status (the relay's Prometheus exporter).
        self.observer = observer or Observer()
        self.mirror_stats = MirrorStats()

    # ---- Backend -------------------------------------------------------------------------------

    @property
    def executor_names(self) -> list[str]:
        return []  # the upstream's Executors show in the answers' routes, not here

    @property
    def healthy(self) -> bool:
        return self.primary.healthy

    def describe(self) -> str:
        cfg = self.primary.cfg
        text = f"upstream {cfg.url} ({cfg.subprotocol}, docarray {cfg.docarray}, {len(self.primary.links)} links)"
        if self.mirror is not None:
            text += f", mirrored to {self.mirror.cfg.url}"
        return text

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Connect the primary (and the mirror), then run their links' upkeep until cancelled."""
        async with anyio.create_task_group() as tasks:
            await tasks.start(self.primary.serve)
            if self.mirror is not None:
                await tasks.start(self.mirror.serve)
            task_status.started()

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {"upstream": self.primary.status()}
        if self.mirror is not None:
            m = self.mirror_stats
            out["mirror"] = {**self.mirror.status(), "sent": m.sent, "ok": m.ok, "failed": m.failed}
        return out

    async def dry_run(self) -> Status:
        return await self.primary.dry_run()

    async def endpoints(self) -> list[str]:
        try:
            return await self.primary.endpoint_discovery()
        except UpstreamError as exc:
            raise BackendUnavailable(str(exc)) from None

    def submit(self, req: DataRequest, respond: Respond) -> None:
        """Forward `req`; `respond(req)` once it holds the upstream's answer (or the failure), called straight
        from the upstream link's read."""
        # Documents in protobuf form come from a bytes client, which can be answered in that form too.
        answer_in_proto = req.raw is not None
        if self.mirror is not None:
            self._mirror(req)

        def done(resp: DataRequest | None, error: str | None) -> None:
            try:
                self._fill(req, resp, error, answer_in_proto)
            except Exception as exc:  # the client gets an error status, and the link that read the answer lives on
                req.spliced = None
                req.status = relay_error_status(exc, "reading the upstream's answer")
            respond(req)

        self.primary.submit(req, done)

    # ---- answers -------------------------------------------------------------------------------

    def _fill(self, req: DataRequest, resp: DataRequest | None, error: str | None, answer_in_proto: bool) -> None:
        if resp is None:
            req.status = upstream_error_status(error or "upstream failed", "UpstreamError")
            return
        spliced = resp.spliced
        if spliced is not None:
            if spliced.subprotocol == req.answer_subprotocol:
                # Answered as the upstream's bytes, the relay's parts spliced in (relay.wire.splice): the request's
                # documents are not part of the answer.
                req.docs = req.docs_bytes = req.raw = req.raw_docs = req.raw_parameters = None
                req.status = resp.status
                req.routes = self._routes(req, resp)
                req.spliced = spliced
                return
            resp = spliced.decode()
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
        req.routes = self._routes(req, resp)

    @staticmethod
    def _routes(req: DataRequest, resp: DataRequest) -> list[Route]:
        """The relay's own entry, then the upstream's, its gateway's own renamed."""
        own = req.routes[:1]
        for r in resp.routes:
            own.append(Route(UPSTREAM_ROUTE, r.start_ns, r.end_ns, r.status) if r.executor == GATEWAY_EXECUTOR else r)
        return own

    # ---- the mirror ----------------------------------------------------------------------------

    def _mirror(self, req: DataRequest) -> None:
        """Send the shadow Flow a copy of `req`, as the client sent it; its answer is only counted."""
        assert self.mirror is not None
        shadow = DataRequest(
            exec_endpoint=req.exec_endpoint,
            target_executor=req.target_executor,
            parameters=dict(req.parameters) if req.parameters else None,
            docs=req.docs,
        )
        # Documents in protobuf form stay so: the shadow's copy for its Flow reads them, never writes.
        shadow.raw, shadow.raw_docs = req.raw, req.raw_docs
        self.mirror_stats.sent += 1
        start = time.perf_counter()

        def done(resp: DataRequest | None, error: str | None) -> None:
            self._mirrored(resp is not None and not resp.is_error, time.perf_counter() - start)

        self.mirror.submit(shadow, done)

    def _mirrored(self, ok: bool, duration_s: float) -> None:
        stats = self.mirror_stats
        if ok:
            stats.ok += 1
        else:
            stats.failed += 1
        if len(stats.durations_s) < MIRROR_DURATIONS_KEPT:
            stats.durations_s.append(duration_s)
        self.observer.mirror_finished(ok, duration_s)
