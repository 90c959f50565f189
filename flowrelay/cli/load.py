"""The `flowrelay load` verb: flags and scenario files -> a LoadConfig -> a run -> outputs, exit code.

Exit codes (documented in the README): 0 the run finished and every threshold held; 1 the run could
not be carried out (target unreachable: "cannot connect: ..."; a worker or a background task failed: "worker N
crashed: ...", "the run crashed: ..."); 2 a usage error, reported before any traffic; 99 a threshold failed
(k6's code for the same).

With `--workers N --coordinator HOST:PORT` (flowrelay.cli.cluster_options) the process is one worker of a run
split over several machines (loadtest.cluster.load_run); worker 0's exit code is the run's, with the same codes.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import traceback
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
import yaml

from flowrelay.cli.cluster_options import ClusterUsageError, add_cluster_arguments, bind_address, cluster_options
from flowrelay.cli.options import parse_params
from loadtest import thresholds as thresholds_mod
from loadtest.cluster.client import ClusterOptions
from loadtest.config import HTTP, LoadConfig, codec_mode, transport_of, usage_problem
from loadtest.engine import run_load
from loadtest.models.replay import ReplayError, ReplaySpec, load_recording
from loadtest.outputs.dashboard import DashboardServer, parse_address, run_feed, run_info
from loadtest.outputs.live import LiveLine
from loadtest.outputs.prometheus import PrometheusExporter
from loadtest.outputs.summary import REQUESTS_FILE, build_summary, print_summary, write_results
from loadtest.outputs.timeseries import SeriesFiles
from loadtest.payloads import DocSpec
from loadtest.procs import WorkerCrashed
from loadtest.sessions.base import ConnectError
from relay.common.loop import describe_error
from relay.common.units import parse_duration

EXIT_OK = 0
EXIT_RUN_FAILED = 1
EXIT_USAGE = 2
EXIT_THRESHOLDS = 99


class UsageError(ValueError):
    """A mistake in flags or scenario; reported before any traffic, exit 2."""


def add_load_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", nargs="?", help="ws://, grpc:// or http://HOST:PORT of a Flow or relay: the scheme "
                   "picks the protocol (WebSocket, gRPC JinaRPC/Call, HTTP POST /post)")
    p.add_argument("--scenario", type=Path, help="a YAML scenario file; flags given on the line override it")
    p.add_argument("--subprotocol", choices=["json", "bytes", "none"],
                   help="what to offer over ws:// (default bytes); grpc:// carries protobuf, http:// JSON")
    p.add_argument("--rate", type=float, help="open model: requests per second (the default model)")
    p.add_argument("--stage", action="append", metavar="DURATION:TARGET",
                   help="open model in stages, k6-style ramping arrival rate (repeatable), e.g. 30s:200")
    p.add_argument("--arrival", choices=["even", "poisson"], help="spacing of arrivals (default even)")
    p.add_argument("--concurrency", type=int, help="closed model: keep C requests in flight")
    p.add_argument("--replay", type=Path, metavar="DIR|FILE",
                   help="send the requests of a recording (a `serve --record` folder or segment, or a browser's .har) "
                   "with their recorded gaps, each recorded connection on a session of its own; --rate R re-times "
                   "them as an open model")
    p.add_argument("--speed", type=float, help="with --replay: divide every recorded gap by this (2: twice as fast)")
    p.add_argument("--loop", action="store_true",
                   help="with --replay: start the recording over when it ends (needs --duration or --requests)")
    p.add_argument("--duration", help="how long to send, e.g. 30s, 5m")
    p.add_argument("--requests", type=int, help="how many requests to send at most")
    p.add_argument("--warmup", help="leave requests due in the first DURATION out of the figures")
    p.add_argument("--connections", type=int, help="persistent connections (default 1): WebSocket sessions, "
                   "gRPC channels (one Call stream each), or HTTP keep-alive connections (one request each at a time)")
    p.add_argument("--max-inflight", type=int, help="requests in flight per connection (default 1000, "
                   "a Jina gateway's prefetch); beyond it a due request is dropped and counted. "
                   "Over http:// it is 1")
    p.add_argument("--endpoint", help="execEndpoint of every request (default /)")
    p.add_argument("--target-executor", help="targetExecutor regex")
    p.add_argument("--param", action="append", metavar="KEY=JSON", help="a request parameter (repeatable)")
    p.add_argument("--docs-per-request", type=int)
    p.add_argument("--text-bytes", type=int)
    p.add_argument("--embedding-dim", type=int)
    p.add_argument("--tags", help="JSON object put in every document's tags")
    p.add_argument("--blob-bytes", type=int)
    p.add_argument("--data", type=Path, help="JSON Lines file of Documents, cycled")
    p.add_argument("--docarray", choices=["v1", "v2"],
                   help="the target's documents in bytes mode: v1 = docarray < 0.30 (default), v2 = docarray >= 0.30 "
                   "(DocProto maps with TextDoc's fields, what a docarray >= 0.30 Flow reads)")
    p.add_argument("--graphql", metavar="QUERY|@FILE",
                   help="with an http:// target: send this GraphQL query or mutation (to the URL's path, /graphql "
                   "by default) instead of POST /post; the generated Documents are $docs, and $parameters, "
                   "$execEndpoint, $targetExecutor are filled too, e.g. 'mutation { docs(data: $docs) { id } }'")
    p.add_argument("--timeout", help="a request unanswered this long counts as timed out (default 30s)")
    p.add_argument("--grace", help="at the end, how long to wait for answers in flight (default 10s)")
    p.add_argument("--threshold", action="append", metavar="EXPR",
                   help="e.g. 'latency.p99<50ms', 'errors.rate<0.001' (repeatable); a failure exits 99")
    p.add_argument("--out", type=Path, help="results folder: summary.json and totals.hlog at the end, and "
                   "timeseries.jsonl and latency.hlog (HdrHistogram interval log) as each second closes; with "
                   "--workers, worker 0 writes the merged results there and each worker its own in worker-K/")
    p.add_argument("--log-requests", action="store_true", help="also write every request to requests.msgpack")
    p.add_argument("--procs", type=int, help="worker processes, the rate and connections split among them")
    p.add_argument("--compression", action="store_true", help="offer permessage-deflate")
    p.add_argument("--ca-file", type=Path, metavar="PEM",
                   help="for a wss:// target: trust this CA certificate (e.g. a relay's self-signed one)")
    p.add_argument("--quiet", action="store_true", help="no live line")
    p.add_argument("--json", action="store_true", help="print summary.json to stdout instead of the table")
    p.add_argument("--metrics-port", type=int, metavar="P",
                   help="serve Prometheus metrics at http://HOST:P/metrics while the run lasts (0 picks a free port; "
                   "one port for every --procs worker, each with its `worker` label)")
    p.add_argument("--metrics-host", help="address for --metrics-port (default 127.0.0.1)")
    p.add_argument("--metrics-linger", metavar="DURATION",
                   help="after the run, keep serving metrics this long so a scraper takes the last values (default 0s)")
    p.add_argument("--dashboard", metavar="[HOST:]PORT",
                   help="serve a live dashboard at http://HOST:PORT/ while the run lasts (default host 127.0.0.1; "
                   "port 0 picks a free one); at the end it shows what the report shows")
    p.add_argument("--dashboard-linger", metavar="DURATION",
                   help="after the run, keep the dashboard up this long (default 0s: the run never waits for a "
                   "browser)")


# scenario keys -> flag dests (a scenario file uses the flags' long names, with - or _)
_SCENARIO_KEYS = {
    "target", "subprotocol", "rate", "stages", "arrival", "concurrency", "duration", "requests", "warmup",
    "connections", "max_inflight", "endpoint", "target_executor", "parameters", "docs_per_request",
    "text_bytes", "embedding_dim", "tags", "blob_bytes", "data", "timeout", "grace", "thresholds", "out",
    "log_requests", "procs", "compression", "metrics_port", "metrics_host", "metrics_linger", "ca_file",
    "docarray", "dashboard", "dashboard_linger", "graphql", "replay", "speed", "loop",
}
# What a replay takes from its recording: giving them as well is a usage error.
_REPLAY_EXCLUDES = ("stages", "concurrency", "connections", "endpoint", "target_executor", "parameters",
                    "docs_per_request", "text_bytes", "embedding_dim", "tags", "blob_bytes", "data")


def _load_scenario(path: Path) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise UsageError(f"cannot read scenario {path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise UsageError(f"scenario {path} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise UsageError(f"scenario {path} must be a mapping of options")
    scenario = {k.replace("-", "_"): v for k, v in raw.items()}
    unknown = set(scenario) - _SCENARIO_KEYS
    if unknown:
        raise UsageError(f"scenario {path}: unknown key(s) {', '.join(sorted(unknown))}; "
                         f"known: {', '.join(sorted(_SCENARIO_KEYS))}")
    return scenario


def _pick(args: argparse.Namespace, scenario: dict[str, Any], name: str, default: Any = None) -> Any:
    value = getattr(args, name, None)
    if value is not None and value is not False:
        return value
    return scenario.get(name, default)


def _duration(value: Any, flag: str) -> float | None:
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise UsageError(f"{flag}: {exc}") from None


def _check_target(target: str | None) -> str:
    if not target:
        raise UsageError("a target is needed: flowrelay load ws://127.0.0.1:12345 ... (or 'target:' in a scenario)")
    parts = urlsplit(target)
    try:
        transport_of(target)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if not parts.hostname or not parts.port:
        raise UsageError(f"target {target!r}: give a host and a port, e.g. {parts.scheme}://127.0.0.1:12345")
    return target


def _ca_file(value: Any, target: str) -> Path | None:
    if value is None:
        return None
    path = Path(value)
    if not target.startswith("wss://"):
        raise UsageError(f"--ca-file {path}: only a wss:// target uses TLS")
    if not path.is_file():
        raise UsageError(f"--ca-file {path}: no such file")
    return path


def _graphql_query(value: Any, target: str) -> str | None:
    """`--graphql QUERY` or `@FILE`, checked (loadtest.sessions.graphql.prepare_query); None when not given."""
    if value is None:
        return None
    if transport_of(target) != HTTP:
        raise UsageError(f"--graphql is for http:// targets (a Flow's or relay's /graphql), not {target!r}")
    text = str(value)
    if text.startswith("@"):
        try:
            text = Path(text[1:]).read_text()
        except OSError as exc:
            raise UsageError(f"--graphql {value}: {exc}") from None
    from loadtest.sessions.graphql import prepare_query

    try:
        prepare_query(text)
    except ValueError as exc:
        raise UsageError(f"--graphql: {exc}") from None
    return text


def config_from_args(args: argparse.Namespace) -> tuple[LoadConfig, list[str], Path | None, bool]:
    """Build the run's configuration from flags and scenario; raises UsageError."""
    scenario = _load_scenario(args.scenario) if args.scenario else {}
    target = _check_target(_pick(args, scenario, "target"))
    subprotocol = _pick(args, scenario, "subprotocol", "bytes")
    if subprotocol not in ("json", "bytes", "none"):
        raise UsageError(f"subprotocol must be json, bytes or none, not {subprotocol!r}")

    stages: list[tuple[float, float]] | None = None
    if args.stage:
        stages = []
        for s in args.stage:
            d, sep, r = s.partition(":")
            if not sep:
                raise UsageError(f"--stage {s!r}: expected DURATION:TARGET, e.g. 30s:200")
            try:
                stages.append((parse_duration(d), float(r)))
            except ValueError as exc:
                raise UsageError(f"--stage {s!r}: {exc}") from None
    elif scenario.get("stages") is not None:
        from loadtest.models.schedule import Stages

        try:
            stages = list(Stages.from_scenario(scenario["stages"]).stages)
        except ValueError as exc:
            raise UsageError(f"scenario stages: {exc}") from None

    rate = _pick(args, scenario, "rate")
    concurrency = _pick(args, scenario, "concurrency")
    duration_s = _duration(_pick(args, scenario, "duration"), "--duration")
    requests = _pick(args, scenario, "requests")
    replay = _replay_spec(args, scenario, target, stages, rate)
    models = sum(x is not None for x in (rate, stages, concurrency))
    if replay is not None:
        if replay.loop and duration_s is None and requests is None:
            raise UsageError("--loop repeats the recording without end: give --duration or --requests")
    elif models > 1:
        raise UsageError("choose one load model: --rate, --stage/stages, or --concurrency")
    elif models == 0:
        raise UsageError("no load model: give --rate R (open model), --stage D:R, --concurrency C (closed), "
                         "or --replay DIR (a recording)")
    elif stages:
        if duration_s is not None:
            raise UsageError("--duration does not go with stages: the stages set the length")
    elif duration_s is None and requests is None:
        raise UsageError("give --duration or --requests (every run is bounded)")
    if rate is not None and float(rate) <= 0:
        raise UsageError("--rate must be > 0")
    if concurrency is not None and int(concurrency) <= 0:
        raise UsageError("--concurrency must be > 0")
    if requests is not None and int(requests) <= 0:
        raise UsageError("--requests must be > 0")

    connections = replay.connections if replay is not None else int(_pick(args, scenario, "connections", 1))
    procs = int(_pick(args, scenario, "procs", 1))
    max_inflight = int(_pick(args, scenario, "max_inflight", 1000))
    if connections < 1 or procs < 1 or max_inflight < 1:
        raise UsageError("--connections, --procs and --max-inflight must be >= 1")
    if procs > connections:
        if replay is not None:
            raise UsageError(f"--procs {procs}: the recording has {connections} connection(s), and a replay "
                             "splits by connection")
        raise UsageError(f"--procs {procs} needs at least as many --connections (got {connections})")
    problem = usage_problem(transport_of(target), _pick(args, scenario, "subprotocol") is not None,
                            bool(_pick(args, scenario, "compression", False)),
                            int(concurrency) if concurrency is not None else None, connections)
    if problem:
        raise UsageError(problem)

    try:
        params: dict[str, Any] = {**(scenario.get("parameters") or {}), **parse_params(args.param or [], "sleep_ms=5")}
    except ValueError as exc:
        raise UsageError(str(exc)) from None

    tags = _pick(args, scenario, "tags")
    if isinstance(tags, str):
        try:
            tags = orjson.loads(tags)
        except orjson.JSONDecodeError:
            raise UsageError(f"--tags must be a JSON object, got {tags!r}") from None
    if tags is not None and not isinstance(tags, dict):
        raise UsageError("--tags must be a JSON object")
    data = _pick(args, scenario, "data")
    if data is not None:
        data = Path(data)
        if not data.is_file():
            raise UsageError(f"--data {data}: no such file")
    docarray = _pick(args, scenario, "docarray", "v1")
    if docarray not in ("v1", "v2"):
        raise UsageError(f"docarray must be v1 or v2, not {docarray!r}")
    if docarray == "v2" and codec_mode(transport_of(target), subprotocol) != "bytes":
        raise UsageError("--docarray v2 is for protobuf requests: a ws:// target with --subprotocol bytes, or "
                         "grpc:// (a docarray >= 0.30 gateway speaks nothing else)")
    docs = DocSpec(
        docs_per_request=int(_pick(args, scenario, "docs_per_request", 1)),
        text_bytes=int(_pick(args, scenario, "text_bytes", 16)),
        embedding_dim=int(_pick(args, scenario, "embedding_dim", 0)),
        tags=tags or {},
        blob_bytes=int(_pick(args, scenario, "blob_bytes", 0)),
        data_file=data,
        docarray=docarray,
    )
    if docs.docs_per_request < 0:
        raise UsageError("--docs-per-request must be >= 0")

    metrics_port = _pick(args, scenario, "metrics_port")
    if metrics_port is not None and (isinstance(metrics_port, bool) or not isinstance(metrics_port, int)
                                     or not 0 <= metrics_port <= 65535):
        raise UsageError(f"--metrics-port must be a port number 0..65535, not {metrics_port!r}")
    metrics_linger_s = _duration(_pick(args, scenario, "metrics_linger"), "--metrics-linger") or 0.0
    if metrics_linger_s < 0:
        raise UsageError("--metrics-linger must be >= 0")

    dashboard = _pick(args, scenario, "dashboard")
    if dashboard is not None:
        try:
            dashboard = parse_address(dashboard)
        except ValueError as exc:
            raise UsageError(f"--dashboard {exc}") from None
    dashboard_linger_s = _duration(_pick(args, scenario, "dashboard_linger"), "--dashboard-linger") or 0.0
    if dashboard_linger_s < 0:
        raise UsageError("--dashboard-linger must be >= 0")

    exprs = list(scenario.get("thresholds") or []) + list(args.threshold or [])
    for expr in exprs:
        try:
            thresholds_mod.parse_threshold(expr)
        except ValueError as exc:
            raise UsageError(f"threshold {expr!r}: {exc}") from None

    out = _pick(args, scenario, "out")
    out = Path(out) if out is not None else None
    log_requests = bool(_pick(args, scenario, "log_requests", False))
    if log_requests and out is None:
        raise UsageError("--log-requests needs --out")

    cfg = LoadConfig(
        target=target,
        subprotocol=subprotocol,
        connections=connections,
        max_inflight=max_inflight,
        rate=float(rate) if rate is not None else None,
        stages=stages,
        arrival=_pick(args, scenario, "arrival", "even"),
        concurrency=int(concurrency) if concurrency is not None else None,
        duration_s=duration_s,
        requests=int(requests) if requests is not None else None,
        warmup_s=_duration(_pick(args, scenario, "warmup"), "--warmup") or 0.0,
        endpoint=_pick(args, scenario, "endpoint", "/"),
        target_executor=_pick(args, scenario, "target_executor"),
        parameters=params,
        docs=docs,
        timeout_s=_duration(_pick(args, scenario, "timeout"), "--timeout") or 30.0,
        grace_s=_duration(_pick(args, scenario, "grace"), "--grace") or 10.0,
        procs=procs,
        log_requests=(out / REQUESTS_FILE) if (log_requests and out) else None,
        compression=bool(_pick(args, scenario, "compression", False)),
        ca_file=_ca_file(_pick(args, scenario, "ca_file"), target),
        metrics_port=metrics_port,
        metrics_host=str(_pick(args, scenario, "metrics_host", "127.0.0.1")),
        metrics_linger_s=metrics_linger_s,
        dashboard=dashboard,
        dashboard_linger_s=dashboard_linger_s,
        graphql=_graphql_query(_pick(args, scenario, "graphql"), target),
        replay=replay,
    )
    return cfg, exprs, out, bool(args.quiet)


def _replay_spec(args: argparse.Namespace, scenario: dict[str, Any], target: str,
                 stages: list[tuple[float, float]] | None, rate: Any) -> ReplaySpec | None:
    """What `--replay` asks for, checked against its recording (read here once); None without --replay."""
    source = _pick(args, scenario, "replay")
    speed = _pick(args, scenario, "speed")
    loop = bool(_pick(args, scenario, "loop", False))
    if source is None:
        if speed is not None or loop:
            raise UsageError(f"{'--speed' if speed is not None else '--loop'} is for --replay")
        return None
    given = [k for k in _REPLAY_EXCLUDES if _pick(args, scenario, k) not in (None, False, [], {})]
    if stages:
        given.append("stages")
    if args.param:
        given.append("param")
    if given:
        flags = ", ".join(sorted({"--" + k.replace("_", "-") for k in given}))
        raise UsageError(f"{flags}: a replay takes its requests, documents, sessions and timing from the "
                         "recording (re-time it with --rate R or --speed X)")
    if speed is not None and rate is not None:
        raise UsageError("--speed and --rate both time a replay: --speed X divides the recorded gaps, "
                         "--rate R replaces them")
    subprotocol = _pick(args, scenario, "subprotocol")
    try:
        recording = load_recording(Path(source))
        return ReplaySpec.of(recording, Path(source), float(speed) if speed is not None else 1.0,
                             float(rate) if rate is not None else None, loop, subprotocol)
    except ReplayError as exc:
        raise UsageError(f"--replay {source}: {exc}") from None


def _check_cluster(cfg: LoadConfig, cluster: ClusterOptions) -> None:
    """What cannot be split over `cluster.workers` workers; raises UsageError."""
    if cfg.procs > 1:
        raise UsageError("--procs goes with one machine; with --workers run one worker per core (more pods, or a "
                         "larger --workers)")
    if cfg.replay is not None and cluster.workers > cfg.replay.connections:
        raise UsageError(f"--workers {cluster.workers}: the recording has {cfg.replay.connections} connection(s), "
                         "and a replay splits by recorded connection")


def run(args: argparse.Namespace) -> int:
    try:
        cfg, exprs, out, quiet = config_from_args(args)
        cluster = cluster_options(args)
        if cluster is not None:
            _check_cluster(cfg, cluster)
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
    except (UsageError, ClusterUsageError, OSError) as exc:
        print(f"flowrelay load: {exc}", file=sys.stderr)
        return EXIT_USAGE
    exporter: PrometheusExporter | None = None
    if cfg.metrics_port is not None:
        try:
            exporter = PrometheusExporter(cfg.metrics_port, cfg.metrics_host, cfg.metrics_linger_s)
        except OSError as exc:
            print(f"flowrelay load: cannot serve metrics on {cfg.metrics_host}:{cfg.metrics_port}: {exc}",
                  file=sys.stderr)
            return EXIT_USAGE
        print(f"flowrelay load: metrics at {exporter.url}", file=sys.stderr, flush=True)
    dashboard: DashboardServer | None = None
    if cfg.dashboard is not None and cluster is not None and cluster.index != 0:
        print("flowrelay load: --dashboard is served by worker 0, for the whole run; not by this worker",
              file=sys.stderr, flush=True)
    elif cfg.dashboard is not None:
        try:
            dashboard = DashboardServer(*cfg.dashboard, run_info(cfg), cfg.dashboard_linger_s)
        except OSError as exc:
            print(f"flowrelay load: cannot serve the dashboard on {cfg.dashboard[0]}:{cfg.dashboard[1]}: {exc}",
                  file=sys.stderr)
            if exporter is not None:
                exporter.close()
            return EXIT_USAGE
        print(f"flowrelay load: dashboard at {dashboard.url}", file=sys.stderr, flush=True)
    try:
        if cluster is not None:
            return _run_cluster(args, cfg, cluster, exprs, out, quiet, exporter, dashboard)
        return _run(args, cfg, exprs, out, quiet, exporter, dashboard)
    finally:
        if exporter is not None:
            exporter.close()
        if dashboard is not None:
            dashboard.close()


def _run_cluster(args: argparse.Namespace, cfg: LoadConfig, cluster: ClusterOptions, exprs: list[str],
                 out: Path | None, quiet: bool, exporter: PrometheusExporter | None,
                 dashboard: DashboardServer | None) -> int:
    """This process as one worker of a run over several machines (worker 0: the run's outcome)."""
    from loadtest.cluster.load_run import LoadWorkerRun, run_worker

    code = run_worker(LoadWorkerRun(cfg, cluster, bind_address(cluster, args.coordinator_bind), exprs, out, quiet,
                                    bool(args.json), exporter, dashboard))
    if exporter is not None and exporter.linger_s > 0:
        with contextlib.suppress(KeyboardInterrupt):
            exporter.linger()
    return code


def _run(args: argparse.Namespace, cfg: LoadConfig, exprs: list[str], out: Path | None, quiet: bool,
         exporter: PrometheusExporter | None, dashboard: DashboardServer | None = None) -> int:
    live = LiveLine(enabled=not quiet)
    # Rows go to disk as each second closes; without --out they go nowhere (the summary needs none).
    series = SeriesFiles(out) if out is not None else None
    rows: Any = series
    if dashboard is not None:
        rows = run_feed(dashboard, cfg, exprs, series)
    finished = False
    try:
        result = run_load(cfg, on_row=live, metrics=exporter, series=rows)
        finished = True
    except ConnectError as exc:
        print(f"flowrelay load: cannot connect: {exc}", file=sys.stderr)
        return EXIT_RUN_FAILED
    except KeyboardInterrupt:
        print("flowrelay load: interrupted", file=sys.stderr)
        return EXIT_RUN_FAILED
    except WorkerCrashed as exc:
        print(exc.details, file=sys.stderr, end="")
        print(f"flowrelay load: {exc}", file=sys.stderr)
        return EXIT_RUN_FAILED
    except Exception as exc:  # a background task or a bug ended the run: a crash, named as one
        traceback.print_exc()
        print(f"flowrelay load: the run crashed: {describe_error(exc)}", file=sys.stderr)
        return EXIT_RUN_FAILED
    finally:
        if series is not None:
            series.close(complete=finished)
    summary = build_summary(result)
    summary["thresholds"] = thresholds_mod.evaluate(exprs, summary)
    if series is not None and out is not None:
        write_results(out, summary, result, series.log.start_wall)
    if dashboard is not None:
        dashboard.finish(summary)
    print_summary(summary, args.json)
    if out is not None and not args.json:
        print(f"\nresults in {out}/")
    result.recorder.accounting.check()
    lingering = [s for s in (exporter, dashboard) if s is not None and s.linger_s > 0]
    if lingering:
        sys.stdout.flush()
        # Together, not one after the other: the longest linger is the wait.
        longest = max(lingering, key=lambda s: s.linger_s)
        for server in lingering:
            server.start()
        with contextlib.suppress(KeyboardInterrupt):
            longest.linger()
    if any(not t["ok"] for t in summary["thresholds"]):
        return EXIT_THRESHOLDS
    return EXIT_OK


def register(sub: Any) -> dict[str, Any]:
    """Add `load` to the `flowrelay` command."""
    p = sub.add_parser(
        "load",
        help="drive a Flow (or relay) at a configured rate and measure it",
        description="Open persistent connections to a Jina Flow (WebSocket, gRPC or HTTP, from the target's "
        "scheme) and stream requests at a configured "
        "rate (open model) or concurrency (closed model); report latency from the intended send time, "
        "per-hop spans from routes, and an accounting that adds up.",
    )
    add_load_arguments(p)
    add_cluster_arguments(p)
    return {"load": run}
