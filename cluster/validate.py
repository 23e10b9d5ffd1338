"""Offline checks of the cluster configs, so a typo fails here and not 20 minutes into ``ray up``.

Launcher YAML (AWS/GCP): Ray's own ``prepare_config`` + ``validate_config`` (the JSON schema and checks
``ray up`` runs before it touches the cloud), then this project's expectations: a GPU worker type that
autoscales, setup commands that install the project, the shared storage mount, images matching the
installed Ray. KubeRay manifests: field names and types of the ``ray.io/v1`` CRDs (``RayCluster``,
``RayJob``; taken from KubeRay's API types, no cluster needed), pod templates, GPU limits, volumes, and the
job's ``runtimeEnvYAML``.

``python -m cluster.validate cluster/*.yaml cluster/kuberay/*.yaml`` prints every problem found.
"""

from __future__ import annotations

import copy
import json
import re
import sys
import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
SHARED_MOUNT = "/mnt/fersearch"
PYTHON_TAG = "py311"

# ---- KubeRay ray.io/v1 fields (ray-operator/apis/ray/v1/{raycluster,rayjob}_types.go) ------------------
RAYCLUSTER_SPEC = {
    "headGroupSpec", "workerGroupSpecs", "rayVersion", "enableInTreeAutoscaling", "autoscalerOptions",
    "headServiceAnnotations", "suspend", "managedBy", "gcsFaultToleranceOptions",
}  # fmt: skip
HEAD_GROUP = {"template", "headService", "enableIngress", "rayStartParams", "serviceType"}
WORKER_GROUP = {
    "groupName", "replicas", "minReplicas", "maxReplicas", "idleTimeoutSeconds", "rayStartParams", "template",
    "scaleStrategy", "numOfHosts", "suspend",
}  # fmt: skip
AUTOSCALER_OPTIONS = {
    "resources", "image", "imagePullPolicy", "securityContext", "idleTimeoutSeconds", "upscalingMode", "env",
    "envFrom", "volumeMounts",
}  # fmt: skip
RAYJOB_SPEC = {
    "activeDeadlineSeconds", "backoffLimit", "rayClusterSpec", "submitterPodTemplate", "metadata",
    "clusterSelector", "submitterConfig", "managedBy", "deletionPolicy", "entrypoint", "runtimeEnvYAML",
    "jobId", "submissionMode", "entrypointResources", "entrypointNumCpus", "entrypointNumGpus",
    "ttlSecondsAfterFinished", "shutdownAfterJobFinishes", "suspend",
}  # fmt: skip
UPSCALING_MODES = {"Default", "Aggressive", "Conservative"}
SUBMISSION_MODES = {"K8sJobMode", "HTTPMode", "InteractiveMode"}
SERVICE_TYPES = {"ClusterIP", "NodePort", "LoadBalancer", "ExternalName"}
DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|Ki|M|Mi|G|Gi|T|Ti|P|Pi|E|Ei)?$")

# EC2 instance families with NVIDIA GPUs (the launcher detects GPU counts from the instance type).
AWS_GPU_FAMILIES = ("p3", "p4d", "p4de", "p5", "p5e", "g4dn", "g5", "g6", "g6e", "gr6")


def ray_version() -> str:
    import ray

    return ray.__version__


def project_pins(root: Path = ROOT) -> dict[str, str]:
    """``name -> requirement`` for pyproject's dependencies except Ray (the cluster images carry Ray)."""
    deps = tomllib.loads((root / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = {re.split(r"[\[=<>!~ ]", d, maxsplit=1)[0].lower(): d for d in deps}
    pins.pop("ray", None)
    return pins


def load_documents(path: str | Path) -> list[dict]:
    """All YAML documents of a file (empty documents dropped)."""
    docs = [d for d in yaml.safe_load_all(Path(path).read_text()) if d is not None]
    for d in docs:
        if not isinstance(d, dict):
            raise ValueError(f"{path}: a document is a {type(d).__name__}, not a mapping")
    return docs


def _image_problems(image: Any, where: str, version: str) -> list[str]:
    if not isinstance(image, str) or not image:
        return [f"{where}: image missing"]
    if image.startswith("rayproject/ray:"):
        tag = image.split(":", 1)[1]
        problems = []
        if not tag.startswith(f"{version}-"):
            problems.append(f"{where}: image {image} does not match the installed Ray {version}")
        if PYTHON_TAG not in tag:
            problems.append(f"{where}: image {image} is not the Python 3.11 ({PYTHON_TAG}) variant")
        return problems
    return []


# ---- Ray cluster launcher -----------------------------------------------------------------------------


def check_launcher(config: dict, version: str | None = None) -> list[str]:
    """Problems of a cluster-launcher config (empty list: fine). Never contacts a cloud."""
    version = version or ray_version()
    problems: list[str] = []
    from ray.autoscaler._private.util import prepare_config, validate_config

    try:
        validate_config(prepare_config(copy.deepcopy(config)))
    except Exception as e:  # jsonschema.ValidationError, ValueError, RuntimeError: report them all alike
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        problems.append(f"ray validate_config: {first}")

    for key in (
        "cluster_name", "max_workers", "provider", "available_node_types", "head_node_type", "file_mounts",
        "setup_commands", "head_start_ray_commands", "worker_start_ray_commands",
    ):  # fmt: skip
        if key not in config:
            problems.append(f"missing required key {key!r}")
    provider = config.get("provider") or {}
    ptype = provider.get("type")
    if ptype not in ("aws", "gcp"):
        problems.append(f"provider.type {ptype!r}: expected aws or gcp")
    if not provider.get("region"):
        problems.append("provider.region missing")
    if ptype == "gcp" and not provider.get("project_id"):
        problems.append("provider.project_id missing (gcp)")

    types = config.get("available_node_types") or {}
    head = config.get("head_node_type")
    if head not in types:
        problems.append(f"head_node_type {head!r} is not one of available_node_types")
    workers = {name: t for name, t in types.items() if name != head}
    if not workers:
        problems.append("no worker node type")
    gpu_types = [name for name, t in workers.items() if _launcher_gpus(ptype, t) > 0]
    if not gpu_types:
        problems.append("no GPU worker node type")
    for name, t in workers.items():
        lo, hi = t.get("min_workers", 0), t.get("max_workers")
        if hi is None:
            problems.append(f"{name}: max_workers missing (autoscaling bound)")
        elif not (isinstance(lo, int) and isinstance(hi, int) and 0 <= lo <= hi):
            problems.append(f"{name}: need 0 <= min_workers <= max_workers, got {lo}, {hi}")
    if head in types and (types[head].get("resources") or {}).get("CPU") not in (0, None):
        problems.append(f"{head}: the head should advertise CPU 0 so no trial lands on it")

    mounts = config.get("file_mounts") or {}
    project_remote = [remote for remote, local in mounts.items() if str(local).rstrip("/") in (".", "./")]
    if not project_remote:
        problems.append("file_mounts: the project directory '.' is not shipped to the nodes")
    setup = " ; ".join(config.get("setup_commands") or [])
    if not project_remote or not any(
        "pip install" in cmd and remote in cmd
        for cmd in config.get("setup_commands") or []
        for remote in project_remote
    ):
        problems.append(f"setup_commands do not pip install the project (got: {setup!r})")

    head_cmds = " ".join(config.get("head_start_ray_commands") or [])
    worker_cmds = " ".join(config.get("worker_start_ray_commands") or [])
    if "ray start --head" not in head_cmds:
        problems.append("head_start_ray_commands do not run `ray start --head`")
    if "--address=$RAY_HEAD_IP:6379" not in worker_cmds:
        problems.append("worker_start_ray_commands do not join $RAY_HEAD_IP:6379")

    init = " ".join(config.get("initialization_commands") or [])
    if SHARED_MOUNT not in init or "mount" not in init:
        problems.append(f"initialization_commands do not mount the shared storage at {SHARED_MOUNT}")
    docker = config.get("docker") or {}
    if docker:
        if not any(SHARED_MOUNT in str(o) for o in docker.get("run_options") or []):
            problems.append(f"docker.run_options do not bind {SHARED_MOUNT} into the container")
        for key in ("image", "head_image", "worker_image"):
            if key in docker:
                problems += _image_problems(docker[key], f"docker.{key}", version)
    for where, cmds in (("head", head_cmds), ("worker", worker_cmds)):
        if f"FERSEARCH_STORAGE={SHARED_MOUNT}" not in cmds:
            problems.append(f"{where}_start_ray_commands do not set FERSEARCH_STORAGE={SHARED_MOUNT}")
    return problems


def _launcher_gpus(ptype: str | None, node_type: dict) -> int:
    resources = node_type.get("resources") or {}
    if resources.get("GPU"):
        return int(resources["GPU"])
    node = node_type.get("node_config") or {}
    if ptype == "aws":
        family = str(node.get("InstanceType", "")).split(".")[0]
        return 1 if family in AWS_GPU_FAMILIES else 0
    if ptype == "gcp":
        return sum(int(a.get("acceleratorCount", 0)) for a in node.get("guestAccelerators") or [])
    return 0


# ---- KubeRay ------------------------------------------------------------------------------------------


def _unknown(obj: dict, allowed: set[str], where: str) -> list[str]:
    extra = sorted(set(obj) - allowed)
    return [f"{where}: unknown field(s) {', '.join(extra)}"] if extra else []


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _ray_start_params(params: Any, where: str) -> list[str]:
    if not isinstance(params, dict):
        return [f"{where}.rayStartParams: expected a mapping of strings, got {type(params).__name__}"]
    problems = [
        f"{where}.rayStartParams.{k}: value must be a string (map[string]string), got {v!r}"
        for k, v in params.items()
        if not isinstance(v, str)
    ]
    res = params.get("resources")
    if isinstance(res, str):
        try:
            parsed = json.loads(res.strip().strip("'").strip('"').replace('\\"', '"'))
            if not isinstance(parsed, dict) or not all(isinstance(x, int | float) for x in parsed.values()):
                raise ValueError
        except ValueError:
            problems.append(f"{where}.rayStartParams.resources: not a JSON object of numbers: {res!r}")
    return problems


def _pod_template(template: Any, where: str, version: str, *, gpu: bool | None = None) -> list[str]:
    if not isinstance(template, dict) or not isinstance(template.get("spec"), dict):
        return [f"{where}.template: a pod template with a spec is required"]
    spec = template["spec"]
    containers = spec.get("containers")
    if not isinstance(containers, list) or not containers:
        return [f"{where}.template.spec.containers: at least one container is required"]
    problems: list[str] = []
    volumes = {v.get("name") for v in spec.get("volumes") or []}
    gpus = 0
    for i, c in enumerate(containers):
        cw = f"{where}.template.spec.containers[{i}]"
        if not c.get("name") or not DNS1123.match(str(c.get("name"))):
            problems.append(f"{cw}: name missing or not a DNS-1123 label")
        if i == 0:
            problems += _image_problems(c.get("image"), cw, version)
        res = c.get("resources") or {}
        for kind in ("requests", "limits"):
            for k, v in (res.get(kind) or {}).items():
                if not QUANTITY.match(str(v)):
                    problems.append(f"{cw}.resources.{kind}.{k}: {v!r} is not a Kubernetes quantity")
        lim = (res.get("limits") or {}).get("nvidia.com/gpu")
        req = (res.get("requests") or {}).get("nvidia.com/gpu")
        if lim is not None:
            if not _int(lim) or lim < 1:
                problems.append(f"{cw}: nvidia.com/gpu limit must be a positive integer, got {lim!r}")
            else:
                gpus += lim
        if req is not None and req != lim:
            problems.append(f"{cw}: nvidia.com/gpu request {req!r} must equal its limit {lim!r}")
        for m in c.get("volumeMounts") or []:
            if m.get("name") not in volumes:
                problems.append(f"{cw}: volumeMount {m.get('name')!r} has no volume in the pod spec")
        if not any(m.get("mountPath") == SHARED_MOUNT for m in c.get("volumeMounts") or []) and i == 0:
            problems.append(f"{cw}: the shared storage is not mounted at {SHARED_MOUNT}")
    if gpu is True and gpus == 0:
        problems.append(f"{where}: a GPU group without an nvidia.com/gpu limit")
    return problems


def check_raycluster_spec(spec: Any, where: str = "spec", version: str | None = None) -> list[str]:
    version = version or ray_version()
    if not isinstance(spec, dict):
        return [f"{where}: expected a mapping"]
    problems = _unknown(spec, RAYCLUSTER_SPEC, where)
    if spec.get("rayVersion") != version:
        problems.append(f"{where}.rayVersion {spec.get('rayVersion')!r} != installed Ray {version}")
    opts = spec.get("autoscalerOptions") or {}
    problems += _unknown(opts, AUTOSCALER_OPTIONS, f"{where}.autoscalerOptions")
    if "upscalingMode" in opts and opts["upscalingMode"] not in UPSCALING_MODES:
        problems.append(f"{where}.autoscalerOptions.upscalingMode {opts['upscalingMode']!r} unknown")
    head = spec.get("headGroupSpec")
    if not isinstance(head, dict):
        return problems + [f"{where}.headGroupSpec: required"]
    hw = f"{where}.headGroupSpec"
    problems += _unknown(head, HEAD_GROUP, hw)
    if "serviceType" in head and head["serviceType"] not in SERVICE_TYPES:
        problems.append(f"{hw}.serviceType {head['serviceType']!r} not in {SERVICE_TYPES}")
    problems += _ray_start_params(head.get("rayStartParams", {}), hw)
    problems += _pod_template(head.get("template"), hw, version)
    groups = spec.get("workerGroupSpecs") or []
    names = [g.get("groupName") for g in groups]
    if len(set(names)) != len(names):
        problems.append(f"{where}.workerGroupSpecs: groupName values must be unique, got {names}")
    has_gpu_group = False
    for i, g in enumerate(groups):
        gw = f"{where}.workerGroupSpecs[{i}]"
        problems += _unknown(g, WORKER_GROUP, gw)
        if not g.get("groupName"):
            problems.append(f"{gw}.groupName: required")
        lo, n, hi = g.get("minReplicas", 0), g.get("replicas", 0), g.get("maxReplicas", 2**31 - 1)
        if not all(_int(v) for v in (lo, n, hi)) or not 0 <= lo <= n <= hi:
            problems.append(f"{gw}: need 0 <= minReplicas <= replicas <= maxReplicas: {lo}, {n}, {hi}")
        problems += _ray_start_params(g.get("rayStartParams", {}), gw)
        limits = [
            (c.get("resources") or {}).get("limits") or {}
            for c in ((g.get("template") or {}).get("spec") or {}).get("containers") or []
        ]
        is_gpu = any("nvidia.com/gpu" in lim for lim in limits) or "gpu" in str(g.get("groupName", ""))
        has_gpu_group |= is_gpu
        problems += _pod_template(g.get("template"), gw, version, gpu=is_gpu)
    if not has_gpu_group:
        problems.append(f"{where}.workerGroupSpecs: no GPU worker group (nvidia.com/gpu)")
    return problems


def check_runtime_env_yaml(text: Any, where: str, root: Path = ROOT) -> list[str]:
    """The job's runtime env ships the working dir and the project's pins exactly as pyproject has them."""
    if not isinstance(text, str):
        return [f"{where}: must be a multi-line YAML string, got {type(text).__name__}"]
    try:
        env = yaml.safe_load(text)
    except yaml.YAMLError as e:
        return [f"{where}: not YAML: {e}"]
    if not isinstance(env, dict):
        return [f"{where}: expected a mapping"]
    problems = []
    wd = env.get("working_dir")
    if not isinstance(wd, str) or not re.match(r"^(https?|s3|gs|gcs)://.+\.zip$", wd):
        problems.append(
            f"{where}.working_dir: a remote .zip URI is required (the submitter pod has no local files), "
            f"got {wd!r}"
        )
    pins = project_pins(root)
    pip = env.get("pip") or []
    names = {re.split(r"[\[=<>!~ ]", p, maxsplit=1)[0].lower(): p for p in pip}
    if "ray" in names:
        problems.append(f"{where}.pip: do not install ray over the image's Ray")
    for name, req in pins.items():
        if names.get(name) != req:
            problems.append(f"{where}.pip: {names.get(name)!r} != pyproject's {req!r}")
    for name in set(names) - set(pins) - {"ray"}:
        problems.append(f"{where}.pip: {names[name]!r} is not a project dependency")
    return problems


def check_rayjob(doc: dict, version: str | None = None, root: Path = ROOT) -> list[str]:
    version = version or ray_version()
    spec = doc.get("spec")
    if not isinstance(spec, dict):
        return ["RayJob: spec is required"]
    problems = _unknown(spec, RAYJOB_SPEC, "spec")
    ep = spec.get("entrypoint")
    if not isinstance(ep, str) or not ep.strip():
        problems.append("spec.entrypoint: required")
    else:
        problems += _entrypoint_problems(ep, root)
    if "submissionMode" in spec and spec["submissionMode"] not in SUBMISSION_MODES:
        problems.append(f"spec.submissionMode {spec['submissionMode']!r} not in {SUBMISSION_MODES}")
    for key in ("ttlSecondsAfterFinished", "backoffLimit"):
        if key in spec and (not _int(spec[key]) or spec[key] < 0):
            problems.append(f"spec.{key}: a non-negative integer, got {spec[key]!r}")
    deadline = spec.get("activeDeadlineSeconds", 1)
    if not _int(deadline) or deadline < 1:
        problems.append(f"spec.activeDeadlineSeconds: a positive integer, got {deadline!r}")
    if "shutdownAfterJobFinishes" in spec and not isinstance(spec["shutdownAfterJobFinishes"], bool):
        problems.append("spec.shutdownAfterJobFinishes: a boolean")
    if "runtimeEnvYAML" in spec:
        problems += check_runtime_env_yaml(spec["runtimeEnvYAML"], "spec.runtimeEnvYAML", root)
    else:
        problems.append("spec.runtimeEnvYAML: required (it ships the working directory)")
    if "rayClusterSpec" in spec:
        problems += check_raycluster_spec(spec["rayClusterSpec"], "spec.rayClusterSpec", version)
    elif not spec.get("clusterSelector"):
        problems.append("spec: one of rayClusterSpec or clusterSelector is required")
    return problems


def _entrypoint_problems(entrypoint: str, root: Path) -> list[str]:
    """The entrypoint runs this project's job module on a spec that exists in the shipped directory."""
    words = entrypoint.split()
    if words[:3] != ["python", "-m", "cluster.job"]:
        return [f"spec.entrypoint: expected `python -m cluster.job <spec> …`, got {entrypoint!r}"]
    spec = words[3] if len(words) > 3 else ""
    if not (root / spec).is_file():
        return [f"spec.entrypoint: spec {spec!r} is not a file of the project"]
    return []


def check_manifest_docs(docs: Iterable[dict], version: str | None = None, root: Path = ROOT) -> list[str]:
    """Problems of the KubeRay documents of one file (RayCluster, RayJob, PersistentVolumeClaim)."""
    version = version or ray_version()
    problems: list[str] = []
    for doc in docs:
        kind, api = doc.get("kind"), doc.get("apiVersion")
        name = (doc.get("metadata") or {}).get("name")
        where = f"{kind}/{name}"
        if not isinstance(name, str) or not DNS1123.match(name):
            problems.append(f"{where}: metadata.name missing or not DNS-1123")
        if kind in ("RayCluster", "RayJob"):
            if api != "ray.io/v1":
                problems.append(f"{where}: apiVersion {api!r}, expected ray.io/v1")
            if kind == "RayCluster":
                problems += [f"{where}: {p}" for p in check_raycluster_spec(doc.get("spec"), "spec", version)]
            else:
                problems += [f"{where}: {p}" for p in check_rayjob(doc, version, root)]
        elif kind == "PersistentVolumeClaim":
            modes = ((doc.get("spec") or {}).get("accessModes")) or []
            if "ReadWriteMany" not in modes:
                problems.append(f"{where}: accessModes must include ReadWriteMany (all Ray pods share it)")
        else:
            problems.append(f"{where}: unexpected kind {kind!r}")
    return problems


def check_file(path: str | Path) -> list[str]:
    """Dispatch on content: launcher YAML (has ``provider``) or Kubernetes manifests (have ``kind``)."""
    docs = load_documents(path)
    if len(docs) == 1 and "provider" in docs[0]:
        return check_launcher(docs[0])
    if docs and all("kind" in d for d in docs):
        return check_manifest_docs(docs)
    return [f"{path}: neither a launcher config (provider) nor Kubernetes manifests (kind)"]


def main(argv: list[str] | None = None) -> int:
    paths = argv if argv is not None else sys.argv[1:]
    bad = 0
    for p in paths:
        problems = check_file(p)
        bad += bool(problems)
        print(f"{p}: {'ok' if not problems else f'{len(problems)} problem(s)'}")
        for problem in problems:
            print(f"  - {problem}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
