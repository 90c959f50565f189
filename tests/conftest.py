"""Shared pytest fixtures.

The real-Jina fixtures are thin wrappers: the start/stop logic lives in ``jina_peer.py``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from jina_peer import RunningFlow, flow_fixture


@pytest.fixture(scope="module")
def jina_flow() -> Iterator[RunningFlow]:
    """A real Jina 3.34 Flow (docarray legacy, WebSocket gateway, `upper` -> `sleeper` at 2 ms)."""
    yield from flow_fixture(flavour="legacy", protocol="websocket", sleep_ms=2.0)


@pytest.fixture(scope="module")
def jina_flow_v2() -> Iterator[RunningFlow]:
    """The same Flow on docarray >= 0.30, whose gateway speaks only the `bytes` subprotocol."""
    yield from flow_fixture(flavour="v2", protocol="websocket", sleep_ms=2.0)
