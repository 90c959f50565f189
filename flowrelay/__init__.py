"""flowrelay: a Jina-compatible relay (relay/) and a load engine (loadtest/), behind one command (flowrelay.cli)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("flowrelay")
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"
