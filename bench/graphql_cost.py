"""What one GraphQL request costs, and what the library weighs: graphql-core (the relay's door) vs strawberry (Jina's).

Both sides run the same requests against Jina's schema with no Flow behind it (the Flow's answer is the request's
documents, handed back at once), so only the GraphQL layer is timed: the query's parse and validation,
execution, and the answer encoded as JSON bytes.

* graphql-core: relay.doors.graphql.execution.GraphQLExecutor, exactly what `/graphql` runs, with a seam whose
  Flow answers at once; `orjson.dumps` of the answer, as the door writes it.
* strawberry: Jina's own resolver shape (jina/serve/runtimes/gateway/http_fastapi_app.py) over docarray 0.21's
  strawberry types (docarray/document/strawberry_type.py, restated here without numpy, since docarray is not
  installed here): the inputs become dataclasses, the answer's documents become `StrawberryDocument`s with every
  non-empty field (`to_strawberry_type`), then `schema.execute`; `json.dumps` of the result, as strawberry's
  HTTP view writes it. Its HTTP layer (FastAPI, pydantic) is not counted. As Jina builds it, the schema parses
  and validates every request anew; the `strawberry cached` column adds strawberry's ParserCache and
  ValidationCache extensions, which the door's own cache corresponds to.

Requests: the seed page's mutation (1 doc, `id text matches { embedding }`); 8 docs with a 128-float embedding
selecting `id text` only, and the same selecting `embedding` too.

Install weight: the files of each distribution and of its dependencies, from their installed RECORDs (what
`pip install` puts on disk, .pyc files included as installed), and the import time in a fresh interpreter.
strawberry needs `pip install strawberry-graphql` for its column (else the column says so).

    python bench/graphql_cost.py [--number 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata as md
import re
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import common as c
import orjson

from relay.doors.graphql.execution import GraphQLExecutor
from relay.net.http_types import HttpRequest
from relay.wire.messages import DataRequest

SEED_QUERY = 'mutation { docs(data: {text: "abcd"}) { id text matches { embedding } } }'
EMBEDDING = [round(i / 128, 6) for i in range(128)]
DOCS_8 = [{"text": f"document {i}", "embedding": EMBEDDING} for i in range(8)]
MUTATION_VARS = "mutation Index($d: [StrawberryDocumentInput!]) { docs(data: $d) { %s } }"
REQUESTS: dict[str, tuple[str, dict[str, Any] | None]] = {
    "seed mutation, 1 doc": (SEED_QUERY, None),
    "8 docs x 128 floats, select id text": (MUTATION_VARS % "id text", {"d": DOCS_8}),
    "8 docs x 128 floats, select embedding too": (MUTATION_VARS % "id text embedding", {"d": DOCS_8}),
}


class EchoSeam:
    """A Flow that answers at once with the request's documents (ids filled in, as a gateway does)."""

    max_body_bytes = 0

    def __init__(self) -> None:
        self._n = 0

    def authorized(self, request: HttpRequest) -> bool:
        return True

    async def run(self, req: DataRequest, size: int) -> None:
        for doc in req.docs or ():
            if doc.id is None:
                self._n += 1
                doc.id = f"{self._n:032x}"

    def sent(self, size: int) -> None:
        pass


def graphql_core_runner() -> Callable[[str, dict[str, Any] | None], Awaitable[bytes]]:
    executor = GraphQLExecutor(EchoSeam())

    async def run(query: str, variables: dict[str, Any] | None) -> bytes:
        answer = await executor.run(executor.prepare(query), variables, None, 0)
        return orjson.dumps(answer)

    return run


def strawberry_runner(cached: bool) -> Callable[[str, dict[str, Any] | None], Awaitable[bytes]]:
    """Jina's GraphQL endpoint, minus FastAPI (bench/jina_strawberry.py). Raises ImportError without strawberry."""
    import jina_strawberry

    return jina_strawberry.runner(EchoSeam(), cached)


def time_runner(run: Callable[[str, dict[str, Any] | None], Awaitable[bytes]], query: str,
                variables: dict[str, Any] | None, number: int, repeat: int = 5) -> tuple[float, int]:
    """Best of `repeat` batches of `number` requests: microseconds per request, and the answer's size."""
    async def batch() -> tuple[float, int]:
        answer = await run(query, variables)  # warms the caches; checked below
        assert b'"errors"' not in answer, answer[:300]
        t0 = time.perf_counter()
        for _ in range(number):
            await run(query, variables)
        return (time.perf_counter() - t0) / number * 1e6, len(answer)

    results = [asyncio.run(batch()) for _ in range(repeat)]
    return min(r[0] for r in results), results[0][1]


def _requirement_names(dist: md.Distribution) -> list[str]:
    names = []
    for req in dist.requires or ():
        if "extra ==" in req:
            continue
        names.append(re.split(r"[\s;<>=!~\[(]", req, maxsplit=1)[0])
    return names


def install_weight(name: str) -> tuple[int, list[str]] | None:
    """Bytes on disk of a distribution and its dependencies (recursively), and their names; None if absent."""
    seen: dict[str, int] = {}
    todo = [name]
    while todo:
        current = todo.pop()
        try:
            dist = md.distribution(current)
        except md.PackageNotFoundError:
            if current == name:
                return None
            continue
        key = dist.metadata["Name"].lower()
        if key in seen:
            continue
        seen[key] = sum((f.size or 0) for f in dist.files or () if f.size)
        todo.extend(_requirement_names(dist))
    return sum(seen.values()), sorted(seen)


def import_ms(module: str, repeat: int = 5) -> float | None:
    """Best of `repeat` fresh interpreters: milliseconds to import `module` (-X importtime's total)."""
    best = None
    for _ in range(repeat):
        done = subprocess.run([sys.executable, "-X", "importtime", "-c", f"import {module}"], capture_output=True,
                              text=True, check=False)
        if done.returncode != 0:
            return None
        line = [x for x in done.stderr.splitlines() if x.rstrip().endswith(f" {module}")][-1]
        total_us = int(line.split("|")[1])
        best = total_us / 1000 if best is None else min(best, total_us / 1000)
    return best


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--number", type=int, default=2000, help="requests per timed batch (best of 5 batches)")
    args = p.parse_args()
    load_before = c.header("graphql_cost: one GraphQL request's cost at the GraphQL layer, graphql-core vs "
                           "strawberry; install weight and import time")
    runners: dict[str, Callable[[str, dict[str, Any] | None], Awaitable[bytes]] | None] = {
        "graphql-core": graphql_core_runner()}
    for name, cached in (("strawberry", False), ("strawberry cached", True)):
        try:
            runners[name] = strawberry_runner(cached)
        except ImportError:
            runners[name] = None
    costs: dict[str, dict[str, Any]] = {}
    rows = []
    for label, (query, variables) in REQUESTS.items():
        costs[label] = {}
        row: list[Any] = [label]
        for lib, run in runners.items():
            if run is None:
                costs[label][lib] = None
                row += ["not installed", ""]
                continue
            us, size = time_runner(run, query, variables, args.number)
            costs[label][lib] = {"us_per_request": round(us, 1), "answer_bytes": size}
            row += [f"{us:,.1f}", f"{size:,}"]
        ours = costs[label]["graphql-core"]
        for name in ("strawberry", "strawberry cached"):
            theirs = costs[label].get(name)
            row.append(f"{theirs['us_per_request'] / ours['us_per_request']:.1f}x" if ours and theirs else "")
        rows.append(row)
    print(c.table(["request", "graphql-core us", "bytes", "strawberry us", "bytes", "strawberry cached us", "bytes",
                   "strawberry / ours", "cached / ours"], rows))

    weights = {}
    wrows = []
    for dist, module in (("graphql-core", "graphql"), ("strawberry-graphql", "strawberry")):
        found = install_weight(dist)
        ms = import_ms(module) if found else None
        weights[dist] = None if found is None else {"bytes": found[0], "distributions": found[1], "import_ms": ms}
        wrows.append([dist, "not installed" if found is None else f"{found[0] / 1e6:.1f} MB",
                      "" if found is None else ", ".join(found[1]), "" if ms is None else f"{ms:.0f}"])
    print()
    print(c.table(["library", "installed, with dependencies", "distributions", "import ms"], wrows))
    versions = {}
    for dist in ("graphql-core", "strawberry-graphql"):
        try:
            versions[dist] = md.version(dist)
        except md.PackageNotFoundError:
            versions[dist] = None
    path = c.write_results("graphql_cost", {
        "benchmark": "graphql_cost",
        "command": "python bench/graphql_cost.py" + (f" --number {args.number}" if args.number != 2000 else ""),
        "machine": c.machine_info(),
        "load_average_before": load_before,
        "load_average_after": c.load_average(),
        "versions": versions,
        "number": args.number,
        "us_per_request": costs,
        "install": weights,
    })
    print(f"\nresults: {path.relative_to(c.REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
