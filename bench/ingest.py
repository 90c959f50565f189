"""`flowrelay ingest` throughput, as a ratio to the load engine's capacity on the same target, and its memory.

Two parts, against `flowrelay serve -e echo` on 127.0.0.1, bytes subprotocol:

  throughput  Documents/s that `flowrelay ingest` settles from a JSON Lines file (16-byte texts, no ids, so
              every id is derived; batch 32; 2 connections x 32 batches in flight = 64 requests, as the
              load run's concurrency), against `flowrelay load --concurrency 64 --docs-per-request 32` (the
              engine's own capacity: pre-encoded frames, nothing to read or encode). Repetitions interleave
              the two; the ratio of the medians is the figure (goal >= 0.8). `gen CPU %` is the client's CPU
              over its wall time (start-up included), `target CPU %` the relay's over the same time; the
              `us/doc` columns are CPU per Document (the client's less its start-up, measured once by a run
              that sends nothing): unlike docs/s, they hardly move when other processes share the machine.
  memory      peak RSS while ingesting a large generated input (1 GB of JSON Lines in a temporary folder
              under /tmp, ~1 KB per Document; --quick: 256 MB), streamed, with --checkpoint and
              --dead-letter: RSS when sending starts, the peak (VmHWM), and at the end. Reading streams, the
              window bounds what is in flight: the three should be close, whatever the input's size.

    python bench/ingest.py [--quick] [--reps 3] [--large-mb 1024]
    # ~2.5 min full, ~1 min quick; writes bench/results/ingest.json; the temporary files are removed
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import common as c
import orjson

GOAL = 0.8
BATCH = 32
CONCURRENCY = 64
CONNECTIONS = 2
TEXT = "hello flowrelay!"  # 16 bytes, the load engine's default document
RSS_SAMPLE_S = 0.1


def generate_small(path: Path, n: int) -> None:
    line = orjson.dumps({"text": TEXT}) + b"\n"
    with path.open("wb") as fh:
        for _ in range(n // 10_000):
            fh.write(line * 10_000)


def generate_large(path: Path, size_bytes: int) -> int:
    """JSON Lines of ~1 KB Documents (distinct texts) up to `size_bytes`; returns how many."""
    import random

    rng = random.Random(7)
    words = [("".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=rng.randint(3, 9)))) for _ in range(4096)]
    block = " ".join(rng.choices(words, k=4000))
    n = 0
    written = 0
    with path.open("wb") as fh:
        chunk: list[bytes] = []
        while written < size_bytes:
            start = (n * 7919) % (len(block) - 1000)
            line = orjson.dumps({"text": f"{n} {block[start:start + 980]}", "tags": {"n": n}}) + b"\n"
            chunk.append(line)
            written += len(line)
            n += 1
            if len(chunk) >= 4096:
                fh.write(b"".join(chunk))
                chunk.clear()
        fh.write(b"".join(chunk))
    return n


def ingest_cmd(path: Path, url: str, *extra: str) -> list[str]:
    return [c.PYTHON, "-m", "flowrelay", "ingest", str(path), url, "--batch", str(BATCH), "--connections",
            str(CONNECTIONS), "--max-inflight", str(CONCURRENCY // CONNECTIONS), "--json", "--quiet", *extra]


def run_ingest(srv: c.Server, path: Path, startup_cpu_s: float = 0.0) -> dict[str, Any]:
    cpu0 = c.proc_cpu_s(srv.pids())
    run = c.run_child(ingest_cmd(path, srv.url), timeout_s=300)
    target_cpu = c.proc_cpu_s(srv.pids()) - cpu0
    if run.returncode != 0:
        raise RuntimeError(f"flowrelay ingest failed (exit {run.returncode}): {run.stderr[-2000:]}")
    s = orjson.loads(run.stdout)
    docs = s["documents"]["acknowledged"]
    return {"docs_per_s": s["docs_per_s"], "docs": docs, "duration_s": s["duration_s"],
            "gen_cpu_pct": 100 * run.cpu_s / run.wall_s, "target_cpu_pct": 100 * target_cpu / run.wall_s,
            "gen_cpu_us_per_doc": 1e6 * max(run.cpu_s - startup_cpu_s, 0.0) / max(docs, 1),
            "target_cpu_us_per_doc": 1e6 * target_cpu / max(docs, 1)}


def run_load(srv: c.Server, duration_s: float, startup_cpu_s: float = 0.0) -> dict[str, Any]:
    cpu0 = c.proc_cpu_s(srv.pids())
    s, run = c.flowrelay_load([srv.url, "--concurrency", str(CONCURRENCY), "--docs-per-request", str(BATCH),
                               "--duration", f"{duration_s}s"], timeout_s=duration_s + 60)
    target_cpu = c.proc_cpu_s(srv.pids()) - cpu0
    docs = s["docs"]["received"]
    return {"docs_per_s": docs / s["measured_duration_s"], "docs": docs,
            "ok_rps": s["rate"]["ok_rps"], "gen_cpu_pct": 100 * run.cpu_s / run.wall_s,
            "target_cpu_pct": 100 * target_cpu / run.wall_s,
            "gen_cpu_us_per_doc": 1e6 * max(run.cpu_s - startup_cpu_s, 0.0) / max(docs, 1),
            "target_cpu_us_per_doc": 1e6 * target_cpu / max(docs, 1)}


def startup_cpu(srv: c.Server, work: Path) -> dict[str, float]:
    """CPU seconds of a run that sends (almost) nothing: start-up, imports, connecting; taken off the
    per-Document CPU figures."""
    empty = work / "empty.jsonl"
    empty.write_bytes(b"")
    ingest = c.run_child(ingest_cmd(empty, srv.url), timeout_s=60)
    _, load = c.flowrelay_load([srv.url, "--concurrency", "1", "--requests", "1"], timeout_s=60)
    return {"ingest": ingest.cpu_s, "load": load.cpu_s}


def measure_rss(srv: c.Server, path: Path, work: Path) -> dict[str, Any]:
    ckpt, dead = work / "large.ckpt", work / "large.dead.jsonl"
    cmd = ingest_cmd(path, srv.url, "--checkpoint", str(ckpt), "--dead-letter", str(dead))
    out = work / "large.out"
    with out.open("wb") as fh:
        proc = subprocess.Popen(cmd, cwd=c.REPO, stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.PIPE,
                                start_new_session=True)
    samples: list[tuple[float, int]] = []
    start_kb = peak_kb = None
    t0 = time.monotonic()
    try:
        while proc.poll() is None and time.monotonic() - t0 < 900:
            rss = c.status_kb(proc.pid, "VmRSS")
            hwm = c.status_kb(proc.pid, "VmHWM")
            if rss is not None:
                samples.append((time.monotonic() - t0, rss))
                if start_kb is None and ckpt.exists():
                    start_kb = rss  # sending has begun: the first checkpoint is on disk
            if hwm is not None:
                peak_kb = hwm
            time.sleep(RSS_SAMPLE_S)
    finally:
        if proc.poll() is None:
            proc.kill()
        _, err = proc.communicate(timeout=30)
    if proc.returncode != 0:
        raise RuntimeError(f"flowrelay ingest (large) failed (exit {proc.returncode}): {err.decode()[-2000:]}")
    s = orjson.loads(out.read_bytes())
    end_kb = samples[-1][1] if samples else None
    return {
        "input_bytes": path.stat().st_size,
        "docs": s["documents"]["acknowledged"],
        "docs_per_s": s["docs_per_s"],
        "duration_s": s["duration_s"],
        "rss_start_mb": (start_kb or 0) / 1024,
        "rss_peak_mb": (peak_kb or 0) / 1024,
        "rss_end_mb": (end_kb or 0) / 1024,
        "samples": len(samples),
        "rss_timeline_mb": [(round(t, 1), round(kb / 1024, 1)) for t, kb in samples[:: max(1, len(samples) // 40)]],
    }


def main() -> int:
    p = c.base_args(__doc__ or "")
    p.add_argument("--large-mb", type=int, help="size of the large input in MB (default 1024; --quick 256)")
    args = p.parse_args()
    c.install_sigterm_as_interrupt()
    n_small = 200_000 if args.quick else 400_000
    load_s = 3.0 if args.quick else 5.0
    large_mb = args.large_mb or (256 if args.quick else 1024)
    load_before = c.header(f"ingest: flowrelay ingest vs flowrelay load on `serve -e echo`, bytes, batch {BATCH}, "
                           f"{args.reps} reps{' (quick)' if args.quick else ''}", args.wait_quiet)
    started = time.monotonic()
    noise = c.Noise()
    reps: list[dict[str, Any]] = []
    work = Path(tempfile.mkdtemp(prefix="flowrelay-bench-ingest-", dir="/tmp"))
    try:
        small = work / "docs.jsonl"
        generate_small(small, n_small)
        with contextlib.ExitStack() as stack:
            srv = stack.enter_context(c.relay_server("echo"))
            print(f"target: {srv.name} {srv.url}; ingest input {n_small:,} docs ({small.stat().st_size / 1e6:.1f} MB)",
                  flush=True)
            startup = startup_cpu(srv, work)
            for rep in range(args.reps):
                out: dict[str, Any] = {"rep": rep}
                for kind in (("load", "ingest") if rep % 2 == 0 else ("ingest", "load")):
                    if kind == "load":
                        r = run_load(srv, load_s, startup["load"])
                    else:
                        r = run_ingest(srv, small, startup["ingest"])
                    out[kind] = r
                    print(f"  rep {rep + 1} {kind:6}  {r['docs_per_s']:10,.0f} docs/s  (gen CPU "
                          f"{r['gen_cpu_pct']:.0f} %, {r['gen_cpu_us_per_doc']:.2f} us/doc; target CPU "
                          f"{r['target_cpu_pct']:.0f} %, {r['target_cpu_us_per_doc']:.2f} us/doc)", flush=True)
                reps.append(out)
            print(f"generating the large input ({large_mb} MB) ...", flush=True)
            large = work / "large.jsonl"
            n_large = generate_large(large, large_mb * 1_000_000)
            print(f"  {n_large:,} docs, {large.stat().st_size / 1e6:,.0f} MB; ingesting it ...", flush=True)
            rss = measure_rss(srv, large, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    load_after = c.load_average()
    noise_r = noise.report()

    ingest_rates = [r["ingest"]["docs_per_s"] for r in reps]
    load_rates = [r["load"]["docs_per_s"] for r in reps]
    m_ingest, m_load = c.median(ingest_rates), c.median(load_rates)
    ratio = m_ingest / m_load
    def med(kind: str, key: str) -> float:
        return c.median([r[kind][key] for r in reps])

    rows = [
        [f"flowrelay load --concurrency {CONCURRENCY} --docs-per-request {BATCH}", m_load, c.spread(load_rates),
         med("load", "gen_cpu_pct"), med("load", "gen_cpu_us_per_doc"), med("load", "target_cpu_pct"),
         med("load", "target_cpu_us_per_doc"), 1.0],
        [f"flowrelay ingest --batch {BATCH} ({CONNECTIONS} x {CONCURRENCY // CONNECTIONS} in flight)", m_ingest,
         c.spread(ingest_rates), med("ingest", "gen_cpu_pct"), med("ingest", "gen_cpu_us_per_doc"),
         med("ingest", "target_cpu_pct"), med("ingest", "target_cpu_us_per_doc"), ratio],
    ]
    print()
    print(c.table(["client", "docs/s", "(min-max)", "gen CPU %", "gen us/doc", "target CPU %", "target us/doc",
                   "vs load"], rows))
    print(f"\nratio ingest/load {ratio:.2f} (goal >= {GOAL:g} {'ok' if ratio >= GOAL else 'MISSED'})")
    growth = rss["rss_end_mb"] - rss["rss_start_mb"]
    print(f"large input: {rss['input_bytes'] / 1e6:,.0f} MB, {rss['docs']:,} docs at {rss['docs_per_s']:,.0f} docs/s; "
          f"RSS start {rss['rss_start_mb']:.1f} MB, peak {rss['rss_peak_mb']:.1f} MB, end {rss['rss_end_mb']:.1f} MB "
          f"(end - start {growth:+.1f} MB)")
    print(f"load average after: {c.fmt_load(load_after)}  (before: {c.fmt_load(load_before)}); "
          f"{time.monotonic() - started:.0f} s")
    print(c.noise_line(noise_r))
    path = c.write_results("ingest", {
        "benchmark": "ingest",
        "command": "python bench/ingest.py" + (" --quick" if args.quick else "")
        + (f" --large-mb {args.large_mb}" if args.large_mb else ""),
        "machine": c.machine_info(),
        "load_average_before": load_before,
        "load_average_after": load_after,
        "other_processes": noise_r,
        "batch": BATCH,
        "concurrency": CONCURRENCY,
        "medians": {"ingest_docs_per_s": m_ingest, "load_docs_per_s": m_load,
                    "ingest_gen_cpu_us_per_doc": med("ingest", "gen_cpu_us_per_doc"),
                    "load_gen_cpu_us_per_doc": med("load", "gen_cpu_us_per_doc"),
                    "target_cpu_us_per_doc_ingest": med("ingest", "target_cpu_us_per_doc"),
                    "target_cpu_us_per_doc_load": med("load", "target_cpu_us_per_doc")},
        "startup_cpu_s": startup,
        "ratio": ratio,
        "goal": GOAL,
        "met": ratio >= GOAL,
        "memory": rss,
        "reps": reps,
    })
    print(f"results: {path.relative_to(c.REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
