"""CPU per request of the relay's pure request path, without sockets: decode -> admit -> chain -> encode.

What it measures: for each (subprotocol, chain, docs per request), the median over several timeit runs of
one request going through exactly what a relay connection does to it between `ws.recv()` and `ws.send()`:
`codec.decode_request`, the gateway's `admit` (request and doc ids, the gateway route, counters), `run`
through the chain (`Chain.submit`), and its `finish` with the WebSocket door's encoder (blank
`target_executor`, mark arrays numpy in bytes mode, end the gateway route, encode, counters). The request
frames are what the benchmarks' client sends: one Document with a 16-byte text and no id, encoded with
relay.wire (the relay assigns the doc id).

How to read it: microseconds of one core per request; the socket and WebSocket framing costs come on top
(see bench/relay_vs_jina.py for the whole server). No servers are started; it takes a few seconds.

    python bench/bytes_path.py [--number 20000] [--repeat 7] [--docs 1,10]
"""

from __future__ import annotations

import argparse
import json
import statistics
import timeit
from typing import Any

from relay.config import RelayConfig
from relay.executors import Chain
from relay.gateway import Gateway
from relay.observer import DOOR_WEBSOCKET
from relay.wire import json_codec, proto_codec
from relay.wire.documents import Document
from relay.wire.messages import DataRequest

DOC_TEXT = "hello flowrelay!"
CHAINS = ("echo", "upper", "embed:128", "upper,embed:128")


def _frame(mode: str, ndocs: int) -> bytes:
    req = DataRequest(exec_endpoint="/index", docs=[Document(text=DOC_TEXT) for _ in range(ndocs)])
    if mode == "bytes":
        req.request_id = "00000000000000000001"
        return proto_codec.encode_request(req)
    req.parameters = {"rid": "00000000000000000001"}
    return json_codec.encode_request(req)


def path_function(mode: str, chain: Chain, frame: bytes) -> Any:
    """One request through the relay's pure path, as the WebSocket door runs it (`ClientConnection.on_message`,
    then its answer callback)."""
    is_bytes = mode == "bytes"
    gateway = Gateway(RelayConfig(), chain)
    decode = proto_codec.decode_request if is_bytes else json_codec.decode_request
    encode = proto_codec.encode_response if is_bytes else json_codec.encode_response
    admit, run, finish = gateway.admit, gateway.run, gateway.finish
    payload: Any = frame if is_bytes else frame.decode()
    size = len(frame)
    answers: list[bytes | None] = []

    def respond(req: DataRequest) -> None:
        answers.append(finish(req, encode, DOOR_WEBSOCKET))

    def one() -> bytes | None:
        req = decode(payload)
        admit(req, size, is_bytes)
        run(req, respond)
        return answers.pop()

    return one


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--number", type=int, default=20000, help="requests per timing run")
    p.add_argument("--repeat", type=int, default=7, help="timing runs; the median is reported")
    p.add_argument("--docs", default="1,10", help="docs per request, comma-separated")
    p.add_argument("--chains", default=";".join(CHAINS), help="chains (executor specs joined by ','), ';'-separated")
    p.add_argument("--json", action="store_true", help="print the results as one JSON object")
    args = p.parse_args()
    results: list[dict[str, Any]] = []
    for mode in ("bytes", "json"):
        for spec in args.chains.split(";"):
            for ndocs in (int(n) for n in args.docs.split(",")):
                chain = Chain.from_specs(spec.split(","))
                one = path_function(mode, chain, _frame(mode, ndocs))
                number = max(1, args.number // ndocs)
                runs = timeit.repeat(one, number=number, repeat=args.repeat)
                us = statistics.median(runs) / number * 1e6
                results.append(
                    {
                        "mode": mode,
                        "chain": spec,
                        "docs": ndocs,
                        "us_per_request": us,
                        "min_us": min(runs) / number * 1e6,
                    }
                )
                if not args.json:
                    best = min(runs) / number * 1e6
                    print(f"{mode:5}  {spec:16} {ndocs:3} docs  {us:7.2f} us/request  (min {best:.2f})", flush=True)
    if args.json:
        print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
