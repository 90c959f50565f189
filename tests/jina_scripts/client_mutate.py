"""Jina's own `Client.mutate` (GraphQL through sgqlc) against a gateway; what it got back as one JSON line.

Runs inside the Jina peer venv (jina 3.34), never with the project's interpreter. Jina's client imports sgqlc
when `mutate` is called; the peer venv does not have it, so the caller puts a folder holding sgqlc on PYTHONPATH:

    python client_mutate.py --port PORT

Steps, each recorded under its name (an exception as {"error": "Type: message"}):
  seed       the seed page's mutation, `docs(data: {text: "abcd"}) { id text matches { embedding } }`
  variables  a mutation with variables, an id kept and `execEndpoint: "/index"`
  fail       `execEndpoint: "/fail"` (Client.mutate raises ConnectionError when the answer has `errors`)
"""

import argparse
import json
import os
import sys

os.environ.setdefault("JINA_OPTOUT_TELEMETRY", "1")

from jina import Client

SEED = 'mutation { docs(data: {text: "abcd"}) { id text matches { embedding } } }'
VARIABLES = (
    'mutation Index($d: [StrawberryDocumentInput!]) { docs(data: $d, execEndpoint: "/index") { id text tags } }'
)
FAIL = 'mutation { docs(data: {text: "x"}, execEndpoint: "/fail") { text } }'


def step(out, name, fn):
    try:
        out[name] = fn()
    except Exception as exc:  # recorded for the test to show, not hidden
        out[name] = {"error": f"{type(exc).__name__}: {exc}"}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    args = ap.parse_args()
    client = Client(host=args.host, port=args.port, protocol="http")
    out = {}
    step(out, "seed", lambda: client.mutate(mutation=SEED))
    step(out, "variables", lambda: client.mutate(mutation=VARIABLES,
                                                 variables={"d": [{"text": "vars", "id": "my-id"}]}))
    step(out, "fail", lambda: client.mutate(mutation=FAIL))
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
