"""Event-loop set-up, the same for every process flowrelay starts: the relay, a load worker, ingestion.

uvloop is used when it is installed and not turned off with FLOWRELAY_NO_UVLOOP=1: it is passed as a loop
factory to the one run of a process, never installed as the global event-loop policy (policies are
deprecated from Python 3.14, and a global policy would also change the loop of code that merely imports us).
`run` starts `main` under anyio, so that everything that lives longer than one message is structured by its
task groups and cancel scopes.

Imports: the standard library and anyio (uvloop when present); nothing of the relay server or the load engine.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio

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
