"""Request frames for a load run, encoded once and stamped with a fresh id per request.

Encoding a request per send would put a codec on the hot path. Instead each distinct request (one per
batch of documents) is encoded once with a placeholder id, split around it, and every send is
`prefix + id + suffix`. In bytes mode the id is `header.request_id`; in json mode a client cannot choose
the request id (the gateway makes one), so it travels as `parameters.flowrelay_rid`, which a gateway
echoes back. Ids have a fixed width so the protobuf length prefixes stay right.

Documents come from `--docs-per-request`, `--text-bytes`, `--embedding-dim`, `--tags`, `--blob-bytes`,
or from a JSON Lines file (`--data`), cycled. In bytes mode `--docarray` picks the document encoding:
docarray < 0.30 `DocumentProto`s (v1) or, for a docarray >= 0.30 Flow, `DocProto` maps (v2,
relay.wire.proto_v2_codec). Imports relay.wire only.
"""

from __future__ import annotations

import random
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from relay.wire import json_codec
from relay.wire.codecs import bytes_codec
from relay.wire.documents import Document, NdArray
from relay.wire.errors import WireError
from relay.wire.messages import DataRequest

CORRELATION_KEY = "flowrelay_rid"
ID_WIDTH = 24
# A token no generated text can contain (that is lowercase), checked to occur exactly once. A frame built with it
# as its id (header.request_id, or parameters.flowrelay_rid) becomes a Template (`template_from_frame`).
PLACEHOLDER = "RIDxQ7ZK" + "X" * (ID_WIDTH - 8)
MAX_DATA_TEMPLATES = 10_000


@dataclass
class DocSpec:
    """What each synthetic request carries."""

    docs_per_request: int = 1
    text_bytes: int = 16
    embedding_dim: int = 0
    tags: dict[str, Any] = field(default_factory=dict)
    blob_bytes: int = 0
    data_file: Path | None = None
    docarray: str = "v1"  # bytes mode: v1 = docarray < 0.30 DocumentProto, v2 = docarray >= 0.30 DocProto


@dataclass
class Template:
    prefix: bytes
    suffix: bytes
    docs: int

    def frame(self, rid: str) -> bytes:
        return self.prefix + rid.encode("ascii") + self.suffix


def _synthetic_docs(spec: DocSpec, rng: random.Random) -> list[Document]:
    docs = []
    for _ in range(spec.docs_per_request):
        doc = Document(text="".join(rng.choices(string.ascii_lowercase + " ", k=spec.text_bytes)))
        if spec.embedding_dim:
            doc.embedding = NdArray.from_list([rng.random() for _ in range(spec.embedding_dim)])
        if spec.tags:
            doc.tags = dict(spec.tags)
        if spec.blob_bytes:
            doc.blob = rng.randbytes(spec.blob_bytes)
        docs.append(doc)
    return docs


def read_jsonl_docs(path: Path, limit: int) -> list[Document]:
    """Documents from a JSON Lines file (one Document dict per line). Errors name the line."""
    docs: list[Document] = []
    with path.open("rb") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                docs.append(Document.from_json_dict(orjson.loads(line)))
            except (orjson.JSONDecodeError, WireError) as exc:
                raise ValueError(f"{path}:{lineno}: not a Document: {exc}") from None
            if len(docs) >= limit:
                break
    if not docs:
        raise ValueError(f"{path}: no documents in the file")
    return docs


def template_from_frame(frame: bytes, docs: int) -> Template:
    """A frame encoded with PLACEHOLDER as its id, split around it. Raises RuntimeError unless the placeholder
    occurs exactly once."""
    placeholder = PLACEHOLDER.encode("ascii")
    at = frame.find(placeholder)
    if at < 0 or frame.find(placeholder, at + 1) >= 0:
        raise RuntimeError("request template must contain the id placeholder exactly once")
    return Template(frame[:at], frame[at + len(placeholder) :], docs)


def build_templates(
    mode: str,
    spec: DocSpec,
    endpoint: str,
    parameters: dict[str, Any] | None = None,
    target_executor: str | None = None,
    seed: int = 1,
) -> list[Template]:
    """The distinct request frames of a run, ready to be stamped with ids."""
    rng = random.Random(seed)
    batches: list[list[Document]]
    if spec.data_file is not None:
        pool = read_jsonl_docs(spec.data_file, MAX_DATA_TEMPLATES * spec.docs_per_request)
        n = spec.docs_per_request
        batches = [pool[i : i + n] for i in range(0, len(pool), n)]
    else:
        batches = [_synthetic_docs(spec, rng)]
    templates = []
    for docs in batches:
        params = dict(parameters or {})
        req = DataRequest(exec_endpoint=endpoint, target_executor=target_executor, docs=docs)
        if mode == "bytes":
            req.request_id = PLACEHOLDER
            req.parameters = params or None
            frame = bytes_codec(spec.docarray).encode_request(req)
        else:
            params[CORRELATION_KEY] = PLACEHOLDER
            req.parameters = params
            frame = json_codec.encode_request(req)
        templates.append(template_from_frame(frame, len(docs)))
    return templates


class IdMaker:
    """Request ids unique across connections and processes of one run (Jina requires it per gateway)."""

    def __init__(self, run_id: str, worker: int) -> None:
        head = f"{run_id[:8]}{worker:03d}"
        self._head = head
        self._width = ID_WIDTH - len(head)
        self._seq = 0

    def next(self) -> str:
        self._seq += 1
        return f"{self._head}{self._seq:0{self._width}d}"
