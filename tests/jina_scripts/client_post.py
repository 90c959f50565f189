"""Drive a gateway with jina's own Python client; print what it got back as one JSON line.

Runs inside the Jina peer venv (jina 3.34, docarray < 0.30), never with the project's interpreter:

    python client_post.py --port PORT [--protocol websocket|grpc|http] [--skip-fail]

Steps, each recorded under its name in the output (an exception is recorded as {"error": ...}):
  ready      Client.is_flow_ready()                       (on WebSocket: /dry_run, bytes subprotocol)
  index      post('/index', 3 docs, request_size=2)       -> the returned DocumentArray
  responses  the same with return_responses=True          -> one entry per DataRequest answered
  fail       post('/fail', 1 doc) with an on_error callback -> the failed responses it saw
and two that only gRPC's streaming client has:
  unary      post('/index', 3 docs, request_size=1, stream=False)  (process_single_data per request)
  in_order   post('/index', 6 docs, request_size=1, results_in_order=True) -> the texts in the order returned
"""

import argparse
import json
import os
import sys
import traceback

os.environ.setdefault("JINA_OPTOUT_TELEMETRY", "1")

from docarray import Document, DocumentArray
from jina import Client

TEXTS = ["hello", "world", "third"]


def doc_json(d):
    emb = d.embedding
    return {
        "id": d.id,
        "text": d.text,
        "embedding": None if emb is None else [float(x) for x in emb.tolist()],
        "embedding_dtype": None if emb is None else str(emb.dtype),
    }


def response_json(r):
    h = r.header
    return {
        "request_id": h.request_id,
        "exec_endpoint": h.exec_endpoint,
        "status_code": int(h.status.code),
        "exception": h.status.exception.name,
        "exception_executor": h.status.exception.executor,
        "routes": [
            {
                "executor": rt.executor,
                "start_ns": rt.start_time.ToNanoseconds() if rt.HasField("start_time") else None,
                "end_ns": rt.end_time.ToNanoseconds() if rt.HasField("end_time") else None,
            }
            for rt in r.routes
        ],
        "parameters": dict(r.parameters),
        "docs": [doc_json(d) for d in r.docs],
    }


def step(out, name, fn):
    try:
        out[name] = fn()
    except Exception as exc:  # recorded for the test to show, not hidden
        out[name] = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--protocol", default="websocket", choices=["grpc", "http", "websocket"])
    ap.add_argument("--skip-fail", action="store_true")
    args = ap.parse_args()

    client = Client(host=args.host, port=args.port, protocol=args.protocol)
    out = {}
    step(out, "ready", client.is_flow_ready)

    def index():
        inputs = DocumentArray([Document(text=t) for t in TEXTS])
        result = client.post("/index", inputs, request_size=2)
        return {"sent_ids": [d.id for d in inputs], "docs": [doc_json(d) for d in result]}

    step(out, "index", index)

    def responses():
        inputs = DocumentArray([Document(text=t) for t in TEXTS])
        result = client.post("/index", inputs, request_size=2, return_responses=True, parameters={"p": 1})
        return [response_json(r) for r in result]

    step(out, "responses", responses)

    if args.protocol == "grpc":

        def unary():
            inputs = DocumentArray([Document(text=t) for t in TEXTS])
            result = client.post("/index", inputs, request_size=1, stream=False, return_responses=True)
            return [response_json(r) for r in result]

        step(out, "unary", unary)

        def in_order():
            inputs = DocumentArray([Document(text=f"doc{i}") for i in range(6)])
            result = client.post("/index", inputs, request_size=1, results_in_order=True)
            return [d.text for d in result]

        step(out, "in_order", in_order)

    if not args.skip_fail:

        def fail():
            failed = []
            client.post("/fail", DocumentArray([Document(text="will-fail")]), on_error=lambda r: failed.append(r))
            return [response_json(r) for r in failed]

        step(out, "fail", fail)

    json.dump(out, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
