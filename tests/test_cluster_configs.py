"""The shipped cluster configs parse and pass the offline checks; broken variants of them do not."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from cluster import validate as v

ROOT = Path(__file__).resolve().parents[1]
LAUNCHER = [ROOT / "cluster" / "aws.yaml", ROOT / "cluster" / "gcp.yaml"]
KUBERAY = sorted((ROOT / "cluster" / "kuberay").glob("*.yaml"))


def _one(path: Path) -> dict:
    (doc,) = v.load_documents(path)
    return doc


def _kind(path: Path, kind: str) -> dict:
    return next(d for d in v.load_documents(path) if d.get("kind") == kind)


@pytest.mark.parametrize("path", LAUNCHER + KUBERAY, ids=lambda p: p.name)
def test_shipped_config_has_no_problems(path: Path):
    assert v.check_file(path) == []


def test_all_kuberay_kinds_are_shipped():
    kinds = {d["kind"] for p in KUBERAY for d in v.load_documents(p)}
    assert kinds == {"RayCluster", "RayJob", "PersistentVolumeClaim"}


@pytest.mark.parametrize("path", LAUNCHER, ids=lambda p: p.name)
def test_launcher_layout(path: Path):
    cfg = _one(path)
    types = cfg["available_node_types"]
    head = types[cfg["head_node_type"]]
    assert head["resources"]["CPU"] == 0
    ptype = cfg["provider"]["type"]
    gpu = {n: t for n, t in types.items() if n != cfg["head_node_type"] and v._launcher_gpus(ptype, t)}
    assert len(gpu) >= 1 and all(t["max_workers"] > t.get("min_workers", 0) for t in gpu.values())
    assert any("pip install" in c and "~/fersearch" in c for c in cfg["setup_commands"])


LAUNCHER_BREAKAGES = {
    "typo in a node type key (Ray's schema)": lambda c: c["available_node_types"][_worker(c)].update(
        {"min_worker": 1}
    ),
    "head type not among node types": lambda c: c.update(head_node_type="nope"),
    "no GPU worker": lambda c: [
        c["available_node_types"].pop(n)
        for n in list(c["available_node_types"])
        if n != c["head_node_type"] and v._launcher_gpus(c["provider"]["type"], c["available_node_types"][n])
    ],
    "image of another Ray": lambda c: c["docker"].update(worker_image="rayproject/ray:2.9.0-py311-gpu"),
    "project not installed": lambda c: c.update(setup_commands=["echo hi"]),
    "no shared storage": lambda c: c.update(initialization_commands=[]),
    "min above max": lambda c: c["available_node_types"][_worker(c)].update(min_workers=9, max_workers=1),
    "resources not integers (Ray's schema)": lambda c: c["available_node_types"][_worker(c)].update(
        resources={"GPU": 0.5}
    ),
}


def _worker(cfg: dict) -> str:
    return next(n for n in cfg["available_node_types"] if n != cfg["head_node_type"])


@pytest.mark.parametrize("path", LAUNCHER, ids=lambda p: p.name)
@pytest.mark.parametrize("breakage", LAUNCHER_BREAKAGES, ids=str)
def test_launcher_breakage_is_caught(path: Path, breakage: str):
    cfg = copy.deepcopy(_one(path))
    LAUNCHER_BREAKAGES[breakage](cfg)
    assert v.check_launcher(cfg), breakage


def _gpu_group(spec: dict) -> dict:
    return next(g for g in spec["workerGroupSpecs"] if g["groupName"] == "gpu")


KUBERAY_BREAKAGES = {
    "misspelt RayJob field": lambda j: j["spec"].update(runtimeEnvYaml=j["spec"].pop("runtimeEnvYAML")),
    "misspelt worker group field": lambda j: _gpu_group(j["spec"]["rayClusterSpec"]).update(
        maxReplica=_gpu_group(j["spec"]["rayClusterSpec"]).pop("maxReplicas")
    ),
    "rayStartParams value not a string": lambda j: j["spec"]["rayClusterSpec"]["headGroupSpec"][
        "rayStartParams"
    ].update({"num-cpus": 0}),
    "GPU group without nvidia.com/gpu": lambda j: [
        c["resources"][k].pop("nvidia.com/gpu")
        for c in _gpu_group(j["spec"]["rayClusterSpec"])["template"]["spec"]["containers"]
        for k in ("limits", "requests")
    ],
    "fractional GPU limit": lambda j: _gpu_group(j["spec"]["rayClusterSpec"])["template"]["spec"][
        "containers"
    ][0]["resources"]["limits"].update({"nvidia.com/gpu": 0.5}),
    "rayVersion drift": lambda j: j["spec"]["rayClusterSpec"].update(rayVersion="2.9.0"),
    "replicas above max": lambda j: _gpu_group(j["spec"]["rayClusterSpec"]).update(replicas=99),
    "mount without volume": lambda j: _gpu_group(j["spec"]["rayClusterSpec"])["template"]["spec"].update(
        volumes=[]
    ),
    "pip pin drift": lambda j: j["spec"].update(
        runtimeEnvYAML=j["spec"]["runtimeEnvYAML"].replace("torch==2.13.0", "torch==2.1.0")
    ),
    "local working_dir": lambda j: j["spec"].update(
        runtimeEnvYAML=yaml.safe_dump({**yaml.safe_load(j["spec"]["runtimeEnvYAML"]), "working_dir": "."})
    ),
    "entrypoint spec missing": lambda j: j["spec"].update(entrypoint="python -m cluster.job nope.yaml"),
    "unknown submissionMode": lambda j: j["spec"].update(submissionMode="SSHMode"),
    "bad resources JSON": lambda j: _gpu_group(j["spec"]["rayClusterSpec"])["rayStartParams"].update(
        resources='"{fer_gpu_node: 1}"'
    ),
}


@pytest.mark.parametrize("breakage", KUBERAY_BREAKAGES, ids=str)
def test_kuberay_breakage_is_caught(breakage: str):
    job = copy.deepcopy(_kind(ROOT / "cluster" / "kuberay" / "rayjob.yaml", "RayJob"))
    assert v.check_manifest_docs([job]) == []
    KUBERAY_BREAKAGES[breakage](job)
    assert v.check_manifest_docs([job]), breakage


def test_pvc_must_be_shared():
    pvc = copy.deepcopy(_kind(ROOT / "cluster" / "kuberay" / "storage.yaml", "PersistentVolumeClaim"))
    pvc["spec"]["accessModes"] = ["ReadWriteOnce"]
    assert v.check_manifest_docs([pvc])


def test_raycluster_and_rayjob_clusters_agree():
    """The long-lived cluster and the RayJob's ephemeral one use the same images and start parameters."""
    rc = _kind(ROOT / "cluster" / "kuberay" / "raycluster.yaml", "RayCluster")["spec"]
    rj = _kind(ROOT / "cluster" / "kuberay" / "rayjob.yaml", "RayJob")["spec"]["rayClusterSpec"]

    def shape(spec: dict) -> dict:
        groups = {"head": spec["headGroupSpec"], **{g["groupName"]: g for g in spec["workerGroupSpecs"]}}
        return {
            name: (g["template"]["spec"]["containers"][0]["image"], g["rayStartParams"])
            for name, g in groups.items()
            if name in ("head", "gpu")
        }

    assert shape(rc) == shape(rj)


def test_rayjob_runtime_env_ships_project_pins():
    job = _kind(ROOT / "cluster" / "kuberay" / "rayjob.yaml", "RayJob")
    env = yaml.safe_load(job["spec"]["runtimeEnvYAML"])
    assert sorted(env["pip"]) == sorted(v.project_pins().values())
    assert env["working_dir"].endswith(".zip")


def test_cluster_spec_loads_as_search_config():
    from search.spec import load_spec

    cfg, extra = load_spec(ROOT / "cluster" / "specs" / "gpu.yaml")
    assert cfg.resources.gpu == 0.25 and cfg.max_failures >= 1
    assert extra["data"].startswith(v.SHARED_MOUNT)


def test_cli_reports_problems(tmp_path: Path, capsys):
    bad = copy.deepcopy(_one(LAUNCHER[0]))
    bad["available_node_types"]["gpu_worker"]["min_worker"] = 1
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    assert v.main([str(LAUNCHER[0])]) == 0
    assert v.main([str(path)]) == 1
    assert "problem" in capsys.readouterr().out
