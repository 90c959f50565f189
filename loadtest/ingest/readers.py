"""Inputs of `flowrelay ingest`: files, folders and stdin -> numbered Records, one Document each, streamed.

Formats: JSON Lines (one Document per line, the json codec's document fields), CSV and TSV (a header
row; `text`, `id` and tags columns chosen by name), a folder (every file, in a sorted walk, becomes a
Document with `uri`, and `blob` on request) and stdin (`-`, JSON Lines unless told otherwise). gzip and
zstd inputs are recognised by their magic bytes (so a compressed stdin works too) and decompressed as
streams. Nothing is read ahead of what is asked for but a buffer (JSON Lines are split a block of
`BLOCK_BYTES` at a time, `line_blocks`, rather than line by line): memory does not grow with the input
(a folder holds one directory's sorted listing at a time).

Every record gets a *position*: its ordinal among the input's records (blank lines do not count), so
the same input numbers its records the same way on every run; the checkpoint is a set of positions.
A Document without an id gets one derived from its position and its content (`derive_id`), so a re-run
sends the same ids. A *shard* (`ReaderOptions.shard_index` of `shard_count`, one worker's part of an
ingestion split over several) holds the records whose ordinal i has i mod count == index (a folder's files
in name order); its records are numbered 0, 1, 2... among themselves (i // count), so its checkpoint is
as compact as a whole input's, while ids are derived from the ordinal in the whole input (`id_position`):
the same Documents get the same ids however the input is split. A record that cannot be read (bad JSON,
a row of the wrong width, invalid UTF-8, an unreadable file) is still numbered and yielded, with `error`
saying why and where.

Imports relay.wire and the standard library (zstandard only when a zstd input turns up).
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import hashlib
import io
import mimetypes
import os
import sys
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from relay.wire.documents import Document
from relay.wire.errors import WireError

FORMATS = ("jsonl", "csv", "tsv", "folder")
STDIN = "-"
HEAD_BYTES = 1 << 20  # how much of an input its identity hashes
FOLDER_HEAD_ENTRIES = 10_000  # how many of a folder's files its identity hashes
READ_BUFFER = 1 << 20
BLOCK_BYTES = 1 << 18  # JSON Lines are split a read of this size at a time: a few thousand records
_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_BOM = b"\xef\xbb\xbf"
_SUFFIXES = {
    ".jsonl": "jsonl", ".ndjson": "jsonl", ".jl": "jsonl", ".json": "jsonl",
    ".csv": "csv", ".tsv": "tsv", ".tab": "tsv",
}  # fmt: skip
_COMPRESSED_SUFFIXES = (".gz", ".gzip", ".zst", ".zstd")

Skip = Callable[[int], bool]
# JSON Lines records read together: the first one's position, every one's line number, their texts.
Block = tuple[int, Sequence[int], list[bytes]]


class InputError(ValueError):
    """The input cannot be used as given (missing, unknown format, a column that is not there): exit 2."""


class InputReadError(RuntimeError):
    """Reading broke off in the middle (a truncated gzip, an I/O error): the run stops, resumably."""


@dataclass(frozen=True)
class ReaderOptions:
    """How to turn the input into Documents."""

    format: str | None = None  # None: from the file name (stdin: jsonl)
    text_column: str = "text"
    id_column: str | None = None
    tags_columns: tuple[str, ...] = ()
    read_blobs: bool = False
    shard_index: int = 0  # this reader's part of the input: records i with i % shard_count == shard_index
    shard_count: int = 1


@dataclass(slots=True)
class Record:
    """One record of the input: a Document, or why there is none."""

    position: int  # 0-based ordinal among the input's records: what the checkpoint counts
    source: str  # the file it came from (in a folder: the file itself)
    line: int | None  # 1-based line where the record starts; None for a folder's files
    doc: Document | None
    error: str | None = None
    raw: str | None = None  # a malformed record's text, for the dead-letter file

    def where(self) -> str:
        return f"{self.source}:{self.line}" if self.line is not None else self.source


# The state every derived id starts from: blake2b with a 16-byte digest, its parameters set once. Copying
# it costs less than building a new one (the constructor parses a dozen keyword parameters): ~0.2 us of
# the ~0.5 us an id costs. `prepare` copies it too, inline, for JSON Lines.
ID_HASH = hashlib.blake2b(digest_size=16)


def derive_id(position: int, content: bytes) -> str:
    """A Document id from its position in the input and its content: 32 hex characters, the same on every
    run (`blake2b(b"<position>\\x00" + content, digest_size=16)`). The position is part of it, so identical
    records at different places get different ids."""
    h = ID_HASH.copy()
    h.update(b"%d\x00" % position + content)
    return h.hexdigest()


def detect_format(name: str, is_dir: bool) -> str:
    if is_dir:
        return "folder"
    if name == STDIN:
        return "jsonl"
    lowered = name.lower()
    for suffix in _COMPRESSED_SUFFIXES:
        if lowered.endswith(suffix):
            lowered = lowered[: -len(suffix)]
            break
    fmt = _SUFFIXES.get(os.path.splitext(lowered)[1])
    if fmt is None:
        raise InputError(f"cannot tell the format of {name!r} from its name; give --format jsonl, csv or tsv")
    return fmt


# ---- byte streams ------------------------------------------------------------------------------


class _CountingRaw(io.RawIOBase):
    """A raw stream over a file or a pipe that counts the bytes read (for the progress line) and can
    serve a head read beforehand (stdin's first MiB, hashed for the checkpoint) before the rest."""

    def __init__(self, src: BinaryIO, head: bytes = b"") -> None:
        self._src = src
        self._head = head
        self.count = 0
        # A pipe: one read at a time, so records flow as soon as the producer writes them.
        self._read = getattr(src, "readinto1", None) or src.readinto

    def readable(self) -> bool:
        return True

    def tell(self) -> int:
        # What the buffer above asks to know how far its reader got (the progress line's figure).
        return self.count

    def readinto(self, buffer: Any) -> int:
        if self._head:
            n = min(len(buffer), len(self._head))
            buffer[:n] = self._head[:n]
            self._head = self._head[n:]
            self.count += n
            return n
        n = self._read(buffer) or 0
        self.count += n
        return n


def _stream_errors() -> tuple[type[BaseException], ...]:
    errors: tuple[type[BaseException], ...] = (OSError, EOFError, zlib.error)  # zlib: a corrupt gzip body
    zstd = sys.modules.get("zstandard")
    if zstd is not None:
        errors += (zstd.ZstdError,)
    return errors


def _decompressed(buffered: io.BufferedReader) -> BinaryIO:
    """The stream itself, or a decompressing stream over it when its first bytes say gzip or zstd."""
    magic = buffered.peek(4)[:4]
    if magic[:2] == _GZIP_MAGIC:
        return gzip.GzipFile(fileobj=buffered, mode="rb")  # type: ignore[return-value]
    if magic == _ZSTD_MAGIC:
        try:
            import zstandard
        except ImportError:
            raise InputError("a zstd input needs the zstandard package (pip install zstandard)") from None
        reader = zstandard.ZstdDecompressor().stream_reader(buffered, read_across_frames=True)
        return io.BufferedReader(reader, READ_BUFFER)  # type: ignore[arg-type,return-value]
    return buffered


# ---- inputs ------------------------------------------------------------------------------------


@dataclass
class Input:
    """An opened input: its identity (for the checkpoint), its records (once), how far reading got."""

    name: str  # as given (`-` for stdin)
    format: str
    options: ReaderOptions
    path: Path | None  # None for stdin
    pipe: bool = False  # read once, as it comes: stdin, a named pipe, a device
    _raw: _CountingRaw | None = field(default=None, repr=False)
    _src: BinaryIO | None = field(default=None, repr=False)
    _buffered: io.BufferedReader | None = field(default=None, repr=False)
    _head: bytes | None = field(default=None, repr=False)
    _started: bool = field(default=False, repr=False)
    _csv_header: list[str] | None = field(default=None, repr=False)
    _csv_reader: Any = field(default=None, repr=False)
    _csv_lines: int = field(default=0, repr=False)
    count: int = 0  # records seen so far (settled ones included): the input's length once read to the end

    @property
    def display(self) -> str:
        return "<stdin>" if self.path is None else self.name

    @property
    def total_bytes(self) -> int | None:
        """The input's size on disk (compressed, if it is), when known: what the ETA is measured against."""
        if self.path is None or self.pipe or self.format == "folder":
            return None
        try:
            return self.path.stat().st_size
        except OSError:
            return None

    def bytes_read(self) -> int:
        """How far into the input (on disk, compressed or not) reading got."""
        if self._buffered is not None:
            with contextlib.suppress(OSError, ValueError):
                return self._buffered.tell()
        return self._raw.count if self._raw is not None else 0

    def id_position(self, position: int) -> int:
        """A record's ordinal in the whole input, from its position in this shard (what ids derive from)."""
        return position * self.options.shard_count + self.options.shard_index

    def _in_shard(self, ordinal: int) -> bool:
        return ordinal % self.options.shard_count == self.options.shard_index

    # ---- identity -------------------------------------------------------------------------------

    def identity(self) -> dict[str, Any]:
        """What the checkpoint compares before resuming: kind, format, options, size and a hash of the head
        (the first MiB; a folder's first files' names and sizes). Path and mtime are kept for messages."""
        opts: dict[str, Any] = {}
        if self.format in ("csv", "tsv"):
            opts = {"text_column": self.options.text_column, "id_column": self.options.id_column,
                    "tags_columns": list(self.options.tags_columns)}
        elif self.format == "folder":
            opts = {"read_blobs": self.options.read_blobs}
        if self.options.shard_count > 1:
            opts["shard"] = [self.options.shard_index, self.options.shard_count]
        ident: dict[str, Any] = {"format": self.format, "options": opts}
        if self.pipe:
            head = hashlib.blake2b(self._pipe_head(), digest_size=16).hexdigest()
            where = STDIN if self.path is None else str(self.path.absolute())
            ident.update(kind="stdin" if self.path is None else "pipe", path=where, size=None, head_blake2b=head)
            return ident
        if self.format == "folder":
            h = hashlib.blake2b(digest_size=16)
            for n, (rel, size) in enumerate(_walk_files(self.path)):
                if n >= FOLDER_HEAD_ENTRIES:
                    break
                h.update(orjson.dumps([rel, size]))
            ident.update(kind="folder", path=str(self.path.resolve()), size=None, head_blake2b=h.hexdigest())
            return ident
        st = self.path.stat()
        with self.path.open("rb") as fh:
            head = fh.read(HEAD_BYTES)
        ident.update(kind="file", path=str(self.path.resolve()), size=st.st_size, mtime_ns=st.st_mtime_ns,
                     head_blake2b=hashlib.blake2b(head, digest_size=16).hexdigest())
        return ident

    def _source(self) -> BinaryIO:
        if self._src is None:
            if self.path is None:
                self._src = sys.stdin.buffer
            else:
                self._src = open(self.path, "rb", buffering=0)  # noqa: SIM115 - closed by close()
        return self._src

    def _pipe_head(self) -> bytes:
        """A pipe's first MiB, read once for its identity and served again to the records."""
        if self._head is None:
            if self._started:
                raise RuntimeError("a pipe's identity must be taken before its records are read")
            src = self._source()
            chunks: list[bytes] = []
            got = 0
            while got < HEAD_BYTES:
                chunk = src.read1(HEAD_BYTES - got) if hasattr(src, "read1") else src.read(HEAD_BYTES - got)
                if not chunk:
                    break
                chunks.append(chunk)
                got += len(chunk)
            self._head = b"".join(chunks)
        return self._head

    # ---- records --------------------------------------------------------------------------------

    def _open_stream(self) -> BinaryIO:
        self._started = True
        raw = _CountingRaw(self._source(), self._head or b"")
        self._raw = raw
        self._buffered = io.BufferedReader(raw, READ_BUFFER)
        return _decompressed(self._buffered)

    def prepare(self) -> None:
        """Read what must be known before any traffic: a CSV/TSV header (a missing column is a usage error)."""
        if self.format not in ("csv", "tsv") or self._csv_reader is not None:
            return
        text = io.TextIOWrapper(self._open_stream(), encoding="utf-8", errors="surrogateescape", newline="")
        reader = csv.reader(text, dialect="excel-tab" if self.format == "tsv" else "excel", strict=True)
        try:
            header = next(reader, None)
        except (csv.Error, *_stream_errors()) as exc:
            raise InputError(f"{self.display}: cannot read the header row: {exc}") from None
        header = [h.strip() for h in header or []]
        if header and header[0].startswith("\ufeff"):
            header[0] = header[0][1:]
        wanted = [self.options.text_column, *([self.options.id_column] if self.options.id_column else []),
                  *self.options.tags_columns]
        missing = [c for c in wanted if c not in header]
        if header and missing:
            raise InputError(f"{self.display}: no column {', '.join(map(repr, missing))} in the header "
                             f"(columns: {', '.join(header)}); see --text-column, --id-column, --tags-columns")
        self._csv_header = header
        self._csv_reader = reader
        self._csv_lines = reader.line_num

    def records(self, skip: Skip, skip_below: int | None = None) -> Iterator[Record]:
        """Every record of the input, in order; `skip(position)` records are counted but not parsed.
        `skip` is asked only below `skip_below` (when given): past it nothing is settled yet.
        Raises InputReadError if reading breaks off."""
        self._started = True
        below = sys.maxsize if skip_below is None else skip_below
        errors = _stream_errors()
        try:
            if self.format == "jsonl":
                yield from self._jsonl(self._jsonl_lines(self._open_stream(), skip, below))
            elif self.format in ("csv", "tsv"):
                self.prepare()
                yield from self._csv(skip, below)
            else:
                assert self.path is not None
                yield from self._folder(self.path, skip, below)
        except errors as exc:
            raise InputReadError(f"{self.display}: reading stopped: {exc}") from None

    def close(self) -> None:
        if self._raw is not None:
            self._raw.close()
        if self._src is not None and self.path is not None:
            self._src.close()  # stdin stays open: it is not ours

    def line_blocks(self, skip: Skip, skip_below: int | None = None) -> Iterator[Block]:
        """A JSON Lines input's records in blocks, unparsed, numbered and skipped as `records` does: each
        block is `(first position, line numbers, texts)`, its positions consecutive, its texts without
        surrounding white space (what an id is derived from). The input is read a buffer at a time and
        split there, not line by line: a block is what one read brought (less any blank lines and
        settled records, which split it). Raises InputReadError if reading breaks off."""
        if self.format != "jsonl":
            raise ValueError(f"line_blocks() reads JSON Lines, not {self.format}")
        self._started = True
        below = sys.maxsize if skip_below is None else skip_below
        try:
            yield from self._jsonl_blocks(self._open_stream(), skip, below)
        except _stream_errors() as exc:
            raise InputReadError(f"{self.display}: reading stopped: {exc}") from None

    def _jsonl_blocks(self, stream: BinaryIO, skip: Skip, below: int) -> Iterator[Block]:
        # read1: what is there (a pipe's records flow as they are written), up to a buffer.
        read = getattr(stream, "read1", None) or stream.read
        position = -1  # the last record numbered
        lineno = 0  # the last line read
        rest = b""  # a line not yet ended
        first = True
        strip = bytes.strip
        shards = self.options.shard_count
        ordinal = -1  # the last record's ordinal in the whole input (a shard's positions are every n-th)
        while True:
            chunk = read(BLOCK_BYTES)
            if chunk:
                raw = (rest + chunk if rest else chunk).split(b"\n")
                rest = raw.pop()
            elif rest:
                raw, rest = [rest], b""
            else:
                return
            if first and raw:
                first = False
                if raw[0].startswith(_BOM):
                    raw[0] = raw[0][3:]
            bodies = list(map(strip, raw))
            n = len(bodies)
            if shards == 1 and position + 1 >= below and all(bodies):  # the usual: no blank line, nothing settled
                yield position + 1, range(lineno + 1, lineno + 1 + n), bodies
                position += n
                lineno += n
                self.count = position + 1
                continue
            run_start, run_lines, run_bodies = 0, [], []
            for body in bodies:
                lineno += 1
                if not body:
                    continue
                ordinal += 1
                if shards > 1 and not self._in_shard(ordinal):
                    continue
                position += 1
                if position < below and skip(position):
                    if run_bodies:
                        yield run_start, run_lines, run_bodies
                        run_lines, run_bodies = [], []
                    continue
                if not run_bodies:
                    run_start = position
                run_lines.append(lineno)
                run_bodies.append(body)
            if run_bodies:
                yield run_start, run_lines, run_bodies
            self.count = position + 1

    def _jsonl_lines(self, stream: BinaryIO, skip: Skip, below: int) -> Iterator[tuple[int, int, bytes]]:
        for start, linenos, bodies in self._jsonl_blocks(stream, skip, below):
            for i, body in enumerate(bodies):
                self.count = start + i + 1
                yield start + i, linenos[i], body

    def _jsonl(self, lines: Iterator[tuple[int, int, bytes]]) -> Iterator[Record]:
        source = self.display
        for position, lineno, body in lines:
            try:
                doc = Document.from_json_dict(orjson.loads(body))
            except orjson.JSONDecodeError as exc:
                yield Record(position, source, lineno, None, f"not JSON: {exc}", _text(body))
                continue
            except WireError as exc:
                yield Record(position, source, lineno, None, f"not a Document: {exc}", _text(body))
                continue
            if not doc.id:
                doc.id = derive_id(self.id_position(position), body)
            yield Record(position, source, lineno, doc)

    def _csv(self, skip: Skip, below: int) -> Iterator[Record]:
        reader, header = self._csv_reader, self._csv_header or []
        source = self.display
        opts = self.options
        delimiter = "\t" if self.format == "tsv" else ","
        text_at = header.index(opts.text_column) if header else -1
        id_at = header.index(opts.id_column) if opts.id_column and header else -1
        tags_at = [(c, header.index(c)) for c in opts.tags_columns] if header else []
        width = len(header)
        position = -1
        ordinal = -1
        last_line = self._csv_lines
        while True:
            try:
                row = next(reader)
                error = None
            except StopIteration:
                return
            except csv.Error as exc:
                row, error = [], f"not a CSV row: {exc}"
            start, last_line = last_line + 1, reader.line_num
            if not row and error is None:
                continue  # a blank line
            ordinal += 1
            if not self._in_shard(ordinal):
                continue
            position += 1
            self.count = position + 1
            if position < below and skip(position):
                continue
            raw = delimiter.join(row)
            if error is None and len(row) != width:
                error = f"{len(row)} fields where the header has {width}"
            if error is None:
                try:
                    raw.encode("utf-8")
                except UnicodeEncodeError:
                    error = "not valid UTF-8"
            if error is not None:
                yield Record(position, source, start, None, error, raw.encode("utf-8", "replace").decode())
                continue
            doc = Document(text=row[text_at])
            if id_at >= 0 and row[id_at]:
                doc.id = row[id_at]
            else:
                doc.id = derive_id(self.id_position(position), orjson.dumps(row))
            if tags_at:
                doc.tags = {name: row[i] for name, i in tags_at}
            yield Record(position, source, start, doc)

    def _folder(self, root: Path, skip: Skip, below: int) -> Iterator[Record]:
        read_blobs = self.options.read_blobs
        base = root.resolve()
        files = (f for ordinal, f in enumerate(_walk_files(root)) if self._in_shard(ordinal))
        for position, (rel, _size) in enumerate(files):
            self.count = position + 1
            if position < below and skip(position):
                continue
            path = base / rel
            uri = str(path)
            mime, _ = mimetypes.guess_type(rel)
            doc = Document(uri=uri, mime_type=mime)
            content = rel.encode("utf-8", "surrogateescape")
            if read_blobs:
                try:
                    doc.blob = path.read_bytes()
                except OSError as exc:
                    yield Record(position, uri, None, None, f"cannot read the file: {exc.strerror or exc}")
                    continue
                content += b"\x00" + doc.blob
            doc.id = derive_id(self.id_position(position), content)
            yield Record(position, uri, None, doc)


def _text(body: bytes) -> str:
    return body.decode("utf-8", "replace")


def _walk_files(root: Path) -> Iterator[tuple[str, int]]:
    """(relative path, size) of every regular file under `root`, depth first, names sorted in each folder.
    Symbolic links to folders are not followed (no cycles); links to files are files."""

    def walk(folder: str, prefix: str) -> Iterator[tuple[str, int]]:
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            rel = prefix + entry.name
            if entry.is_dir(follow_symlinks=False):
                yield from walk(entry.path, rel + "/")
            elif entry.is_file():
                try:
                    size = entry.stat().st_size
                except OSError:
                    size = -1
                yield rel, size

    yield from walk(str(root), "")


def open_input(name: str, options: ReaderOptions) -> Input:
    """An Input for `name` (a file, a folder, or `-` for stdin). Raises InputError when it cannot be used."""
    if options.format is not None and options.format not in FORMATS:
        raise InputError(f"--format must be one of {', '.join(FORMATS)}, not {options.format!r}")
    if name == STDIN:
        fmt = options.format or "jsonl"
        if fmt == "folder":
            raise InputError("stdin cannot be read as a folder")
        return Input(name, fmt, options, None, pipe=True)
    path = Path(name)
    if not path.exists():
        raise InputError(f"{name}: no such file or folder")
    is_dir = path.is_dir()
    fmt = options.format or detect_format(name, is_dir)
    if is_dir != (fmt == "folder"):
        raise InputError(f"{name}: --format {fmt} does not fit a {'folder' if is_dir else 'file'}")
    if not is_dir and not os.access(path, os.R_OK):
        raise InputError(f"{name}: not readable")
    pipe = not is_dir and not path.is_file()  # a named pipe, /dev/stdin: one pass only
    if not 0 <= options.shard_index < options.shard_count:
        raise InputError(f"shard {options.shard_index} of {options.shard_count} does not exist")
    if options.read_blobs and fmt != "folder":
        raise InputError("--read-blobs applies to a folder input")
    if fmt not in ("csv", "tsv") and (options.id_column or options.tags_columns or options.text_column != "text"):
        raise InputError("--text-column, --id-column and --tags-columns apply to CSV and TSV inputs")
    return Input(name, fmt, options, path, pipe=pipe)
