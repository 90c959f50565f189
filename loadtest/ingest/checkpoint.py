"""The checkpoint file: what an ingestion has settled, on disk, so that a killed run resumes where it stopped.

Format (JSON, one object; `version` 1):

    {"format": "flowrelay-ingest-checkpoint", "version": 1,
     "input": {"kind": "file", "format": "jsonl", "path": "/abs/docs.jsonl", "size": 1234,
               "mtime_ns": 1, "head_blake2b": "...", "options": {}},
     "batch": 32,
     "watermark": 12000, "done": [[12032, 12064], [12096, 12160]],
     "acknowledged": 11900, "dead_lettered": 100,
     "dead_letter": {"path": "/abs/failed.jsonl", "bytes": 5678},
     "complete": false, "records": null, "updated_at": "2025-01-01T00:00:00Z"}

Every position below `watermark` and inside a `done` range is settled (acknowledged by the Flow, or
written to the dead-letter file). `dead_letter.bytes` is how much of that file the checkpoint covers:
records past it were written after the last checkpoint and are adopted on resume.

Writes are atomic and durable: the new content goes to a temporary name beside the file, is fsync'd,
renamed over the old one, and the folder is fsync'd; the dead-letter file is fsync'd first, so a
checkpoint never counts a dead letter that could still be lost. The writing happens in a thread
(`CheckpointWriter`), coalesced: while one write is under way the latest state replaces any waiting one,
so the event loop never waits for a disk. A lock file (`FILE.lock`, flock) keeps two runs off one
checkpoint (the file stays after the run). Imports the standard library and orjson.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

FORMAT = "flowrelay-ingest-checkpoint"
VERSION = 1
# Compared before resuming; path and mtime are only shown (a copied or touched file is the same input).
_IDENTITY_KEYS = ("kind", "format", "options", "size", "head_blake2b")


class CheckpointError(ValueError):
    """The checkpoint cannot be used for this run (another input, unreadable, in use): exit 2."""


def load(path: Path) -> dict[str, Any] | None:
    """The saved state, or None when there is no checkpoint yet."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from None
    try:
        state = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise CheckpointError(f"checkpoint {path} is not valid JSON ({exc}); it was not written by flowrelay "
                              "ingest, or was edited. Remove it to start over.") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a flowrelay ingest checkpoint")
    if state.get("version") != VERSION:
        raise CheckpointError(f"checkpoint {path} has version {state.get('version')!r}; this flowrelay "
                              f"reads version {VERSION}")
    return state


def _describe(ident: dict[str, Any]) -> str:
    size = f", {ident['size']:,} bytes" if isinstance(ident.get("size"), int) else ""
    opts = f", options {ident['options']}" if ident.get("options") else ""
    head = str(ident.get("head_blake2b", ""))[:12]
    return f"{ident.get('path')} ({ident.get('kind')}, {ident.get('format')}{size}{opts}, head hash {head})"


def check_resumable(state: dict[str, Any], identity: dict[str, Any], batch: int, path: Path) -> list[str]:
    """Raise CheckpointError if `state` was written for another input or batch size; returns notes
    worth telling (e.g. the same content under another path)."""
    saved = state.get("input") or {}
    differs = [k for k in _IDENTITY_KEYS if saved.get(k) != identity.get(k)]
    if differs:
        raise CheckpointError(
            f"checkpoint {path} belongs to a different input: it was written for {_describe(saved)}, and this "
            f"input is {_describe(identity)} (differs in {', '.join(differs)}). Resume with the original input "
            f"and options, or remove the checkpoint (or give another --checkpoint) to start over."
        )
    if state.get("batch") != batch:
        raise CheckpointError(
            f"checkpoint {path} was written with --batch {state.get('batch')}; resume with the same command "
            f"(--batch {state.get('batch')}), or remove the checkpoint to start over."
        )
    notes = []
    if saved.get("path") != identity.get("path"):
        notes.append(f"resuming {identity.get('path')}: same content as {saved.get('path')}, where the "
                     "checkpoint was started")
    if saved.get("mtime_ns") not in (None, identity.get("mtime_ns")):
        notes.append(f"{identity.get('path')} was modified since the checkpoint was started (same size and "
                     "first MiB): resuming")
    return notes


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes) -> None:
    """Replace `path` with `data` so that a crash at any moment leaves the old or the new content."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def encode_state(state: dict[str, Any]) -> bytes:
    state = {"format": FORMAT, "version": VERSION, **state,
             "updated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    return orjson.dumps(state, option=orjson.OPT_APPEND_NEWLINE)


class CheckpointLock:
    """An exclusive flock on `FILE.lock` for the run's length (released by the kernel if the run dies)."""

    def __init__(self, path: Path) -> None:
        self.path = path.with_name(path.name + ".lock")
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise CheckpointError(f"checkpoint {self.path.with_suffix('')} is in use by another ingest "
                                  f"(pid {holder})") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd

    def release(self) -> None:
        # The lock file stays: unlinking it would let a run that opened it just before lock a dead inode.
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class CheckpointWriter:
    """Writes checkpoints in a thread, latest first: `submit` never blocks; `on_durable(version)` is called
    (through `notify`, e.g. `loop.call_soon_threadsafe`) once a state of that version is on disk, and
    `on_error(message)` if a write fails (the run must then stop: progress can no longer be recorded)."""

    def __init__(self, path: Path, notify: Callable[..., Any], on_durable: Callable[[int], None],
                 on_error: Callable[[str], None]) -> None:
        self.path = path
        self._notify = notify
        self._on_durable = on_durable
        self._on_error = on_error
        self._cond = threading.Condition()
        self._waiting: tuple[int, bytes, int | None] | None = None
        self._stop = False
        self._failed = False
        self.writes = 0
        self.write_s = 0.0
        self._thread = threading.Thread(target=self._run, name="ingest-checkpoint", daemon=True)
        self._thread.start()

    def submit(self, version: int, data: bytes, fsync_fd: int | None) -> None:
        """Queue a state (replacing one not yet started); `fsync_fd` is fsync'd before it is written."""
        with self._cond:
            self._waiting = (version, data, fsync_fd)
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._waiting is None and not self._stop:
                    self._cond.wait()
                if self._waiting is None:
                    return
                version, data, fsync_fd = self._waiting
                self._waiting = None
            if self._failed:
                continue
            started = time.perf_counter()
            try:
                if fsync_fd is not None:
                    os.fsync(fsync_fd)
                write_atomic(self.path, data)
            except OSError as exc:
                self._failed = True
                self._notify(self._on_error, f"cannot write checkpoint {self.path}: {exc}")
                continue
            self.writes += 1
            self.write_s += time.perf_counter() - started
            self._notify(self._on_durable, version)

    def close(self, timeout_s: float = 30.0) -> None:
        """Write what is waiting, then stop the thread."""
        with self._cond:
            self._stop = True
            self._cond.notify()
        self._thread.join(timeout_s)
