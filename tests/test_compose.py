"""The Compose setup and the Grafana dashboards, checked without Docker.

* docker-compose.yml is valid against the Compose specification's JSON schema. The schema comes from
  PyPI, not from the network at test time: `scripts/fetch_compose_schema.sh` extracts it from the
  docker-compose 1.29.2 wheel into `${FLOWRELAY_CACHE:-~/.cache/flowrelay}/compose-spec/`. Without it
  (or without `jsonschema`) the schema test is skipped, except under CI, where it fails.
* Every path the compose file builds from or bind-mounts exists in the repository; the Dockerfile's
  COPY sources exist and are not excluded by .dockerignore, and the package builds from that context.
* The pieces agree: the relay's port and the load engine's metrics port are the ones Prometheus scrapes,
  Grafana's datasource points at the Prometheus service, the dashboard provider reads the folder the
  dashboards are mounted at.
* The dashboards are valid JSON, with unique panel ids, every panel (and query) on the `${datasource}`
  template variable, and every metric name in a PromQL expression documented in dashboards/METRICS.md
  (and every documented metric shown somewhere).
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
DASH = ROOT / "dashboards"
METRICS_MD = DASH / "METRICS.md"
PROMETHEUS_YML = DASH / "prometheus.yml"
DATASOURCES_YML = DASH / "provisioning" / "datasources" / "prometheus.yml"
PROVIDERS_YML = DASH / "provisioning" / "dashboards" / "flowrelay.yml"
DASHBOARDS = sorted((DASH / "grafana").glob("*.json"))
EXPECTED_DASHBOARDS = {"flowrelay-load.json", "flowrelay-relay.json"}
DATASOURCE_REF = {"type": "prometheus", "uid": "${datasource}"}
FETCH_SCRIPT = "scripts/fetch_compose_schema.sh"

METRIC_TOKEN = re.compile(r"\bflowrelay_[a-z0-9_]+")
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def _cache_dir() -> Path:
    env = os.environ.get("FLOWRELAY_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "flowrelay"


def _missing(reason: str) -> None:
    """Skip locally; under CI a missing prerequisite is a failure."""
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = _yaml(COMPOSE)
    assert isinstance(data, dict) and isinstance(data.get("services"), dict)
    return data


def _flag(command: list[str], flag: str) -> str:
    assert flag in command, f"{flag} missing from {command}"
    return command[command.index(flag) + 1]


# ---- the Compose file -------------------------------------------------------------------------------


def test_compose_is_valid_against_the_compose_spec(compose: dict[str, Any]) -> None:
    try:
        import jsonschema
    except ImportError:
        _missing("jsonschema is not installed (pip install jsonschema)")
    schema_path = _cache_dir() / "compose-spec" / "compose_spec.json"
    if not schema_path.is_file():
        _missing(f"no Compose schema at {schema_path}: run {FETCH_SCRIPT}")
    schema = json.loads(schema_path.read_text())
    # The file declares draft 2019-09; name the validator rather than guessing from `$schema`.
    validator_cls = jsonschema.Draft201909Validator
    validator_cls.check_schema(schema)
    errors = sorted(validator_cls(schema).iter_errors(compose), key=lambda e: list(e.absolute_path))
    assert not errors, "docker-compose.yml is not valid Compose:\n" + "\n".join(
        f"  {'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors
    )


def test_the_schema_check_catches_a_mistake(compose: dict[str, Any]) -> None:
    """A sanity check of the check itself: an unknown service key is rejected."""
    try:
        import jsonschema
    except ImportError:
        _missing("jsonschema is not installed (pip install jsonschema)")
    schema_path = _cache_dir() / "compose-spec" / "compose_spec.json"
    if not schema_path.is_file():
        _missing(f"no Compose schema at {schema_path}: run {FETCH_SCRIPT}")
    schema = json.loads(schema_path.read_text())
    broken = json.loads(json.dumps(compose))
    broken["services"]["relay"]["not_a_compose_key"] = True
    assert list(jsonschema.Draft201909Validator(schema).iter_errors(broken))


def test_services_are_the_expected_ones(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {"relay", "load", "cluster-0", "cluster-worker", "prometheus", "grafana"}


def _bind_mounts(service: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(source, target) of each bind mount: short syntax with a path source, or long syntax type bind."""
    for vol in service.get("volumes", []):
        if isinstance(vol, str):
            source, _, rest = vol.partition(":")
            target = rest.split(":", 1)[0]
            if source.startswith((".", "/", "~")):
                yield source, target
        elif vol.get("type") == "bind":
            yield vol["source"], vol["target"]


def test_every_build_context_and_mounted_path_exists(compose: dict[str, Any]) -> None:
    base = COMPOSE.parent
    seen = 0
    for name, service in compose["services"].items():
        build = service.get("build")
        if build is not None:
            context = base / (build if isinstance(build, str) else build.get("context", "."))
            assert context.is_dir(), f"{name}: build context {context} does not exist"
            dockerfile = context / (build.get("dockerfile", "Dockerfile") if isinstance(build, dict) else "Dockerfile")
            assert dockerfile.is_file(), f"{name}: {dockerfile} does not exist"
            seen += 1
        for source, _target in _bind_mounts(service):
            assert not source.startswith(("/", "~")), f"{name}: {source} is outside the repository"
            path = (base / source).resolve()
            assert path.is_relative_to(ROOT), f"{name}: {source} is outside the repository"
            assert path.exists(), f"{name}: mounted {source} does not exist"
            seen += 1
        for vol in service.get("volumes", []):
            if isinstance(vol, str) and not vol.startswith((".", "/", "~")):
                assert vol.split(":", 1)[0] in (compose.get("volumes") or {}), f"{name}: undeclared volume {vol}"
    assert seen >= 6


def test_published_ports_are_on_loopback(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            assert isinstance(port, str) and port.startswith("127.0.0.1:"), f"{name}: {port} is not loopback-only"


def test_prometheus_scrapes_what_the_services_serve(compose: dict[str, Any]) -> None:
    services = compose["services"]
    prom = _yaml(PROMETHEUS_YML)
    jobs = {j["job_name"]: j for j in prom["scrape_configs"]}
    assert set(jobs) >= {"relay", "load"}
    assert prom["global"]["scrape_interval"] in ("1s", "2s")
    for job in jobs.values():
        assert job.get("metrics_path", "/metrics") == "/metrics"

    relay_cmd = services["relay"]["command"]
    assert relay_cmd[0] == "serve"
    relay_port = _flag(relay_cmd, "--port")
    # Inside its container the relay must listen beyond loopback for Prometheus and the load engine.
    assert _flag(relay_cmd, "--host") == "0.0.0.0"
    assert jobs["relay"]["static_configs"][0]["targets"] == [f"relay:{relay_port}"]
    assert services["relay"]["ports"] == [f"127.0.0.1:{relay_port}:{relay_port}"]

    load_cmd = [str(x) for x in services["load"]["command"]]
    assert load_cmd[0] == "load"
    assert load_cmd[1] == f"ws://relay:{relay_port}"
    metrics_port = int(_flag(load_cmd, "--metrics-port"))
    assert _flag(load_cmd, "--metrics-host") == "0.0.0.0"  # scraped from the Prometheus container
    sd = jobs["load"]["dns_sd_configs"][0]
    assert sd["names"] == ["load", "cluster-0", "cluster-worker"] and sd["type"] == "A" and sd["port"] == metrics_port
    assert str(metrics_port) in [str(p) for p in services["load"].get("expose", [])]
    assert services["load"]["depends_on"]["relay"]["condition"] == "service_healthy"
    assert "load" in services["load"].get("profiles", [])

    mounts = dict(_bind_mounts(services["prometheus"]))
    assert mounts.get("./dashboards/prometheus.yml") == "/etc/prometheus/prometheus.yml"
    assert "--config.file=/etc/prometheus/prometheus.yml" in services["prometheus"]["command"]


def test_the_cluster_profile_is_one_run_over_worker_0_and_scaled_workers(compose: dict[str, Any]) -> None:
    """cluster-0 and cluster-worker run the same command but for `--worker-index 0`; the workers reach the
    coordinator by worker 0's service name; every worker is scraped on the load job's port."""
    from flowrelay.cli.cluster_options import cluster_options
    from flowrelay.cli.main import build_parser

    services = compose["services"]
    head = [str(x) for x in services["cluster-0"]["command"]]
    worker = [str(x) for x in services["cluster-worker"]["command"]]
    assert head[-2:] == ["--worker-index", "0"] and head[:-2] == worker
    for name in ("cluster-0", "cluster-worker"):
        assert services[name]["profiles"] == ["cluster"]
    parser, _ = build_parser()
    # Compose substitutes ${VAR:-default}; parse with the defaults.
    expanded = [re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", a) for a in worker]
    opts = cluster_options(parser.parse_args(expanded))
    assert opts is not None and opts.index is None  # the coordinator assigns it
    assert opts.host == "cluster-0" and str(opts.port) in [str(p) for p in services["cluster-0"]["expose"]]
    assert _flag(expanded, "--metrics-host") == "0.0.0.0"
    metrics_port = _flag(expanded, "--metrics-port")
    assert metrics_port in [str(p) for p in services["cluster-worker"]["expose"]]
    prom = _yaml(PROMETHEUS_YML)
    (load_job,) = [j for j in prom["scrape_configs"] if j["job_name"] == "load"]
    assert {"cluster-0", "cluster-worker"} <= set(load_job["dns_sd_configs"][0]["names"])
    assert str(load_job["dns_sd_configs"][0]["port"]) == metrics_port
    assert services["cluster-worker"]["depends_on"]["cluster-0"]["condition"] == "service_started"
    assert services["cluster-0"]["depends_on"]["relay"]["condition"] == "service_healthy"


def test_prometheus_config_passes_promtool() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        _missing("promtool not found (Debian's prometheus package; scripts/setup_system.sh installs it)")
    proc = subprocess.run(
        [promtool, "check", "config", str(PROMETHEUS_YML)], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_grafana_is_provisioned_with_the_datasource_and_dashboards(compose: dict[str, Any]) -> None:
    grafana = compose["services"]["grafana"]
    mounts = dict(_bind_mounts(grafana))
    env = grafana.get("environment", {})
    anonymous = str(env.get("GF_AUTH_ANONYMOUS_ENABLED", "")).lower() == "true"
    assert anonymous or env.get("GF_SECURITY_ADMIN_PASSWORD") == "admin"
    assert any(p.endswith(":3000") for p in grafana["ports"])

    ds = _yaml(DATASOURCES_YML)
    (prom_ds,) = [d for d in ds["datasources"] if d["type"] == "prometheus"]
    assert prom_ds["uid"] and prom_ds["isDefault"] is True
    prom_port = compose["services"]["prometheus"]["ports"][0].rsplit(":", 1)[1]
    assert prom_ds["url"] == f"http://prometheus:{prom_port}"
    assert mounts["./dashboards/provisioning/datasources"] == "/etc/grafana/provisioning/datasources"

    providers = _yaml(PROVIDERS_YML)["providers"]
    assert mounts["./dashboards/provisioning/dashboards"] == "/etc/grafana/provisioning/dashboards"
    (provider,) = providers
    assert provider["type"] == "file"
    assert provider["options"]["path"] == mounts["./dashboards/grafana"]
    home = env.get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
    if home:
        assert home.startswith(provider["options"]["path"] + "/")
        assert (DASH / "grafana" / Path(home).name).is_file()


# ---- the image --------------------------------------------------------------------------------------


def _dockerignore_patterns() -> list[tuple[bool, str]]:
    rules = []
    for line in DOCKERIGNORE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        rules.append((negated, line.lstrip("!").strip("/")))
    return rules


def _pattern_matches(pattern: str, path: str) -> bool:
    """Docker's rule, closely enough: the pattern matches the path or one of its parents; `**` spans folders."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    if pattern.startswith("**/"):
        tail = pattern[3:]
        return any(fnmatch.fnmatchcase(p, tail) for p in parts) or any(
            fnmatch.fnmatchcase(c, pattern) for c in candidates
        )
    return any(fnmatch.fnmatchcase(c, pattern) for c in candidates)


def _ignored(path: str, rules: list[tuple[bool, str]]) -> bool:
    ignored = False
    for negated, pattern in rules:
        if _pattern_matches(pattern, path):
            ignored = not negated
    return ignored


def _build_context_files() -> list[str]:
    rules = _dockerignore_patterns()
    files = []
    for path in ROOT.rglob("*"):
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith((".git/", ".venv/")) or not path.is_file():
            continue
        if not _ignored(rel, rules):
            files.append(rel)
    return sorted(files)


def test_dockerfile_shape() -> None:
    text = DOCKERFILE.read_text()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    assert lines[0] == "FROM python:3.11-slim"
    users = [ln.split(None, 1)[1] for ln in lines if ln.startswith("USER ")]
    assert users and users[-1] not in ("root", "0"), "the image must run as a non-root user"
    assert 'ENTRYPOINT ["flowrelay"]' in lines
    assert any(ln.startswith("RUN pip install ") for ln in lines)


def test_dockerfile_copies_exist_and_are_in_the_build_context() -> None:
    rules = _dockerignore_patterns()
    context = set(_build_context_files())
    copies = [ln.split()[1:-1] for ln in DOCKERFILE.read_text().splitlines() if ln.startswith("COPY ")]
    assert copies
    for sources in copies:
        for src in sources:
            assert not src.startswith("--"), "COPY --from/--chown is not expected here"
            path = ROOT / src
            assert path.exists(), f"COPY source {src} does not exist"
            assert not _ignored(src, rules), f"COPY source {src} is excluded by .dockerignore"
            if path.is_dir():
                tracked = [p for p in path.rglob("*.py") if "__pycache__" not in p.parts]
                assert tracked and all(p.relative_to(ROOT).as_posix() in context for p in tracked)
    # What must stay out of the image's context.
    assert not any(f.startswith(("tests/", "results/", "bench/", ".hypothesis/")) for f in context)
    assert not any("__pycache__" in f for f in context)


def test_the_package_builds_from_the_docker_context(tmp_path: Path) -> None:
    """`pip install .` in the image sees only the build context: a wheel must build from it alone."""
    try:
        import setuptools  # noqa: F401
    except ImportError:
        _missing("setuptools is not installed in this environment")
    ctx = tmp_path / "context"
    for rel in _build_context_files():
        dest = ctx / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, dest)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path / "whl"),
            str(ctx),
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (wheel,) = (tmp_path / "whl").glob("flowrelay-*.whl")
    import zipfile

    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
    assert {"flowrelay/cli/main.py", "relay/server.py", "loadtest/engine.py", "relay/wire/proto/jina_pb2.py"} <= names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    with zipfile.ZipFile(wheel) as zf:
        assert "flowrelay = flowrelay.cli.main:main" in zf.read(entry_points).decode()


# ---- the dashboards ---------------------------------------------------------------------------------


def documented_metrics() -> dict[str, str]:
    """Metric name -> type, from the tables of dashboards/METRICS.md."""
    metrics: dict[str, str] = {}
    for line in METRICS_MD.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 2:
            continue
        for name in METRIC_TOKEN.findall(cells[0]):
            metrics[name] = cells[1]
    return metrics


def all_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])  # a collapsed row keeps its panels inside


def panel_exprs(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(panel title, PromQL) of every query of every panel."""
    for panel in all_panels(dashboard):
        for target in panel.get("targets", []):
            yield panel.get("title", "?"), target["expr"]


def variable_queries(dashboard: dict[str, Any]) -> Iterator[str]:
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            q = var["query"]
            yield q["query"] if isinstance(q, dict) else q


def metric_names(expr: str, documented: dict[str, str]) -> set[str]:
    """The documented base names an expression uses; a histogram's _bucket/_sum/_count map to its base."""
    names = set()
    for token in METRIC_TOKEN.findall(expr):
        if token not in documented:
            for suffix in HISTOGRAM_SUFFIXES:
                base = token.removesuffix(suffix)
                if token.endswith(suffix) and documented.get(base) == "histogram":
                    token = base
                    break
        names.add(token)
    return names


def load_dashboard(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def test_the_expected_dashboards_exist() -> None:
    assert {p.name for p in DASHBOARDS} == EXPECTED_DASHBOARDS


def test_metrics_md_parses() -> None:
    documented = documented_metrics()
    assert len(documented) >= 20
    assert documented["flowrelay_load_latency_seconds"] == "histogram"
    assert documented["flowrelay_relay_requests_total"] == "counter"


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_structure(path: Path) -> None:
    dash = load_dashboard(path)
    assert dash["uid"] and dash["title"] and dash["schemaVersion"] >= 36
    assert dash.get("id") is None, "a provisioned dashboard carries no database id"

    variables = {v["name"]: v for v in dash["templating"]["list"]}
    ds = variables["datasource"]
    assert ds["type"] == "datasource" and ds["query"] == "prometheus"
    for var in variables.values():
        if var["type"] == "query":
            assert var["datasource"] == DATASOURCE_REF

    ids = [p["id"] for p in all_panels(dash)]
    assert len(ids) == len(set(ids)), f"duplicate panel ids in {path.name}"

    boxes = []
    for panel in all_panels(dash):
        title = panel.get("title", "?")
        assert panel.get("datasource") == DATASOURCE_REF, f"{path.name}: panel {title!r} is not on ${{datasource}}"
        for target in panel.get("targets", []):
            assert target.get("datasource") == DATASOURCE_REF, f"{path.name}: a query of {title!r} is not"
            assert target["expr"].strip()
        if panel["type"] != "row":
            assert panel.get("targets"), f"{path.name}: panel {title!r} has no query"
        g = panel["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24, f"{path.name}: panel {title!r} is wider than the grid"
        boxes.append((title, g))
    for i, (t1, a) in enumerate(boxes):
        for t2, b in boxes[i + 1 :]:
            overlap = (
                a["x"] < b["x"] + b["w"]
                and b["x"] < a["x"] + a["w"]
                and a["y"] < b["y"] + b["h"]
                and (b["y"] < a["y"] + a["h"])
            )
            assert not overlap, f"{path.name}: panels {t1!r} and {t2!r} overlap"


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_queries_use_documented_metrics(path: Path) -> None:
    documented = documented_metrics()
    dash = load_dashboard(path)
    exprs = [expr for _title, expr in panel_exprs(dash)] + list(variable_queries(dash))
    assert exprs
    for expr in exprs:
        assert expr.count("(") == expr.count(")"), f"unbalanced parentheses: {expr}"
        names = metric_names(expr, documented)
        assert names, f"no flowrelay metric in {expr}"
        unknown = names - set(documented)
        assert not unknown, f"{path.name}: {sorted(unknown)} not in METRICS.md (in {expr})"
        if "histogram_quantile" in expr:
            assert "_bucket" in expr and "sum by (le" in expr and "[$__rate_interval]" in expr, expr


def test_every_documented_metric_is_on_a_dashboard() -> None:
    documented = documented_metrics()
    used: set[str] = set()
    for path in DASHBOARDS:
        for _title, expr in panel_exprs(load_dashboard(path)):
            used |= metric_names(expr, documented)
    assert set(documented) - used == set()


def test_load_dashboard_sums_over_workers() -> None:
    """With --procs N every series carries a `worker` label: panels aggregate with sum (by le for quantiles)."""
    dash = load_dashboard(DASH / "grafana" / "flowrelay-load.json")
    for title, expr in panel_exprs(dash):
        assert "sum(" in expr or "sum by (" in expr, f"{title!r} does not aggregate over workers: {expr}"
        by_clauses = re.findall(r"sum by \(([^)]*)\)", expr)
        for clause in by_clauses:
            assert "worker" not in clause or title.endswith("by worker"), f"{title!r} splits by worker: {expr}"
