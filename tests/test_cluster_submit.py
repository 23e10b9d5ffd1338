"""``fersearch submit``: a small search as a Ray Job on a head started with ``ray start --head``.

The scenario runs in a driver subprocess (it owns the cluster and always stops it); the submit itself is
the user's command, ``python -m cluster.submit SPEC --address …``, in its own process. Assertions here.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from cluster.local import run_reaped
from tests.conftest import driver_env

ROOT = Path(__file__).resolve().parents[1]


def _spec(path: Path, data: Path, **changes) -> Path:
    spec = {
        "name": "submitted",
        "data": str(data),
        "num_samples": 2,
        "max_epochs": 1,
        "grace_period": 1,
        "resources": {"cpu": 1, "gpu": 0},
        "space": {"archs": [{"mini_xception": {"width": [0.5]}}], "lr": {"low": 0.001, "high": 0.003}},
        **changes,
    }
    path.write_text(yaml.safe_dump(spec))
    return path


def driver(work: Path, transport: str) -> dict:
    """Start a head (``ray start --head``, 2 CPUs), submit the spec with the CLI, read the job's record."""
    import ray

    from cluster.job import RESULT_FILE
    from cluster.local import LocalCluster
    from data_pipeline.synth import write_fer2013_csv

    csv = write_fer2013_csv(work / "synth.csv.gz", n_rows=500, seed=5)
    spec = _spec(work / "spec.yaml", csv)
    out = work / "search"
    tmp = Path(tempfile.mkdtemp(prefix="fsj", dir="/tmp"))
    cluster = LocalCluster(tmp)
    try:
        dashboard = transport == "http"
        cluster.start_head(num_cpus=2, dashboard=dashboard)
        address = f"http://127.0.0.1:{cluster.dashboard_port}" if dashboard else cluster.address
        submit = subprocess.run(
            [sys.executable, "-m", "cluster.submit", str(spec), "--address", address, "--out", str(out)],
            cwd=ROOT, env=cluster.node_env(), capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        ray.init(address=cluster.address, logging_level="ERROR", log_to_driver=False)
        match = re.search(r"^job (fersearch-\S+): ", submit.stdout, re.M)
        record = None
        if match:
            from ray.dashboard.modules.job.common import JobInfoStorageClient

            gcs = ray._private.worker.global_worker.gcs_client
            info = asyncio.run(JobInfoStorageClient(gcs).get_info(match.group(1)))
            record = {
                "submission_id": match.group(1),
                "status": info.status.value,
                "entrypoint": info.entrypoint,
                "driver_exit_code": info.driver_exit_code,
                "metadata": info.metadata,
                "working_dir": (info.runtime_env or {}).get("working_dir"),
            }
        drivers = [
            {"entrypoint": j["Entrypoint"], "is_dead": j["IsDead"], "driver_pid": j["DriverPid"]}
            for j in ray._private.state.jobs()
        ]
        return {
            "returncode": submit.returncode,
            "stdout": submit.stdout,
            "stderr": submit.stderr[-5000:],
            "record": record,
            "drivers": drivers,
            "out": str(out),
            "job_result": json.loads((out / RESULT_FILE).read_text())
            if (out / RESULT_FILE).is_file()
            else None,
        }
    finally:
        ray.shutdown()
        cluster.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)


def _dashboard_missing() -> str | None:
    from ray._private.utils import get_dashboard_dependency_error

    err = get_dashboard_dependency_error()
    return None if err is None else f"dashboard HTTP server needs ray[default] ({err})"


@pytest.mark.slow
@pytest.mark.parametrize("transport", ["gcs", "http"])
def test_submit_runs_the_search_as_a_ray_job_and_reads_its_result(tmp_path, transport):
    if transport == "http" and (reason := _dashboard_missing()):
        pytest.skip(reason)
    proc = run_reaped(
        [sys.executable, "-m", "tests.test_cluster_submit", str(tmp_path), transport],
        cwd=ROOT, env=driver_env(), capture_output=True, text=True, timeout=420,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    r = json.loads((tmp_path / "report.json").read_text())
    assert r["returncode"] == 0, r["stdout"][-4000:] + r["stderr"]

    # The job's logs were streamed back: the search's own output, then the verdict and the result.
    out = r["stdout"]
    assert "searching: 2 trials" in out and "FERSEARCH_RESULT " in out
    assert "SUCCEEDED" in out and "2/2 trials done" in out
    streamed = json.loads(next(ln for ln in out.splitlines() if ln.startswith("FERSEARCH_RESULT "))[17:])
    assert streamed["num_done"] == 2 and streamed["num_error"] == 0
    assert Path(streamed["out_dir"]) == Path(r["out"]).resolve()

    # What the job wrote on the cluster's storage agrees, and the search directory is complete.
    assert r["job_result"] == streamed
    search_dir = Path(r["out"])
    assert (search_dir / "trials.csv").is_file() and (search_dir / "search.json").is_file()
    assert len(list((search_dir / "tune").glob("trial_*/result.json"))) == 2

    # Ray's job record: the submitted entrypoint, the shipped working dir, the end state.
    rec = r["record"]
    assert rec is not None, r["stdout"][-2000:]
    assert rec["status"] == "SUCCEEDED" and rec["driver_exit_code"] == 0
    assert rec["entrypoint"].startswith("python -m cluster.job --spec-json ")
    assert rec["metadata"]["fersearch_spec"] == "submitted"
    if transport == "gcs":
        assert rec["working_dir"].startswith("gcs://_ray_pkg_")
    # …and its driver ran on the cluster as a job of its own, now finished.
    job_drivers = [d for d in r["drivers"] if "cluster.job" in d["entrypoint"]]
    assert len(job_drivers) == 1 and job_drivers[0]["is_dead"] is True, r["drivers"]


def test_submit_rejects_a_bad_spec_before_contacting_any_cluster(tmp_path):
    spec = _spec(tmp_path / "bad.yaml", tmp_path / "none.csv", num_sample=3)
    proc = subprocess.run(
        [sys.executable, "-m", "cluster.submit", str(spec), "--address", "127.0.0.1:1"],
        cwd=ROOT, env=driver_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "num_sample" in proc.stderr and "submitting" not in proc.stdout


def test_entrypoint_and_runtime_env_round_trip(tmp_path):
    import shlex

    from cluster.submit import EXCLUDES, build_entrypoint, build_runtime_env
    from search.spec import config_from_dict, load_spec

    cfg, _ = load_spec(_spec(tmp_path / "s.yaml", tmp_path / "d.csv"))
    words = shlex.split(build_entrypoint(cfg, data="/mnt/fersearch/d.csv", out="/mnt/fersearch/o"))
    assert words[:3] == ["python", "-m", "cluster.job"]
    sent = json.loads(words[words.index("--spec-json") + 1])
    assert config_from_dict(sent["config"]) == cfg
    assert words[words.index("--data") + 1] == "/mnt/fersearch/d.csv"
    env = build_runtime_env(ROOT, pip=True)
    assert env["working_dir"] == str(ROOT) and set(EXCLUDES) <= set(env["excludes"])
    assert any(p.startswith("torch==") for p in env["pip"]) and not any(
        p.startswith("ray") for p in env["pip"]
    )


def test_submit_verb_mounts_on_the_fersearch_parser():
    """``cluster.cli.register`` gives ``fersearch`` a ``submit`` verb with the search's override flags."""
    import argparse

    from cluster.cli import register
    from cluster.submit import run_verb

    parser = argparse.ArgumentParser(prog="fersearch")
    register(parser.add_subparsers(dest="verb", required=True))
    args = parser.parse_args(
        [
            "submit",
            "s.yaml",
            "--address",
            "http://head:8265",
            "--trials",
            "3",
            "--gpus-per-trial",
            "0.25",
            "--pip",
        ]
    )
    assert args.func is run_verb and args.address == "http://head:8265" and args.pip
    cfg = args.apply_overrides(args, _cfg_for_overrides())
    assert cfg.num_samples == 3 and cfg.resources.gpu == 0.25


def _cfg_for_overrides():
    from search.spec import SearchConfig

    return SearchConfig(name="o")


if __name__ == "__main__":
    work_dir, transport_name = Path(sys.argv[1]), sys.argv[2]
    report = driver(work_dir, transport_name)
    (work_dir / "report.json").write_text(json.dumps(report, default=str))
