"""A task group that callbacks can start tasks in: for work that begins on the per-message path (a protocol's
`data_received`, a link's read) and must then await something, such as a request waiting for an asynchronous
Executor.

anyio's `TaskGroup.start_soon` is not made for that path: it must be called from a task (from a protocol
callback, with sniffio installed, it cannot tell which event loop runs), and it costs about ten times
`loop.create_task` (a cancel scope per task: ~40 us against ~4 us here). `CallbackTasks` keeps the structure
and drops the cost: `run` is the group's lifetime, inside an anyio task group like every other long-lived task;
`start_soon` creates a plain task from anywhere on the loop's thread; when `run` is cancelled it cancels every
task still running and waits for them; a task that raises ends `run` with that error, so the owner's task group
sees it. No task is left behind, none fails unseen.

Imports: asyncio, anyio and the standard library; nothing of the relay or the load engine.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import anyio
from anyio.abc import TaskStatus


class CallbackTasks:
    """Tasks started from callbacks, held by the one task that runs `run`."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._failed: asyncio.Future[BaseException] | None = None

    def __len__(self) -> int:
        return len(self._tasks)

    def start_soon(self, fn: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> None:
        """Start `fn(*args)` as a task of the group. Raises RuntimeError when the group is not running."""
        loop = self._loop
        if loop is None:
            raise RuntimeError("the task group is not running")
        task = loop.create_task(fn(*args))
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        failed = self._failed
        if exc is not None and failed is not None and not failed.done():
            failed.set_result(exc)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """The group's lifetime: until cancelled, or until one of its tasks raises (that error is raised here).
        On the way out every task still running is cancelled and awaited."""
        loop = self._loop = asyncio.get_running_loop()
        failed = self._failed = loop.create_future()
        task_status.started()
        try:
            raise await failed
        finally:
            self._loop = self._failed = None
            left = list(self._tasks)
            for task in left:
                task.cancel()
            if left:
                with anyio.CancelScope(shield=True):
                    await asyncio.wait(left)
