"""The flags `flowrelay load` and `flowrelay ingest` share to run as one of N workers: parsing and checks.

    --workers N --coordinator HOST:PORT [--worker-index I] [--barrier-timeout 120s] [--worker-timeout 10s]
    [--on-worker-loss abort|continue] [--coordinator-bind ADDR]

The index comes from `--worker-index`, else the JOB_COMPLETION_INDEX a Kubernetes Indexed Job sets, else the
coordinator assigns the next free one (Compose replicas). Worker 0 runs the coordinator: it listens on
`--coordinator-bind` (default: HOST itself when HOST is a loopback address, else 0.0.0.0, as in a pod whose
HOST is its own DNS name) at PORT. Not a verb: a helper of the load and ingest verbs.
"""

from __future__ import annotations

import argparse
import ipaddress
import os

from loadtest.cluster.client import ClusterOptions
from loadtest.cluster.coordinator import LOSS_POLICIES
from relay.common.units import parse_duration

INDEX_ENV = "JOB_COMPLETION_INDEX"


class ClusterUsageError(ValueError):
    """A cluster flag that cannot work; reported before any traffic (exit 2)."""


def add_cluster_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("cluster (one run over several machines; every worker runs the same command)")
    g.add_argument("--workers", type=int, metavar="N", help="the run is split over N workers (processes, pods, "
                   "hosts); worker 0 runs the coordinator and writes the merged results")
    g.add_argument("--coordinator", metavar="HOST:PORT", help="where worker 0's coordinator listens (in a "
                   "Kubernetes Indexed Job: JOB-0.SERVICE:PORT)")
    g.add_argument("--worker-index", type=int, metavar="I", help=f"this worker's index, 0..N-1 (default: "
                   f"${INDEX_ENV}, else the coordinator assigns one)")
    g.add_argument("--barrier-timeout", default="120s", help="how long workers wait for each other, and for the "
                   "coordinator to come up, before giving up (default 120s)")
    g.add_argument("--worker-timeout", default="10s", help="a worker (or the coordinator) silent this long is lost "
                   "(default 10s)")
    g.add_argument("--on-worker-loss", choices=LOSS_POLICIES, default="abort",
                   help="when a worker is lost: stop the run (abort, the default) or go on without it; either way "
                   "the run exits 1")
    g.add_argument("--coordinator-bind", metavar="ADDR", help="the address worker 0's coordinator listens on "
                   "(default: HOST when it is a loopback address, else 0.0.0.0)")


def _duration(value: str, flag: str) -> float:
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise ClusterUsageError(f"{flag}: {exc}") from None
    if seconds <= 0:
        raise ClusterUsageError(f"{flag} must be > 0")
    return seconds


def cluster_options(args: argparse.Namespace) -> ClusterOptions | None:
    """The cluster options, None when the run is not split; raises ClusterUsageError."""
    if args.workers is None:
        if args.coordinator or args.worker_index is not None:
            raise ClusterUsageError("--coordinator and --worker-index go with --workers N")
        return None
    if args.workers < 1:
        raise ClusterUsageError("--workers must be >= 1")
    if not args.coordinator:
        raise ClusterUsageError("--workers needs --coordinator HOST:PORT (worker 0's address)")
    host, sep, port_text = args.coordinator.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ClusterUsageError(f"--coordinator {args.coordinator!r}: expected HOST:PORT, e.g. load-0.load:7070")
    index = args.worker_index
    if index is None and os.environ.get(INDEX_ENV, "") != "":
        try:
            index = int(os.environ[INDEX_ENV])
        except ValueError:
            raise ClusterUsageError(f"${INDEX_ENV}={os.environ[INDEX_ENV]!r} is not a worker index") from None
    if index is not None and not 0 <= index < args.workers:
        raise ClusterUsageError(f"worker index {index} is out of range 0..{args.workers - 1} "
                                f"(--workers {args.workers})")
    return ClusterOptions(
        workers=args.workers,
        host=host,
        port=int(port_text),
        index=index,
        barrier_timeout_s=_duration(args.barrier_timeout, "--barrier-timeout"),
        worker_timeout_s=_duration(args.worker_timeout, "--worker-timeout"),
        on_worker_loss=args.on_worker_loss,
    )


def bind_address(opts: ClusterOptions, bind: str | None) -> str:
    """Where worker 0's coordinator listens."""
    if bind:
        return bind
    if opts.host == "localhost":
        return "127.0.0.1"
    try:
        return opts.host if ipaddress.ip_address(opts.host).is_loopback else "0.0.0.0"
    except ValueError:  # a name: in a pod, the pod's own DNS name, not resolvable before the pod is up
        return "0.0.0.0"
