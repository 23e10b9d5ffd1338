"""Exact resume: a trial whose process dies after epoch k and is restarted from its checkpoint (in a fresh
process, by Tune's or Train's own failure handling) ends with the same weights, bit for bit, and the same
metrics as the same trial run without a stop -- for the Tune trainable and for the data-parallel path.

The crash is the test's: a wrapper around the production trainable reports as usual, then ``os._exit``s
right after epoch ``CRASH_AFTER`` on the first attempt only.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file

from cluster.local import run_reaped
from tests.conftest import driver_env

ROOT = Path(__file__).resolve().parents[1]
EPOCHS = 4
CRASH_AFTER = 2
#: the learned metrics of the last epoch (timings differ by nature)
LEARNED = ("epoch", "val_acc", "train_loss", "best_val_acc")


def small_data():
    from search.trial import TrialData

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (96, 48, 48), dtype=np.uint8)
    y = rng.integers(0, 7, 96)
    val_x = rng.integers(0, 256, (32, 48, 48), dtype=np.uint8)
    return TrialData(train={"original": (x, y)}, val_x=val_x, val_y=rng.integers(0, 7, 32), test_x=val_x)


def trial_config(marker: Path) -> dict:
    return {"arch": "mini_xception", "mini_xception.width": 0.25, "lr": 3e-3, "max_epochs": EPOCHS,
            "schedule": "cosine", "optimizer": "adam", "dropout": 0.2, "cycles": 2, "cycle_ratio": 2,
            "batch_size": 32, "seed": 0, "cpus_per_trial": 1, "augment": 1.0,
            "_marker": str(marker)}  # fmt: skip


def die_after(module, crash: bool, marker: Path, resumed_from) -> None:
    """Patch ``module.report`` (Tune's or Train's) to kill this process after reporting CRASH_AFTER, and
    record where this attempt resumed from (``resumed_from``: the checkpoint it was given, or None)."""
    if resumed_from is not None:
        with resumed_from.as_directory() as d:
            epoch = json.loads((Path(d) / "trial.json").read_text())["metrics"]["epoch"]
        (marker.parent / f"{marker.name}.resumed").write_text(
            json.dumps({"epoch": epoch, "pid": os.getpid()})
        )
    if not crash or marker.exists():
        return
    report = module.report

    def report_then_die(metrics, *args, **kwargs):
        report(metrics, *args, **kwargs)
        if metrics["epoch"] == CRASH_AFTER:
            marker.write_text(str(os.getpid()))
            time.sleep(3)  # the driver registers the reported checkpoint before the process is gone
            os._exit(1)

    module.report = report_then_die


def tune_trial(config: dict, data) -> None:
    import ray.tune

    from search.trial import train_fer

    marker = Path(config["_marker"])
    die_after(ray.tune, bool(config["_crash"]), marker, ray.tune.get_checkpoint())
    train_fer(config, data)


def ddp_worker(config: dict) -> None:
    import ray.train

    from search.trial.ddp import fer_ddp_worker

    rank = ray.train.get_context().get_world_rank()
    marker = Path(config["_marker"])
    ckpt = ray.train.get_checkpoint()
    die_after(ray.train, bool(config["_crash"]) and rank == 0, marker, ckpt if rank == 0 else None)
    fer_ddp_worker(config)


def last_state(checkpoint_dir: Path) -> tuple[dict, dict]:
    metrics = json.loads((checkpoint_dir / "trial.json").read_text())["metrics"]
    return load_file(str(checkpoint_dir / "model.safetensors")), {k: metrics[k] for k in LEARNED}


def assert_same(straight: tuple[dict, dict], resumed: tuple[dict, dict]) -> None:
    import torch

    assert resumed[1] == straight[1]
    assert straight[0].keys() == resumed[0].keys()
    for k, v in straight[0].items():
        assert torch.equal(v, resumed[0][k]), k


def test_a_tune_trial_killed_after_epoch_2_resumes_bit_identically(tmp_path, ray_local):
    from ray import tune

    config = {**trial_config(tmp_path / "tune_crash"), "_crash": tune.grid_search([False, True])}
    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(tune_trial, data=small_data()), {"cpu": 1}),
        param_space=config,
        tune_config=tune.TuneConfig(metric="val_acc", mode="max"),
        run_config=tune.RunConfig(
            name="resume",
            storage_path=str(tmp_path),
            verbose=0,
            failure_config=tune.FailureConfig(max_failures=1),
        ),
    )
    results = {bool(r.config["_crash"]): r for r in tuner.fit()}
    assert all(r.error is None for r in results.values()), [r.error for r in results.values()]
    crashed_pid = int((tmp_path / "tune_crash").read_text())
    resumed = json.loads((tmp_path / "tune_crash.resumed").read_text())
    assert 1 <= resumed["epoch"] <= CRASH_AFTER and resumed["pid"] != crashed_pid
    straight, again = (last_state(Path(results[c].checkpoint.path)) for c in (False, True))
    assert straight[1]["epoch"] == EPOCHS
    assert_same(straight, again)


def ddp_driver(work: Path) -> dict:
    """The straight and the crashing Train run side by side (each on 2 one-CPU workers)."""
    from concurrent.futures import ThreadPoolExecutor

    import ray
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    tmp = Path(tempfile.mkdtemp(prefix="fsr", dir="/tmp"))
    try:
        ray.init(num_cpus=4, include_dashboard=False, _temp_dir=str(tmp), logging_level="WARNING")
        data_ref = [ray.put(small_data())]

        def fit(crash: bool) -> dict:
            config = {**trial_config(work / "ddp_crash"), "_crash": crash, "_data_ref": data_ref,
                      "cpus_per_worker": 1, "gpus_per_worker": 0}  # fmt: skip
            trainer = TorchTrainer(
                ddp_worker,
                train_loop_config=config,
                torch_config=TorchConfig(backend="gloo"),
                scaling_config=ray.train.ScalingConfig(num_workers=2, resources_per_worker={"CPU": 1}),
                run_config=ray.train.RunConfig(
                    name=f"ddp_crash{int(crash)}",
                    storage_path=str(work),
                    failure_config=ray.train.FailureConfig(max_failures=1),
                ),
            )
            result = trainer.fit()
            error = repr(result.error) if result.error else None
            return {"error": error, "checkpoint": result.checkpoint.path}

        with ThreadPoolExecutor(2) as pool:
            runs = dict(zip(("False", "True"), pool.map(fit, (False, True)), strict=True))
        return runs
    finally:
        ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.mark.slow
def test_a_data_parallel_trial_whose_rank_dies_after_epoch_2_resumes_bit_identically(tmp_path):
    proc = run_reaped(
        [sys.executable, "-m", "tests.test_exact_resume", str(tmp_path)],
        cwd=ROOT, env=driver_env(), capture_output=True, text=True, timeout=400,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    runs = json.loads((tmp_path / "report.json").read_text())
    assert all(r["error"] is None for r in runs.values()), runs
    crashed_pid = int((tmp_path / "ddp_crash").read_text())
    resumed = json.loads((tmp_path / "ddp_crash.resumed").read_text())
    assert 1 <= resumed["epoch"] <= CRASH_AFTER and resumed["pid"] != crashed_pid
    straight, again = (last_state(Path(runs[c]["checkpoint"])) for c in ("False", "True"))
    assert straight[1]["epoch"] == EPOCHS
    assert_same(straight, again)
    # every rank kept its own RNG states beside rank 0's optimiser and schedule
    files = {p.name for p in Path(runs["True"]["checkpoint"]).iterdir()}
    assert {"state.safetensors", "rng_rank0.safetensors", "rng_rank1.safetensors"} <= files


if __name__ == "__main__":
    work_dir = Path(sys.argv[1])
    (work_dir / "report.json").write_text(json.dumps(ddp_driver(work_dir), default=str))
