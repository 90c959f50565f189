"""Run in the docarray >= 0.30 peer venv: docarray reads our v2 frames, and writes frames for us to read.

stdin: one JSON object {"ours": HEX}, a serialized DataRequestProto written by relay.wire.proto_v2_codec.
stdout (last line): one JSON object:

* "read_as_textdoc": our documents as docarray's `DocList[TextDoc].from_protobuf` sees them;
* "read_as_legacy": the same through `LegacyDocument` (the schema of untyped Executors), tags included;
* "written": HEX of a DataRequestProto built by jina's own `DataRequest` from TextDocs with every field
  set, and "written_docs": those documents as plain values, for the test to compare with our decoding.
"""

import base64
import json
import sys

import numpy as np
from docarray import DocList
from docarray.documents import TextDoc
from docarray.documents.legacy import LegacyDocument
from jina.proto.docarray_v2.pb2 import jina_pb2


def plain(doc, fields):
    out = {}
    for name in fields:
        value = getattr(doc, name, None)
        if value is None:
            out[name] = None
        elif name in ("embedding", "tensor"):
            arr = np.asarray(value)
            out[name] = {"values": arr.tolist(), "dtype": arr.dtype.str, "shape": list(arr.shape)}
        elif isinstance(value, bytes):
            out[name] = base64.b64encode(value).decode()
        elif name in ("chunks", "matches"):
            out[name] = [plain(d, fields) for d in value]
        else:
            out[name] = value if isinstance(value, (dict, list, int, float, bool)) else str(value)
    return out


def main():
    ours = bytes.fromhex(json.loads(sys.stdin.read())["ours"])
    pb = jina_pb2.DataRequestProto.FromString(ours)
    text_docs = DocList[TextDoc].from_protobuf(pb.data.docs)
    legacy = DocList[LegacyDocument].from_protobuf(pb.data.docs)
    result = {
        "request_id": pb.header.request_id,
        "exec_endpoint": pb.header.exec_endpoint,
        "read_as_textdoc": [plain(d, ("id", "text", "url", "embedding", "bytes_")) for d in text_docs],
        "read_as_legacy": [plain(d, ("id", "text", "url", "embedding", "tensor", "blob", "tags", "chunks"))
                           for d in legacy],
    }
    written = DocList[TextDoc]([
        TextDoc(id="w1", text="written by docarray", url="http://127.0.0.1/a.txt",
                embedding=np.array([0.5, -1.25, 3.0], dtype=np.float32), bytes_=b"\x00\x01raw"),
        TextDoc(id="w2", text=None),
    ])
    req = jina_pb2.DataRequestProto()
    req.header.request_id = "from-docarray"
    req.header.exec_endpoint = "/index"
    req.data.docs.CopyFrom(written.to_protobuf())
    result["written"] = req.SerializeToString().hex()
    result["written_docs"] = [plain(d, ("id", "text", "url", "embedding", "bytes_")) for d in written]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
