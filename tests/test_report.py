"""`flowrelay report`: the HTML report of a results folder and the comparison of two, from real runs.

Two short runs (2 s each, `flowrelay load --out` against a `flowrelay serve` subprocess on 127.0.0.1) are
made once per test session and shared with test_report_browser.py: A at 300/s
through `upper -> sleeper (2 ms) -> fail (2 %)` with a warm-up, B at 400/s through a 3 ms sleeper. The checks
read the written HTML: self-contained (uPlot inlined once, no remote script or stylesheet), a few hundred
kilobytes at most, every figure there, values escaped; and the command's usage errors (exit 2 with a message).
"""

from __future__ import annotations

import html
import re
import shutil
import subprocess
from collections.abc import Sequence
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import orjson
import pytest
from load_helpers import run_load_cli
from relay_process import flowrelay_command, run_relay

from flowrelay.cli import demo
from loadtest.outputs import report
from relay.common import web

EXIT_OK, EXIT_USAGE = 0, 2
RUN_DURATION = "2s"
REPORT_FIGURES = ("fig-throughput", "fig-latency", "fig-hops-time", "fig-inflight", "fig-lag", "fig-errors-time",
                  "fig-distribution", "fig-hops", "fig-errors-reason")
COMPARISON_FIGURES = ("fig-cmp-percentiles", "fig-cmp-distribution", "fig-cmp-latency", "fig-cmp-hops",
                      "fig-cmp-throughput")
MAX_PAGE_BYTES = 300_000  # uPlot (51 KB), the page's script and styles, and a short run's rows
UPLOT_BANNER = re.compile(r"/\*! https://github\.com/leeoniya/uPlot \(v(\d+\.\d+\.\d+)\) \*/")


# ---- real runs, made once ------------------------------------------------------------------------------


def make_results(out: Path, executors: Sequence[str], rate: int, *extra: str) -> Path:
    """A results folder from a real run: a relay with ``executors`` and `flowrelay load --out out`."""
    flags = [arg for e in executors for arg in ("-e", e)]
    with run_relay("--log-level", "WARNING", *flags) as relay:
        proc = run_load_cli(relay.url, "--rate", str(rate), "--duration", RUN_DURATION, "--grace", "3s",
                            "--out", str(out), "--quiet", *extra)
    assert proc.returncode in (0, 99), f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return out


_RUNS: dict[str, tuple[Path, Path]] = {}


def results_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Results folders A and B, made on first use and then shared by every test of the session."""
    if "pair" not in _RUNS:
        base = tmp_path_factory.mktemp("runs")
        a = make_results(base / "run-a", ["upper", "sleeper=sleep:2ms", "fail:0.02"], 300, "--warmup", "0.5s",
                         "--threshold", "latency.p99<250ms", "--threshold", "errors.rate<0.001")
        b = make_results(base / "run-b", ["upper", "sleeper=sleep:3ms"], 400, "--threshold", "latency.p99<250ms")
        _RUNS["pair"] = (a, b)
    return _RUNS["pair"]


@pytest.fixture(scope="session")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return results_pair(tmp_path_factory)


def run_report_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*flowrelay_command(), "report", *args], stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=120, check=False)


def copy_results(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.html", "*.png"))
    return dst


# ---- reading the page ------------------------------------------------------------------------------------


class _Page(HTMLParser):
    """Script and stylesheet references, inline scripts and element ids of an HTML page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.srcs: list[str] = []
        self.inline_scripts: list[dict[str, str | None]] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if a.get("id"):
            self.ids.add(str(a["id"]))
        if tag == "script":
            if a.get("src") is not None:
                self.srcs.append(str(a["src"]))
            else:
                self.inline_scripts.append(a)
        if tag == "link" and a.get("href") is not None:
            self.srcs.append(str(a["href"]))
        if tag in ("img", "iframe", "embed", "object", "source") and (a.get("src") or a.get("data")):
            self.srcs.append(str(a.get("src") or a.get("data")))


def parse_page(text: str) -> _Page:
    page = _Page()
    page.feed(text)
    return page


def page_data(text: str) -> dict[str, Any]:
    """The data the page's script draws (script#flowrelay-data)."""
    match = re.search(r'<script id="flowrelay-data" type="application/json">(.*?)</script>', text, re.DOTALL)
    assert match, "the page carries its data in script#flowrelay-data"
    return orjson.loads(match.group(1))


def assert_self_contained(text: str) -> _Page:
    """No remote (or any external) script, stylesheet or media; uPlot inlined exactly once, its release build."""
    page = parse_page(text)
    remote = [s for s in page.srcs if re.match(r"^\s*(https?:)?//", s, re.IGNORECASE)]
    assert not remote, f"remote references: {remote}"
    assert not page.srcs, f"external references (the page must be one file): {page.srcs}"
    assert not re.search(r"<script[^>]+src\s*=", text, re.IGNORECASE)
    assert sum(1 for s in page.inline_scripts if s.get("id") == "uplot-js") == 1
    banners = UPLOT_BANNER.findall(text)
    assert banners == [web.UPLOT_VERSION], f"uPlot should be inlined once, found {banners}"
    assert "plotly" not in text.lower()
    return page


def figure_ids(text: str) -> set[str]:
    """The charts the page draws."""
    return {spec["id"] for spec in page_data(text)["charts"]}


# ---- the results folder -----------------------------------------------------------------------------------


def test_summary_holds_the_full_latency_distribution(runs: tuple[Path, Path]) -> None:
    summary = orjson.loads((runs[0] / "summary.json").read_bytes())
    dist = summary["latency_distribution"]
    for key in ("latency_ms", "service_time_ms"):
        points = dist[key]
        assert len(points) > 20, "the HdrHistogram percentile iterator gives dozens of points"
        percentiles = [p for p, _ in points]
        values = [v for _, v in points]
        assert percentiles == sorted(percentiles) and percentiles[0] == 0.0
        assert values == sorted(values)
        assert points[-1] == [100.0, summary[key]["max"]]
        assert any(99.0 < p < 100.0 for p in percentiles), "the tail is resolved"


# ---- one run's report ------------------------------------------------------------------------------------


def test_report_command_writes_a_self_contained_page_with_every_figure(runs: tuple[Path, Path], tmp_path: Path) -> None:
    results = copy_results(runs[0], tmp_path / "results")
    proc = run_report_cli(str(results))
    assert proc.returncode == EXIT_OK, proc.stderr
    html_path = results / "report.html"
    assert f"report: {html_path}" in proc.stdout
    text = html_path.read_text(encoding="utf-8")
    assert html_path.stat().st_size < MAX_PAGE_BYTES
    page = assert_self_contained(text)
    assert set(REPORT_FIGURES) <= page.ids
    assert figure_ids(text) == set(REPORT_FIGURES)

    summary = orjson.loads((results / "summary.json").read_bytes())
    assert summary["target"] in text
    for section in ("summary", "thresholds", "throughput", "latency", "hops", "errors"):
        assert f'id="{section}"' in text
    # thresholds with their outcome: the latency one holds, the 2 % failing Executor breaks the error one
    assert "latency.p99&lt;250ms" in text and "errors.rate&lt;0.001" in text
    assert "1 of 2 thresholds failed" in text
    assert "✘ FAIL" in text and "✔ pass" in text
    # the per-hop breakdown names every Executor of the chain
    for hop in ("upper", "sleeper", "fail", "gateway (own)", "outside the gateway"):
        assert hop in text, hop
    # the error reason from the summary, in the chart and the table
    reason = next(iter(summary["errors"]))
    assert html.escape(reason) in text
    # axis titles carry their units
    axes = {spec.get(axis) for spec in page_data(text)["charts"] for axis in ("x", "y")}
    for unit in ("requests per second (req/s)", "latency (ms)", "time since start (s)", "time per request (ms)",
                 "errors per second (1/s)", "lag (ms)", "requests (count)"):
        assert unit in axes, unit
    # the rows the time charts draw are the results folder's, every one
    rows = [orjson.loads(line) for line in (results / "timeseries.jsonl").read_bytes().splitlines()]
    assert page_data(text)["rows"] == [rows]


def test_report_to_a_chosen_path_and_the_python_api(runs: tuple[Path, Path], tmp_path: Path) -> None:
    out = tmp_path / "elsewhere" / "run.html"
    proc = run_report_cli(str(runs[1]), "--html", str(out))
    assert proc.returncode == EXIT_OK, proc.stderr
    assert out.is_file() and not (runs[1] / "report.html").exists()
    page = assert_self_contained(out.read_text(encoding="utf-8"))
    # run B has no failures: no reason chart, a note instead, the errors-over-time chart still drawn
    assert "fig-errors-reason" not in page.ids and "fig-errors-time" in page.ids
    assert "No errors and no dropped requests" in out.read_text(encoding="utf-8")

    written = report.write_report(runs[1], tmp_path / "api.html")
    assert written == tmp_path / "api.html"
    assert figure_ids(written.read_text(encoding="utf-8")) == set(REPORT_FIGURES) - {"fig-errors-reason"}


def test_report_escapes_what_the_server_sent(runs: tuple[Path, Path], tmp_path: Path) -> None:
    """Error reasons and hop names come from the target; they must not become markup or script."""
    results = copy_results(runs[0], tmp_path / "results")
    summary = orjson.loads((results / "summary.json").read_bytes())
    evil = "</script><script>alert(1)</script><b>x</b>"
    summary["errors"] = {evil: 3}
    summary["hops"] = {f"{evil}hop" if k == "sleeper" else k: v for k, v in summary["hops"].items()}
    (results / "summary.json").write_bytes(orjson.dumps(summary))
    rows = [orjson.loads(line) for line in (results / "timeseries.jsonl").read_bytes().splitlines()]
    rows[-1]["error_reasons"] = {evil: 1}
    (results / "timeseries.jsonl").write_bytes(b"\n".join(orjson.dumps(r) for r in rows) + b"\n")

    text = report.write_report(results, tmp_path / "r.html").read_text(encoding="utf-8")
    assert evil not in text
    assert "<script>alert(1)" not in text
    assert_self_contained(text)


def test_results_without_a_distribution_still_report(runs: tuple[Path, Path], tmp_path: Path) -> None:
    """A results folder from before the distribution was kept: the percentile plot uses the summary's figures."""
    results = copy_results(runs[1], tmp_path / "old")
    summary = orjson.loads((results / "summary.json").read_bytes())
    del summary["latency_distribution"]
    (results / "summary.json").write_bytes(orjson.dumps(summary))
    text = report.write_report(results, tmp_path / "old.html").read_text(encoding="utf-8")
    assert "fig-distribution" in figure_ids(text)
    assert "percentiles only" in text


def test_a_report_of_rows_from_before_hops_and_lag_were_kept(runs: tuple[Path, Path], tmp_path: Path) -> None:
    """Rows without the per-hop figures and the lag (an older results folder) still make a whole page."""
    results = copy_results(runs[1], tmp_path / "older")
    rows = [orjson.loads(line) for line in (results / "timeseries.jsonl").read_bytes().splitlines()]
    for row in rows:
        for key in ("hops", "lag_p99_ms", "lag_max_ms", "p999_ms"):
            row.pop(key)
    (results / "timeseries.jsonl").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    text = report.write_report(results, tmp_path / "older.html").read_text(encoding="utf-8")
    assert figure_ids(text) == set(REPORT_FIGURES) - {"fig-errors-reason"}


def test_rows_carry_each_hop_and_the_schedulers_lag_per_second(runs: tuple[Path, Path]) -> None:
    """The time series gains per-hop p50/p99 (and mean), p99.9 and the scheduler's lag for each second."""
    rows = [orjson.loads(line) for line in (runs[0] / "timeseries.jsonl").read_bytes().splitlines()]
    measured = [r for r in rows if r["ok"]]
    assert measured
    for row in measured:
        assert set(row["hops"]) >= {"gateway", "upper", "sleeper", "fail", "outside_gateway"}, row["hops"]
        for figures in row["hops"].values():
            assert figures["p50_ms"] <= figures["p99_ms"]
        # the sleeper sleeps 2 ms: its span's median says so, and the gateway's span holds it
        assert 2.0 <= row["hops"]["sleeper"]["p50_ms"] <= row["hops"]["gateway"]["p99_ms"]
        assert row["p99_ms"] <= row["p999_ms"] <= row["max_ms"]
        assert row["lag_p99_ms"] is not None and row["lag_p99_ms"] <= row["lag_max_ms"]


def test_demo_writes_its_report_with_this_module(runs: tuple[Path, Path], tmp_path: Path) -> None:
    results = copy_results(runs[0], tmp_path / "demo")
    path = demo._write_report(results)
    assert path == results / "report.html"
    assert figure_ids(path.read_text(encoding="utf-8")) == set(REPORT_FIGURES)


# ---- comparison -------------------------------------------------------------------------------------------


def test_comparison_of_two_runs(runs: tuple[Path, Path], tmp_path: Path) -> None:
    a, b = runs
    out = tmp_path / "cmp.html"
    proc = run_report_cli(str(a), str(b), "--html", str(out))
    assert proc.returncode == EXIT_OK, proc.stderr
    assert f"comparison: {out}" in proc.stdout
    text = out.read_text(encoding="utf-8")
    assert out.stat().st_size < MAX_PAGE_BYTES
    page = assert_self_contained(text)
    assert set(COMPARISON_FIGURES) <= page.ids
    assert figure_ids(text) == set(COMPARISON_FIGURES)
    assert "A: run-a" in text and "B: run-b" in text
    assert "<th>B/A</th>" in text

    sa = orjson.loads((a / "summary.json").read_bytes())
    sb = orjson.loads((b / "summary.json").read_bytes())
    # the ok rate and the p50 side by side with their ratio
    ratio = sb["rate"]["ok_rps"] / sa["rate"]["ok_rps"]
    assert f"×{ratio:.3g}" in text
    p50_ratio = sb["latency_ms"]["p50"] / sa["latency_ms"]["p50"]
    assert f"×{p50_ratio:.3g}" in text
    for hop in ("sleeper", "gateway (all)", "outside the gateway", "fail"):
        assert hop in text, hop
    # B has no `fail` Executor: its hop p50 is shown as missing, not as zero
    assert re.search(r"<td>fail</td><td>[0-9.]+</td><td>–</td><td>–</td>", text)
    # error rate: A 2 %, B none
    assert "error rate" in text


def test_comparison_default_path_and_api(runs: tuple[Path, Path], tmp_path: Path) -> None:
    a = copy_results(runs[0], tmp_path / "same" / "results")
    b = copy_results(runs[1], tmp_path / "other" / "results")
    proc = run_report_cli(str(a), str(b))
    assert proc.returncode == EXIT_OK, proc.stderr
    text = (b / "comparison.html").read_text(encoding="utf-8")
    assert "A: same/results" in text and "B: other/results" in text, "folders of the same name are told apart"
    with pytest.raises(ValueError, match="two results folders"):
        report.write_comparison([a], tmp_path / "x.html")
    written = report.write_comparison([a, b], tmp_path / "y.html")
    assert figure_ids(written.read_text(encoding="utf-8")) == set(COMPARISON_FIGURES)


# ---- usage errors ------------------------------------------------------------------------------------------


def _bad_folders(base: Path, good: Path) -> dict[str, tuple[Path, str]]:
    cases: dict[str, tuple[Path, str]] = {}
    cases["missing"] = (base / "nowhere", "no such folder")
    empty = base / "empty"
    empty.mkdir()
    cases["no summary"] = (empty, "no summary.json")
    not_json = copy_results(good, base / "not-json")
    (not_json / "summary.json").write_text("{ this is not json")
    cases["summary not JSON"] = (not_json, "not valid JSON")
    a_list = copy_results(good, base / "a-list")
    (a_list / "summary.json").write_text("[1, 2]")
    cases["summary not an object"] = (a_list, "expected a JSON object")
    no_latency = copy_results(good, base / "no-latency")
    summary = orjson.loads((no_latency / "summary.json").read_bytes())
    del summary["latency_ms"]
    (no_latency / "summary.json").write_bytes(orjson.dumps(summary))
    cases["summary without latency"] = (no_latency, "'latency_ms' should be an object, is missing")
    no_series = copy_results(good, base / "no-series")
    (no_series / "timeseries.jsonl").unlink()
    cases["no time series"] = (no_series, "no timeseries.jsonl")
    bad_series = copy_results(good, base / "bad-series")
    with (bad_series / "timeseries.jsonl").open("a") as fh:
        fh.write("{truncated\n")
    cases["time series line not JSON"] = (bad_series, "timeseries.jsonl, line")
    return cases


def test_missing_or_malformed_results_exit_2_with_a_message(runs: tuple[Path, Path], tmp_path: Path) -> None:
    for name, (folder, message) in _bad_folders(tmp_path, runs[1]).items():
        proc = run_report_cli(str(folder))
        assert proc.returncode == EXIT_USAGE, (name, proc.stdout, proc.stderr)
        assert proc.stderr.startswith("flowrelay report: "), (name, proc.stderr)
        assert message in proc.stderr, (name, proc.stderr)
        assert "Traceback" not in proc.stderr, name
        assert not (folder / "report.html").exists()
    # in a comparison, the bad folder is named
    proc = run_report_cli(str(runs[0]), str(tmp_path / "nowhere"))
    assert proc.returncode == EXIT_USAGE and "nowhere: no such folder" in proc.stderr


def test_three_folders_or_none_is_a_usage_error(runs: tuple[Path, Path]) -> None:
    proc = run_report_cli(str(runs[0]), str(runs[1]), str(runs[0]))
    assert proc.returncode == EXIT_USAGE and "one results folder" in proc.stderr
    proc = run_report_cli()
    assert proc.returncode == EXIT_USAGE and "DIR" in proc.stderr
