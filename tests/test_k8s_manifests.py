"""deploy/k8s/, checked without a cluster: every manifest is valid against Kubernetes' own OpenAPI schemas (the
`kubernetes-validate` package ships them: no network) for several 1.3x releases, strictly (no unknown
fields), and the pieces agree with each other and with flowrelay's own command line:

* the Jobs are Indexed, completions = parallelism = --workers, backoffLimitPerIndex 0, restartPolicy Never;
* the headless Service is the pods' subdomain and selects them, so `--coordinator <job>-0.<service>:PORT`
  names pod 0, on a port the Service and the container both declare;
* the container's arguments parse with `flowrelay`'s own parser, the scenario in the ConfigMap is a valid
  `flowrelay load` scenario at the path it is mounted at, and every path written to is on a volume;
* resources are requested, volumes are declared and claimed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from flowrelay.cli import load as load_cli
from flowrelay.cli.cluster_options import cluster_options
from flowrelay.cli.main import build_parser

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
MANIFESTS = sorted(K8S.glob("*.yaml"))
# The oldest release with backoffLimitPerIndex on by default (beta in 1.29, GA in 1.33) to the newest shipped.
VERSIONS = ("1.30.0", "1.33.0", "1.35.0")

kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate")


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def all_documents() -> dict[tuple[str, str], dict[str, Any]]:
    by_kind: dict[tuple[str, str], dict[str, Any]] = {}
    for path in MANIFESTS:
        for doc in documents(path):
            key = (doc["kind"], doc["metadata"]["name"])
            assert key not in by_kind, f"{key} defined twice"
            by_kind[key] = doc
    return by_kind


def test_the_expected_manifests_exist() -> None:
    kinds = set(all_documents())
    assert {("Job", "flowrelay-load"), ("Service", "flowrelay-load"), ("ConfigMap", "flowrelay-load-scenario"),
            ("Job", "flowrelay-ingest"), ("Service", "flowrelay-ingest"),
            ("PersistentVolumeClaim", "flowrelay-results"), ("PersistentVolumeClaim", "flowrelay-data")} <= kinds


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifests_are_valid_against_the_kubernetes_schemas(path: Path, version: str) -> None:
    for doc in documents(path):
        kubernetes_validate.validate(doc, version, strict=True)


def test_the_validation_catches_a_mistake() -> None:
    job = all_documents()[("Job", "flowrelay-load")]
    broken = yaml.safe_load(yaml.safe_dump(job))
    broken["spec"]["completionMode"] = 3  # a string field
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, VERSIONS[0], strict=True)
    broken = yaml.safe_load(yaml.safe_dump(job))
    broken["spec"]["template"]["spec"]["containers"][0]["argz"] = []  # unknown field: strict rejects it
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, VERSIONS[0], strict=True)


def _container(job: dict[str, Any]) -> dict[str, Any]:
    (container,) = job["spec"]["template"]["spec"]["containers"]
    return container


def _parse(args: list[str]) -> Any:
    parser, _verbs = build_parser()
    return parser.parse_args(args)


@pytest.mark.parametrize("job_name", ["flowrelay-load", "flowrelay-ingest"])
def test_the_job_service_and_command_agree(job_name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    docs = all_documents()
    job = docs[("Job", job_name)]
    spec = job["spec"]
    pod = spec["template"]["spec"]
    container = _container(job)
    args = _parse([str(a) for a in container["args"]])
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "2")  # as the Job controller sets it
    opts = cluster_options(args)
    assert opts is not None and opts.index == 2

    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] == spec["parallelism"] == opts.workers >= 2
    assert spec["backoffLimitPerIndex"] == 0  # a replaced pod would double its share of the load
    assert pod["restartPolicy"] == "Never"  # required by backoffLimitPerIndex, and a restart is a replacement
    assert "maxFailedIndexes" not in spec  # the Job must not kill worker 0 when another worker fails

    service = docs[("Service", pod["subdomain"])]
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["publishNotReadyAddresses"] is True
    assert service["spec"]["selector"] == {"job-name": job_name}
    assert opts.host == f"{job_name}-0.{pod['subdomain']}"  # pod 0's stable name
    service_ports = {p["port"]: p["targetPort"] for p in service["spec"]["ports"]}
    container_ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert container_ports[service_ports[opts.port]] == opts.port

    requests = container["resources"]["requests"]
    assert requests["cpu"] and requests["memory"]
    assert container["resources"]["limits"]["memory"]
    assert container["image"] and container["imagePullPolicy"] in ("IfNotPresent", "Always")
    assert pod["securityContext"]["runAsNonRoot"] is True


def _mounts(job: dict[str, Any]) -> dict[str, dict[str, Any]]:
    volumes = {v["name"]: v for v in job["spec"]["template"]["spec"]["volumes"]}
    return {m["mountPath"]: volumes[m["name"]] for m in _container(job)["volumeMounts"]}


def _on_volume(path: str, mounts: dict[str, dict[str, Any]], claims: set[str]) -> bool:
    for mount, volume in mounts.items():
        if path.startswith(mount.rstrip("/") + "/"):
            claim = volume.get("persistentVolumeClaim", {}).get("claimName")
            return claim in claims
    return False


def test_the_load_scenario_is_mounted_and_valid(tmp_path: Path) -> None:
    docs = all_documents()
    job = docs[("Job", "flowrelay-load")]
    args = _parse([str(a) for a in _container(job)["args"]])
    mounts = _mounts(job)
    scenario_dir = str(args.scenario.parent)
    volume = mounts[scenario_dir]
    config_map = docs[("ConfigMap", volume["configMap"]["name"])]
    text = config_map["data"][args.scenario.name]
    local = tmp_path / args.scenario.name
    local.write_text(text)
    args.scenario = local
    cfg, exprs, out, _quiet = load_cli.config_from_args(args)
    assert cfg.stages and cfg.transport == "websocket" and exprs
    claims = {name for kind, name in docs if kind == "PersistentVolumeClaim"}
    assert out is not None and _on_volume(str(out), mounts, claims), "the results must land on a claimed volume"
    assert args.metrics_host == "0.0.0.0" and args.metrics_port  # scraped from outside the pod


def test_the_ingest_paths_are_on_the_shared_volume() -> None:
    docs = all_documents()
    job = docs[("Job", "flowrelay-ingest")]
    args = _parse([str(a) for a in _container(job)["args"]])
    mounts = _mounts(job)
    claims = {name for kind, name in docs if kind == "PersistentVolumeClaim"}
    for path in (args.input, str(args.checkpoint), str(args.dead_letter), str(args.summary_json)):
        assert _on_volume(path, mounts, claims), f"{path} is not on a shared volume"


def test_the_results_reader_mounts_the_claims() -> None:
    docs = all_documents()
    pod = docs[("Pod", "flowrelay-results-reader")]
    claims = {v["persistentVolumeClaim"]["claimName"] for v in pod["spec"]["volumes"]}
    assert claims == {name for kind, name in docs if kind == "PersistentVolumeClaim"}
