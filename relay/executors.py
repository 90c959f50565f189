"""Built-in Executors and the chain that runs them: the relay's embedded stand-in for a Flow.

Each Executor has a name (what appears in `routes`, like a Jina Deployment name) and a kind (the
class, which appears in `header.status.exception.executor` on failure, as a Jina Executor's class name
does). The chain stamps routes with the meaning of JINA-WIRE.md §7: one entry per Executor started,
start before it runs, end after; an Executor that `targetExecutor` does not match gets a start and
no end; after a failure the rest are skipped and get no entry.

Documents: an Executor says whether it reads or changes them (`uses_docs`). A bytes request arrives with
its documents still in protobuf form (relay.wire.proto_codec.decode_request); the chain converts them
to `Document`s just before the first Executor that needs them as such, so a chain of Executors that
leave them alone (echo, sleep, fail) or work on the protobuf form directly (`process_proto`: upper,
embed, record) sends them back out without converting them either way. Executors always see either
`req.docs` as Documents or, in `process_proto`, the protobuf documents; never a request half in each.

Specs on the command line: `[name=]kind[:arg[:arg...]]`, for example `upper`, `sleeper=sleep:2ms`,
`sleep:exponential:5ms`, `fail:0.1`, `fail:/fail`, `embed:128`, `record:/tmp/ids.sqlite`. Imports only
relay.wire, relay.backend, relay.common (units, tasks), anyio and the standard library.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import inspect
import logging
import math
import random
import re
import sqlite3
import struct
import traceback
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import TaskStatus

from relay.backend import DEFAULT_ENDPOINTS, Respond, relay_error_status
from relay.common.tasks import CallbackTasks
from relay.common.timers import precise_sleep
from relay.common.units import parse_duration
from relay.wire.documents import NdArray
from relay.wire.messages import STATUS_ERROR, DataRequest, ExceptionInfo, Route, Status, now_ns

if TYPE_CHECKING:
    from collections.abc import MutableSequence

    from relay.wire.proto.docarray_pb2 import DocumentProto

    ProtoDocs = MutableSequence[DocumentProto]

log = logging.getLogger("flowrelay.relay")


class ExecutorSpecError(ValueError):
    """An `--executor` spec that cannot be understood; the message says what is accepted."""


class Executor:
    """Base class. `process` changes `req.docs` in place; raising marks the request failed.

    `uses_docs`: whether `process` reads or changes `req.docs`. When it does (the default, the safe
    choice), the chain makes sure `req.docs` holds Documents before calling it. An Executor that never
    looks at the documents sets it False and spares bytes requests the conversion.

    `proto_docs`: whether `process_proto` (`process_proto_async` for an asynchronous Executor) does the
    work of `process` on documents still in protobuf form: `docs` is the list of `DocumentProto`s, to
    read and change in place, with what a DocumentProto writes for what `process` does to a Document
    (a field the Document model leaves None is absent, "" for a string). The chain calls it instead
    of converting the documents, and the answer must be the same bytes either way (tests/test_wire_lazy.py).
    """

    kind = "Executor"
    is_async = False
    uses_docs = True
    proto_docs = False

    def __init__(self, name: str) -> None:
        self.name = name

    def process(self, req: DataRequest, params: dict[str, Any]) -> None:
        raise NotImplementedError

    async def process_async(self, req: DataRequest, params: dict[str, Any]) -> None:
        self.process(req, params)

    def process_proto(self, req: DataRequest, docs: ProtoDocs, params: dict[str, Any]) -> None:
        raise NotImplementedError

    async def process_proto_async(self, req: DataRequest, docs: ProtoDocs, params: dict[str, Any]) -> None:
        self.process_proto(req, docs, params)

    def describe(self) -> str:
        return self.kind


class EchoExecutor(Executor):
    """Returns the documents unchanged."""

    kind = "EchoExecutor"
    uses_docs = False

    def process(self, req: DataRequest, params: dict[str, Any]) -> None:
        return None


class UpperExecutor(Executor):
    """Upper-cases each document's text."""

    kind = "UpperExecutor"
    proto_docs = True

    def process(self, req: DataRequest, params: dict[str, Any]) -> None:
        for doc in req.docs or ():
            if doc.text is not None:
                doc.text = doc.text.upper()

    def process_proto(self, req: DataRequest, docs: ProtoDocs, params: dict[str, Any]) -> None:
        for d in docs:
            # Unset text reads as "", and "" needs no change: no HasField needed.
            text = d.text
            if text:
                d.text = text.upper()


class SleepExecutor(Executor):
    """Waits, without blocking other requests: a fixed delay or a draw from a distribution.

    `parameters.sleep_ms` (or `<name>__sleep_ms`) in a request overrides the configured delay,
    as the Jina peer's SleepExec does.
    """

    kind = "SleepExecutor"
    is_async = True
    uses_docs = False

    def __init__(
        self, name: str, median_s: float, distribution: str = "fixed", sigma: float = 0.5, seed: int | None = None
    ) -> None:
        super().__init__(name)
        if distribution not in ("fixed", "exponential", "lognormal"):
            raise ExecutorSpecError(f"sleep distribution must be fixed, exponential or lognormal, not {distribution!r}")
        self.median_s = median_s
        self.distribution = distribution
        self.sigma = sigma
        self._rng = random.Random(seed)

    def delay_s(self) -> float:
        if self.distribution == "exponential":
            # An exponential with median m has mean m / ln 2.
            return self._rng.expovariate(math.log(2) / self.median_s) if self.median_s > 0 else 0.0
        if self.distribution == "lognormal":
            return self._rng.lognormvariate(math.log(self.median_s), self.sigma) if self.median_s > 0 else 0.0
        return self.median_s

    def delay_for(self, params: dict[str, Any]) -> float:
        """This request's delay in seconds: its `sleep_ms` parameter, else the configured delay or a draw."""
        override = params.get("sleep_ms")
        return float(override) / 1000.0 if isinstance(override, (int, float)) else self.delay_s()

    async def process_async(self, req: DataRequest, params: dict[str, Any]) -> None:
        # Not asyncio.sleep: under uvloop it can return up to a millisecond early when the loop is busy,
        # and this delay is what users calibrate against (relay.common.timers).
        await precise_sleep(self.delay_for(params))

    def process(self, req: DataRequest, params: dict[str, Any]) -> None:
        raise RuntimeError("SleepExecutor is asynchronous")

    def describe(self) -> str:
        return f"{self.kind}({self.distribution}, median {self.median_s * 1000:g} ms)"


class FailExecutor(Executor):
    """Raises ValueError on a fraction of requests (deterministic: every k-th), or on one endpoint."""

    kind = "FailExecutor"
    uses_docs = False

    def __init__(self, name: str, fraction: float = 0.0, endpoint: str | None = None) -> None:
        super().__init__(name)
        if not 0.0 <= fraction <= 1.0:
            raise ExecutorSpecError(f"fail fraction must be between 0 and 1, not {fraction}")
        self.fraction = fraction
        self.endpoint = endpoint
        self._seen = 0
        self._failed = 0

    def process(self, req: DataRequest, params: dict[str, Any]) -> None:
        if self.endpoint is not None:
            if req.exec_endpoint == self.endpoint:
                raise ValueError(f"deliberate failure from {self.name} on {self.endpoint}")
            return
        # Spread failures evenly: fail whenever the running failure count falls behind fraction * seen.
        self._seen += 1
        if self._failed < math.floor(self._seen * self.fraction + 1e-9):
            self._failed += 1
            raise ValueError(f"deliberate failure from {self.name} ({self.fraction:g} of requests)")

    def describe(self) -> str:
        if self.endpoint is not None:
            return f"{self.kind}(on {self.endpoint})"
        return f"{self.kind}({self.fraction:g} of requests)"


class EmbedExecutor(Executor):
    """Writes a deterministic float32 embedding of `dim` values, derived from the text (or id)."""

    kind = "EmbedExecutor"
    proto_docs = True

    def __init__(self, name: str, dim: int = 128) -> None:
        super().__init__(name)
        if dim <= 0:
            raise ExecutorSpecError(f"embed dimension must be positive, not {dim}")
        self.dim = dim

    def process(self, req: DataRequest, params: dict[str, Any]) -> None:
        for doc in req.docs or ():
            seed = (doc.text if doc.text is not None else doc.id or "").encode("utf-8")
            # cls_name "numpy", as docarray writes a numpy array: a docarray < 0.30 reader drops arrays without one.
            doc.embedding = NdArray(_deterministic_floats(seed, self.dim), (self.dim,), "<f4", "numpy")

    def process_proto(self, req: DataRequest, docs: ProtoDocs, params: dict[str, Any]) -> None:
        dim = self.dim
        for d in docs:
            seed = (d.text if d.HasField("text") else d.id).encode("utf-8")
            emb = d.embedding
            # Replaced whole, as assigning a new NdArray does: nothing of a client's embedding is left.
            emb.Clear()
            dense = emb.dense
            dense.buffer = _deterministic_floats(seed, dim)
            dense.shape.append(dim)
            dense.dtype = "<f4"
            emb.cls_name = "numpy"

    def describe(self) -> str:
        return f"{self.kind}(dim {self.dim})"


class RecordExecutor(Executor):
    """Records every document id it sees in a SQLite file, durably: one transaction per request, committed
    (WAL, synchronous=FULL) before the request is answered. Table `ids(id TEXT PRIMARY KEY, n INTEGER)`,
    `n` counting how often the id came by. For tests of delivery guarantees: what is in the file arrived.

    The writes run in one thread of their own, so a disk sync never stalls the event loop."""

    kind = "RecordExecutor"
    is_async = True
    proto_docs = True

    def __init__(self, name: str, path: str) -> None:
        super().__init__(name)
        if not path:
            raise ExecutorSpecError("record takes the path of a SQLite file, e.g. record:/tmp/ids.sqlite")
        self.path = path
        try:
            # Opened here, so a bad path is a usage error at start; used only by the one writer thread.
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("CREATE TABLE IF NOT EXISTS ids (id TEXT PRIMARY KEY, n INTEGER NOT NULL)")
        except sqlite3.Error as exc:
            raise ExecutorSpecError(f"record: cannot open {path!r}: {exc}") from None
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="record")

    def _write(self, ids: list[tuple[str]]) -> None:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany("INSERT INTO ids (id, n) VALUES (?, 1) ON CONFLICT(id) DO UPDATE SET n = n + 1", ids)
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    async def process_async(self, req: DataRequest, params: dict[str, Any]) -> None:
        ids = [(doc.id or "",) for doc in req.docs or ()]
        if ids:
            await asyncio.get_running_loop().run_in_executor(self._pool, self._write, ids)

    async def process_proto_async(self, req: DataRequest, docs: ProtoDocs, params: dict[str, Any]) -> None:
        ids = [(d.id,) for d in docs]
        if ids:
            await asyncio.get_running_loop().run_in_executor(self._pool, self._write, ids)

    def process(self, req: DataRequest, params: dict[str, Any]) -> None:
        raise RuntimeError("RecordExecutor is asynchronous")

    def describe(self) -> str:
        return f"{self.kind}({self.path})"


def _deterministic_floats(seed: bytes, dim: int) -> bytes:
    """`dim` little-endian float32 values in [-1, 1), the same for the same seed on every machine."""
    out = bytearray()
    counter = 0
    while len(out) < dim * 4:
        block = hashlib.blake2b(seed + counter.to_bytes(4, "little"), digest_size=64).digest()
        for (n,) in struct.iter_unpack("<I", block):
            out += struct.pack("<f", n / 2**31 - 1.0)
        counter += 1
    return bytes(out[: dim * 4])


def _sleep_from_args(name: str, args: list[str]) -> Executor:
    if not args:
        return SleepExecutor(name, 0.0)
    if len(args) == 1:
        return SleepExecutor(name, parse_duration(args[0]))
    dist, median = args[0], parse_duration(args[1])
    sigma = 0.5
    for extra in args[2:]:
        key, _, value = extra.partition("=")
        if key != "sigma" or not value:
            raise ExecutorSpecError(f"unknown sleep option {extra!r} (expected sigma=NUMBER)")
        sigma = float(value)
    return SleepExecutor(name, median, dist, sigma)


def _fail_from_args(name: str, args: list[str]) -> Executor:
    if not args:
        return FailExecutor(name, fraction=1.0)
    arg = args[0]
    if arg.startswith("/"):
        return FailExecutor(name, endpoint=arg)
    try:
        fraction = float(arg)
    except ValueError:
        raise ExecutorSpecError(f"fail takes a fraction (0.1) or an endpoint (/fail), not {arg!r}") from None
    return FailExecutor(name, fraction=fraction)


def _embed_from_args(name: str, args: list[str]) -> Executor:
    try:
        dim = int(args[0]) if args else 128
    except ValueError:
        raise ExecutorSpecError(f"embed takes a dimension, not {args[0]!r}") from None
    return EmbedExecutor(name, dim)


KINDS: dict[str, Callable[[str, list[str]], Executor]] = {
    "echo": lambda name, args: EchoExecutor(name),
    "upper": lambda name, args: UpperExecutor(name),
    "sleep": _sleep_from_args,
    "fail": _fail_from_args,
    "embed": _embed_from_args,
    # The path may hold ':' itself.
    "record": lambda name, args: RecordExecutor(name, ":".join(args)),
}

_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
# Arguments a kind accepts at most (sleep checks its own); extra ones are an error, not ignored.
_MAX_ARGS = {"echo": 0, "upper": 0, "fail": 1, "embed": 1}


def parse_executor_spec(spec: str) -> Executor:
    """`[name=]kind[:arg...]` -> an Executor. The name defaults to the kind."""
    # The name is what precedes `=` in the part before the first `:`; arguments may hold `=` (sigma=0.5).
    head, colon, tail = spec.partition(":")
    name, sep, kind = head.partition("=")
    if not sep:
        name, kind = "", head
    args = tail.split(":") if colon else []
    name = name or kind
    if kind not in KINDS:
        raise ExecutorSpecError(f"unknown executor kind {kind!r} in {spec!r}; known: {', '.join(KINDS)}")
    if not _NAME.match(name):
        raise ExecutorSpecError(f"executor name {name!r} may hold only letters, digits, '_', '-' and '.'")
    most = _MAX_ARGS.get(kind)
    if most is not None and len(args) > most:
        takes = "no argument" if most == 0 else "one argument"
        raise ExecutorSpecError(f"{kind} takes {takes}, got {':'.join(args)!r} in {spec!r}")
    try:
        return KINDS[kind](name, args)
    except ValueError as exc:
        if isinstance(exc, ExecutorSpecError):
            raise
        raise ExecutorSpecError(f"{spec!r}: {exc}") from None


_NO_PARAMS: dict[str, Any] = {}


def params_for(executor: str, parameters: dict[str, Any] | None) -> dict[str, Any]:
    """The parameters an Executor sees: plain keys, overridden by `<executor>__<key>` keys.
    (Executors must not change the dict they are given.)"""
    if not parameters:
        return _NO_PARAMS
    prefix = executor + "__"
    out = {k: v for k, v in parameters.items() if "__" not in k}
    for k, v in parameters.items():
        if k.startswith(prefix):
            out[k[len(prefix) :]] = v
    return out


def _error_status(exc: BaseException, executor: Executor) -> Status:
    return Status(
        code=STATUS_ERROR,
        description=repr(exc),
        exception=ExceptionInfo(
            name=type(exc).__name__,
            args=[str(a) for a in exc.args],
            stacks=traceback.format_exception(exc),
            executor=executor.kind,
        ),
    )


# An asynchronous Executor's step, started and not yet awaited: its index, its route entry, what to await.
_Pending = tuple[int, Route, Awaitable[None]]


class Chain:
    """The Executors in order, as a Flow `gateway -> e1 -> e2 -> ...`: the relay's embedded backend
    (relay.backend.Backend).

    A request runs inline, in the call that submits it, up to the first asynchronous Executor; from there on
    it runs in a task of its own in the chain's task group (`serve`), and is answered from that task."""

    def __init__(self, executors: list[Executor]) -> None:
        names = [e.name for e in executors]
        if len(set(names)) != len(names):
            raise ExecutorSpecError(f"executor names must be unique, got {names}")
        self.executors = executors
        self.is_async = any(e.is_async for e in executors)
        # Requests waiting for an asynchronous Executor, a task each (started from the door's callback).
        self._tasks = CallbackTasks()

    @classmethod
    def from_specs(cls, specs: list[str]) -> Chain:
        return cls([parse_executor_spec(s) for s in specs])

    # ---- Backend -------------------------------------------------------------------------------

    @property
    def executor_names(self) -> list[str]:
        return [e.name for e in self.executors]

    @property
    def healthy(self) -> bool:
        return True

    def describe(self) -> str:
        return " -> ".join(f"{e.describe()} as {e.name}" for e in self.executors) or "no executors"

    def status(self) -> dict[str, Any]:
        return {}

    async def endpoints(self) -> list[str]:
        return list(DEFAULT_ENDPOINTS)

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Hold the tasks of requests that wait for asynchronous Executors, until cancelled (then they are
        cancelled too, and answered with an error)."""
        await self._tasks.run(task_status=task_status)

    def submit(self, req: DataRequest, respond: Respond) -> None:
        """Run `req` inline as far as it goes; answer it now, or from a task once its asynchronous Executors
        are done."""
        selected = self._selected(req) if req.target_executor else None
        pending = self._advance(req, 0, selected)
        if pending is None:
            respond(req)
            return
        try:
            self._tasks.start_soon(self._rest, req, selected, pending, respond)
        except RuntimeError:
            _discard(pending)
            raise RuntimeError("the chain is not serving (Chain.serve): no asynchronous Executor can run") from None

    async def dry_run(self) -> Status:
        """Push an empty request through every Executor, as a Jina gateway's dry run does."""
        req = DataRequest(exec_endpoint="_jina_dry_run_", docs=[])
        await self.run(req)
        return req.status or Status()

    # ---- running -------------------------------------------------------------------------------

    def run_sync(self, req: DataRequest) -> None:
        """Run every Executor inline (only for chains with no asynchronous Executor)."""
        pending = self._advance(req, 0, self._selected(req) if req.target_executor else None)
        if pending is not None:
            _discard(pending)
            raise RuntimeError(f"{self.executors[pending[0]].name} is asynchronous: use Chain.run")

    async def run(self, req: DataRequest) -> None:
        """Run every Executor, awaiting the asynchronous ones."""
        selected = self._selected(req) if req.target_executor else None
        pending = self._advance(req, 0, selected)
        if pending is not None:
            await self._rest(req, selected, pending, None)

    async def _rest(
        self, req: DataRequest, selected: list[bool] | None, pending: _Pending | None, respond: Respond | None
    ) -> None:
        """The chain from an asynchronous Executor on (a request's task, when `respond` is given), then the answer:
        an error status if the chain itself failed, or if the relay stopped first."""
        executors = self.executors
        try:
            while pending is not None:
                i, route, waiting = pending
                try:
                    await waiting
                except Exception as exc:
                    _failed(req, route, exc, executors[i])
                    break
                route.end_ns = now_ns()
                pending = self._advance(req, i + 1, selected)
        except asyncio.CancelledError as exc:
            req.status = relay_error_status(exc, "the relay stopped before the request was answered")
            if respond is not None:
                _respond_logged(respond, req)
            raise
        except Exception as exc:  # not an Executor's error (those are in the status): the chain's own
            log.exception("request %s failed in the chain", req.request_id)
            req.status = relay_error_status(exc)
        if respond is not None:
            try:  # (not _respond_logged: a call less for every request)
                respond(req)
            except Exception:
                log.exception("answering request %s failed", req.request_id)

    def _advance(self, req: DataRequest, start: int, selected: list[bool] | None) -> _Pending | None:
        """Run the Executors from `start` on, inline, until the chain ends or fails (None) or an asynchronous
        one has started (what is left to await)."""
        executors = self.executors
        routes = req.routes
        parameters = req.parameters
        clock = now_ns
        for i in range(start, len(executors)):
            ex = executors[i]
            route = Route(ex.name, clock())
            routes.append(route)
            if selected is not None and not selected[i]:
                continue
            try:
                params = params_for(ex.name, parameters) if parameters else _NO_PARAMS
                docs_pb = None
                if req.raw_docs is not None and ex.uses_docs:
                    docs_pb = req.docs_proto if ex.proto_docs else None
                    if docs_pb is None:
                        # Converted here, so that a document the model cannot hold fails this Executor's request.
                        req.load_docs()
                if ex.is_async:
                    if docs_pb is not None:
                        return i, route, ex.process_proto_async(req, docs_pb, params)
                    return i, route, ex.process_async(req, params)
                if docs_pb is not None:
                    ex.process_proto(req, docs_pb, params)
                else:
                    ex.process(req, params)
            except Exception as exc:
                _failed(req, route, exc, ex)
                return None
            route.end_ns = clock()
        return None

    def _selected(self, req: DataRequest) -> list[bool]:
        target = req.target_executor
        if not target:
            return [True] * len(self.executors)
        try:
            pattern = re.compile(target)
        except re.error:
            # Jina matches names with re.match; an invalid pattern matches nothing.
            return [False] * len(self.executors)
        return [pattern.match(e.name) is not None for e in self.executors]


def _failed(req: DataRequest, route: Route, exc: Exception, executor: Executor) -> None:
    """An Executor raised: its route entry ends with the error, which is the request's status; the rest of
    the chain is skipped (no entries), as in a Jina Flow."""
    route.end_ns = now_ns()
    route.status = req.status = _error_status(exc, executor)


def _discard(pending: _Pending) -> None:
    """Close an asynchronous step that will never be awaited (no "never awaited" warning)."""
    waiting = pending[2]
    if inspect.iscoroutine(waiting):
        waiting.close()


def _respond_logged(respond: Respond, req: DataRequest) -> None:
    try:
        respond(req)
    except Exception:  # a door's answer path must not raise (relay.backend.Respond); if it does, say so
        log.exception("answering request %s failed", req.request_id)
