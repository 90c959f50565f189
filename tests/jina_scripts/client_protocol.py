"""Drive a gateway with jina's own Python client over a chosen protocol; print what it got as one JSON line.

Runs inside the Jina peer venv (jina 3.34, docarray < 0.30), never with the project's interpreter:

    python client_protocol.py --protocol grpc --port PORT [--skip-fail]

The steps of client_post.py (ready, index, responses, fail), over `--protocol` (grpc, http or
websocket), plus two that only the streaming protocols have:
  unary      post('/index', 3 docs, request_size=1, stream=False)  (gRPC: process_single_data per request)
  in_order   post('/index', 6 docs, request_size=1, results_in_order=True) -> the texts in the order returned
Each step is recorded under its name (an exception as {"error": ...}).
"""

import argparse
import json
import os
import sys

os.environ.setdefault("JINA_OPTOUT_TELEMETRY", "1")

from client_post import TEXTS, doc_json, response_json, step
from docarray import Document, DocumentArray
from jina import Client


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--protocol", default="grpc", choices=["grpc", "http", "websocket"])
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
