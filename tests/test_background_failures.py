"""A background task that fails ends the run at once, with the error named and exit 1: never a run that goes on
for its whole duration without timeouts or a time series, and never a crash reported as something else.

Each test runs the installed `flowrelay` in a process of its own, with one function replaced before the CLI starts
(the only way to make a healthy engine fail on purpose): the load worker's ticker, a worker of a `--procs` run,
ingestion's connect and its ticker. Runs are asked for a minute; the subprocess is given far less, so a failure
that went unnoticed until the end would time the test out. Also: a broken install (a module that cannot be
imported) shows the import error rather than turning `flowrelay load` into an unknown verb.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from relay_process import RelayProcess, run_relay

EXIT_RUN_FAILED = 1
# Far below the runs' own length (60 s): a failure noticed only at the end would overrun it.
PROMPT_S = 30.0

RUN_CLI = """
import sys
{patch}
from flowrelay.cli.main import main
sys.exit(main(sys.argv[1:]))
"""

TICKER_FAILS = """
import loadtest.measure.meter as meter

def close_interval(self, *args):
    raise RuntimeError("injected into the ticker")

meter.Meter.close_interval = close_interval
"""

# Worker 1 of a `--procs` run ends half a second in, as `{ending}` says.
WORKER_1_ENDS = """
import os
import anyio
import loadtest.engine as engine

tick = engine.Worker._tick

async def worker_1_tick(self):
    if self.index == 1:
        await anyio.sleep(0.5)
        {ending}
    await tick(self)

engine.Worker._tick = worker_1_tick
"""

INGEST_CONNECT_FAILS = """
import loadtest.sessions.ws as ws

async def failing_open(self):
    raise RuntimeError("injected into connect")

ws.Session._open = failing_open
"""

INGEST_TICKER_FAILS = """
import loadtest.sessions.ws as ws

def failing_expire(self, older_than):
    raise RuntimeError("injected into the ticker")

ws.Session.expire = failing_expire
"""

BROKEN_INSTALL = """
sys.modules["loadtest.engine"] = None  # as if the module were missing from the install
"""


TWO_WORKERS = ("load", "--rate", "50", "--duration", "60s", "--procs", "2", "--connections", "2", "--quiet")


def run_patched(patch: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", RUN_CLI.format(patch=patch), *args], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=PROMPT_S, check=False)


@pytest.fixture(scope="module")
def relay() -> Iterator[RelayProcess]:
    with run_relay("--log-level", "WARNING", "-e", "echo") as r:
        yield r


def test_a_failing_ticker_ends_a_load_run_at_once(relay: RelayProcess) -> None:
    proc = run_patched(TICKER_FAILS, "load", relay.url, "--rate", "50", "--duration", "60s", "--quiet")
    assert proc.returncode == EXIT_RUN_FAILED, proc.stderr
    assert "the run crashed: the ticker failed: RuntimeError: injected into the ticker" in proc.stderr


def test_a_crashed_worker_is_reported_as_a_crash_not_a_connection_problem(relay: RelayProcess) -> None:
    proc = run_patched(WORKER_1_ENDS.format(ending='raise KeyError("injected")'), *TWO_WORKERS, relay.url)
    assert proc.returncode == EXIT_RUN_FAILED, proc.stderr
    assert "worker 1 crashed: the ticker failed: KeyError: 'injected'" in proc.stderr
    assert "cannot connect" not in proc.stderr
    assert "Traceback" in proc.stderr, "the worker's traceback is shown"


def test_a_worker_that_dies_without_a_word_is_a_crash(relay: RelayProcess) -> None:
    proc = run_patched(WORKER_1_ENDS.format(ending="os._exit(7)"), *TWO_WORKERS, relay.url)
    assert proc.returncode == EXIT_RUN_FAILED, proc.stderr
    assert "worker 1 crashed: its process ended (exit code 7) without a result" in proc.stderr


def _docs(path: Path, n: int) -> Path:
    path.write_bytes(b"".join(orjson.dumps({"text": f"text {i}"}) + b"\n" for i in range(n)))
    return path


def test_a_failing_connect_ends_an_ingestion_with_the_error_named(relay: RelayProcess, tmp_path: Path) -> None:
    proc = run_patched(INGEST_CONNECT_FAILS, "ingest", str(_docs(tmp_path / "docs.jsonl", 10)), relay.url, "--quiet")
    assert proc.returncode == EXIT_RUN_FAILED, proc.stderr
    assert "flowrelay ingest: the run crashed: RuntimeError: injected into connect" in proc.stderr


def test_a_failing_ticker_ends_an_ingestion_at_once(relay: RelayProcess, tmp_path: Path) -> None:
    # 6,000 documents at 100/s would take a minute.
    docs = _docs(tmp_path / "docs.jsonl", 6000)
    checkpoint = tmp_path / "docs.ckpt"
    proc = run_patched(INGEST_TICKER_FAILS, "ingest", str(docs), relay.url, "--rate", "100", "--batch", "10",
                       "--checkpoint", str(checkpoint), "--quiet")
    assert proc.returncode == EXIT_RUN_FAILED, proc.stderr
    assert "the run crashed: the ticker failed: RuntimeError: injected into the ticker" in proc.stderr
    assert checkpoint.exists(), "what was settled before the crash is on disk, to resume from"


def test_a_broken_install_shows_the_import_error_not_an_unknown_verb() -> None:
    proc = run_patched(BROKEN_INSTALL, "load", "ws://127.0.0.1:9", "--rate", "1", "--duration", "1s")
    assert proc.returncode != 0
    assert "loadtest.engine" in proc.stderr and "Error" in proc.stderr, proc.stderr
    assert "invalid choice" not in proc.stderr
