"""Shared fixtures: one local Ray instance for the whole session, in a temp dir of its own."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def ray_local():
    import ray

    tmp = tempfile.mkdtemp(prefix="fsray", dir="/tmp")
    os.environ["RAY_TMPDIR"] = tmp
    os.environ.setdefault("WANDB_MODE", "offline")
    ray.init(num_cpus=2, include_dashboard=False, _temp_dir=tmp, logging_level="WARNING", log_to_driver=False)
    yield ray
    ray.shutdown()
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="session")
def real_fer2013(tmp_path_factory, ray_local):
    """The real FER2013 CSV prepared once (the *original* variant, in ``<root>/original``): every test that
    needs it reads it, and a ``prepare`` of another variant under ``<root>`` reuses it as its base."""
    from data_pipeline.prepare import prepare_fer2013

    fer = SHARED_DATA / "fer2013.csv.gz"
    if not fer.is_file():
        pytest.skip("needs ../shared/data")
    return prepare_fer2013(fer, tmp_path_factory.mktemp("real") / "original")


@contextlib.contextmanager
def stdout_to(path: Path):
    """What is written to stdout meanwhile (``sys.stdout`` and file descriptor 1 alike, as ``capfd`` takes
    it; a session fixture cannot use ``capfd``) goes to ``path``."""
    sys.stdout.flush()
    saved = os.dup(1)
    with open(path, "w", buffering=1) as sink:
        os.dup2(sink.fileno(), 1)
        try:
            with contextlib.redirect_stdout(sink):
                yield
        finally:
            sink.flush()
            os.dup2(saved, 1)
            os.close(saved)


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory, ray_local):
    """One whole ``fersearch run`` with no data given (the embedded synthetic default), as a user types it,
    in a directory of its own; test_run_output.py reads what it printed, test_run_e2e.py what it made.

    It is the demo preset made small (1200 synthetic faces; three mini-Xception trials of three epochs;
    a one-epoch-per-phase merge net) and logging to W&B offline. Returns ``code`` (the exit code), ``out``
    (its stdout), ``result`` (the :class:`RunResult` the CLI printed) and ``dir`` (its ``--out``)."""
    import search.pipeline
    import search.spec
    from search.cli import main
    from search.spec import ArchSpace, MergeConfig, Range, SearchSpace

    preset = search.spec.demo_config

    def small_demo():
        return preset().replace(
            space=SearchSpace(archs=(ArchSpace("mini_xception"),), lr=Range(1e-3, 3e-3, log=True)),
            time_budget_s=240,
            grace_period=1,
            top_k=3,
            merge=MergeConfig(phase1_epochs=1, phase2_epochs=1),
        )

    results = []

    def recorded(*args, **kwargs):
        results.append(run(*args, **kwargs))
        return results[-1]

    run = search.pipeline.run
    root = tmp_path_factory.mktemp("demo_run")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)  # no ./data/fer2013.csv here
        mp.delenv("FERSEARCH_FER2013", raising=False)
        mp.delenv("WANDB_API_KEY", raising=False)
        for sub in ("data", "cache", "config"):  # W&B's own staging, cache and settings
            mp.setenv(f"WANDB_{sub.upper()}_DIR", str(root / "wandb-home" / sub))
        mp.setattr(search.pipeline, "SYNTH_ROWS", 1200)
        mp.setattr(search.spec, "demo_config", small_demo)
        mp.setattr(search.pipeline, "run", recorded)
        with stdout_to(root / "stdout.txt"):
            argv = ["run", "--out", str(root / "run"), "--trials", "3", "--epochs", "3"]
            code = main([*argv, "--archs", "mini_xception", "--wandb", "offline"])
    out = (root / "stdout.txt").read_text()
    return SimpleNamespace(code=code, out=out, result=results[0] if results else None, dir=root / "run")


def write_kaggle_csv(path: Path, rows: list[tuple[object, str, str]]) -> Path:
    """A tiny Kaggle-layout CSV from (emotion, pixels, Usage) rows, written as given (bad rows included)."""
    lines = ["emotion,pixels,Usage"] + [f"{e},{p},{u}" for e, p, u in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def driver_env() -> dict[str, str]:
    """The environment of a driver subprocess that owns its own Ray cluster: no inherited Ray address or
    temp dir, no auth token, offline W&B, unbuffered output for the logs the tests read."""
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "disabled",
        "RAY_DEDUP_LOGS": "0",
        "RAY_USAGE_STATS_ENABLED": "0",
        "WANDB_MODE": "offline",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("RAY_ADDRESS", None)
    env.pop("RAY_TMPDIR", None)
    return env


@pytest.fixture(scope="session")
def data_parallel_runs(tmp_path_factory) -> tuple[Path, dict]:
    """The data-parallel scenarios of tests/data_parallel.py, run once in a driver subprocess with its own
    Ray: (work directory, report). test_exact_resume.py and test_cluster_train.py read it."""
    from cluster.local import run_reaped

    work = tmp_path_factory.mktemp("data_parallel")
    proc = run_reaped(
        [sys.executable, "-m", "tests.data_parallel", str(work)],
        cwd=ROOT, env=driver_env(), capture_output=True, text=True, timeout=500,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return work, json.loads((work / "report.json").read_text())


@pytest.fixture
def one_thread_seeded():
    """Model tests: seed 0 and one torch thread (restored after)."""
    import torch

    torch.manual_seed(0)
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def export_mini_xception(model, root: Path, onnx: bool = True, tta: bool = False, epochs: int = 1) -> Path:
    """Export one mini_xception ``model`` as a search exports its best single trial (FER2013's classes)."""
    import numpy as np

    from search.ensemble import Candidate, WeightedEnsemble
    from search.serving import export_ensemble
    from search.trial import TrialCheckpoint, TrialState, predict_proba

    classes = ["Angry", "Disgust", "Fear", "Happy", "Sad", "Surprise", "Neutral"]
    probs = predict_proba(model, np.zeros((2, 48, 48), np.uint8))
    ckpt = root / "ckpt"
    ckpt.mkdir()
    TrialCheckpoint(ckpt).save(
        model, {"arch": "mini_xception"}, {"epoch": epochs}, TrialState(epochs, 0.5, epochs),
        (probs, probs, np.eye(7)),
    )  # fmt: skip
    members = [Candidate("t0", "mini_xception", {}, ckpt, 0.5)]
    ensemble = WeightedEnsemble({0: 1.0}, "best single", tta)
    return export_ensemble(members, ensemble, root / "export", classes=classes, metrics={}, onnx=onnx)


def untrained_export(root: Path, onnx: bool = True, tta: bool = False) -> Path:
    """One seeded, untrained mini_xception exported: the smallest real export to damage or serve."""
    import torch

    from search.trial import build_model

    torch.manual_seed(0)
    return export_mini_xception(build_model("mini_xception", 7, 0.0), root, onnx, tta)


@pytest.fixture(scope="session")
def served_dir(tmp_path_factory) -> Path:
    """One :func:`untrained_export` (no ONNX) the serving tests share: they read it, never change it."""
    return untrained_export(tmp_path_factory.mktemp("untrained_export"), onnx=False)


@pytest.fixture(scope="session")
def served(served_dir):
    from search.serving import Predictor

    return Predictor.from_dir(served_dir)


CLI_DRIVER = """
import contextlib, io, json, sys
from pathlib import Path
from search.cli import main

results = []
for argv, out in json.load(sys.stdin):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as e:
            code = e.code
    import ray
    results.append({"code": code, "stderr": err.getvalue(), "ray": ray.is_initialized(),
                    "out_exists": Path(out).exists()})
print(json.dumps(results))
"""


def run_cli_calls(calls: list[tuple[list[str], str]], cwd: Path) -> list[dict]:
    """``fersearch`` called with each argv in one fresh interpreter (so ``ray.is_initialized()`` tells about
    these calls only): per call its exit code, stderr, whether Ray started and whether its out path exists."""
    import json
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-c", CLI_DRIVER], input=json.dumps(calls), capture_output=True, text=True, cwd=cwd,
        timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.splitlines()[-1])
