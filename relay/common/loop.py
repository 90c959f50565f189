"""Event-loop set-up, the same for every process flowrelay starts: the relay, a load worker, ingestion.

uvloop is used when it is installed and not turned off with FLOWRELAY_NO_UVLOOP=1: it is passed as a loop
factory to the one run of a process, never installed as the global event-loop policy (policies are
deprecated from Python 3.14, and a global policy would also change the loop of code that merely imports us).
`run` starts `main` under anyio, so that everything that lives longer than one message is structured by its
task groups and cancel scopes.

A background task that fails must end what it serves, with the error named, never silently: `task_group()` is an
anyio task group whose failure comes out as the error itself (not an ExceptionGroup of one), and `watched(name,
fn)` runs a long-lived task so that its failure reads `ticker failed: KeyError: 'x'` (`TaskFailed`).

Imports: the standard library and anyio (uvloop when present); nothing of the relay server or the load engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import anyio
from anyio.abc import TaskGroup

T = TypeVar("T")

NO_UVLOOP_ENV = "FLOWRELAY_NO_UVLOOP"


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's `new_event_loop` when it is to be used, else None (asyncio's own loop)."""
    if os.environ.get(NO_UVLOOP_ENV):
        return None
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def run(main: Callable[..., Awaitable[T]], *args: Any) -> T:
    """Run `main(*args)` to completion in a new event loop (uvloop when available) and return its result."""
    factory = loop_factory()
    options: dict[str, Any] = {"loop_factory": factory} if factory is not None else {}
    return anyio.run(main, *args, backend="asyncio", backend_options=options)


class TaskFailed(Exception):
    """A long-lived task failed (or, for one that must last, ended); the message names the task and its error
    (kept as `error` and as the cause)."""

    def __init__(self, task: str, error: BaseException | None) -> None:
        what = "; ".join(describe_error(e) for e in leaf_exceptions(error)) if error is not None else "it ended"
        super().__init__(f"{task} failed: {what}")
        self.task = task
        self.error = error


async def watched(task: str, fn: Callable[..., Awaitable[Any]], *args: Any, forever: bool = False,
                  **kwargs: Any) -> None:
    """Run `fn(*args, **kwargs)` as the long-lived task `task`: an error it raises comes out as TaskFailed naming
    it. `forever`: the task must last as long as its group (a relay's keepalive), so its ending is a failure too.
    Keywords go on to `fn` (anyio's `task_status`, when started with `TaskGroup.start`)."""
    try:
        await fn(*args, **kwargs)
    except Exception as exc:
        raise TaskFailed(task, exc) from exc
    if forever:
        raise TaskFailed(task, None)


def leaf_exceptions(error: BaseException | None) -> list[BaseException]:
    """The errors inside an exception group (nested task groups nest them), or `error` itself."""
    if error is None:
        return []
    if not isinstance(error, BaseExceptionGroup):
        return [error]
    return [leaf for inner in error.exceptions for leaf in leaf_exceptions(inner)]


def describe_error(error: BaseException) -> str:
    """An error in one line for a person: `KeyError: 'x'`, or a TaskFailed's own `ticker failed: ...`."""
    if isinstance(error, TaskFailed):
        return str(error)
    return f"{type(error).__name__}: {error}"


def first_error(error: BaseException) -> BaseException:
    """The error a task group ended with, out of its group (the first, when several tasks failed at once)."""
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error


@contextlib.asynccontextmanager
async def task_group() -> AsyncIterator[TaskGroup]:
    """An anyio task group that, when a task fails, cancels the others and raises that task's error itself."""
    try:
        async with anyio.create_task_group() as tg:
            yield tg
    except BaseExceptionGroup as group:
        raise first_error(group) from None
