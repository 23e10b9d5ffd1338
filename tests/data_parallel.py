"""The data-parallel scenarios, run together in one driver subprocess with its own single-node Ray (the
tests read its report; ``conftest.data_parallel_runs``): Ray Train's worker start-up and restarts are
mostly waiting, so the three runs overlap well on two cores.

* ``resume``: a 2-worker ``TorchTrainer`` run straight, and the same run whose rank 0 dies right after
  epoch ``CRASH_AFTER`` on its first attempt and is restarted by Train's failure handling
  (test_exact_resume.py checks the two end bit-identical).
* ``train_in_tune``: one Tune trial that trains one model on two ``TorchTrainer`` workers (DDP over gloo)
  and reports to Tune (test_cluster_train.py).

Run: ``python -m tests.data_parallel WORK_DIR`` (writes ``WORK_DIR/report.json``).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

EPOCHS = 4
CRASH_AFTER = 2
TRAIN_IN_TUNE_EPOCHS = 2
#: CPUs of the driver's Ray: 2 workers for each resume run, a Tune trial and its 2 workers
NUM_CPUS = 7


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
    from search.trial import TrialCheckpoint

    if resumed_from is not None:
        with resumed_from.as_directory() as d:
            epoch = TrialCheckpoint(Path(d)).read().epoch
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


def ddp_worker(config: dict) -> None:
    import ray.train

    from search.trial.ddp import fer_ddp_worker

    rank = ray.train.get_context().get_world_rank()
    marker = Path(config["_marker"])
    ckpt = ray.train.get_checkpoint()
    die_after(ray.train, bool(config["_crash"]) and rank == 0, marker, ckpt if rank == 0 else None)
    fer_ddp_worker(config)


def resume_run(work: Path, data_ref: list, crash: bool) -> dict:
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

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
    return {"error": repr(result.error) if result.error else None, "checkpoint": result.checkpoint.path}


def train_in_tune(work: Path) -> dict:
    from ray import tune

    from data_pipeline.prepare import prepare_fer2013
    from data_pipeline.synth import write_fer2013_csv
    from search.trial import best_train_checkpoint, ddp_trainable, read_rank_evidence
    from search.tuning import load_trial_data

    work.mkdir(parents=True, exist_ok=True)
    csv = write_fer2013_csv(work / "synth.csv.gz", n_rows=500, seed=7)
    data = load_trial_data(prepare_fer2013(csv, work / "data"))
    config = {
        "arch": "mini_xception",
        "mini_xception.width": 0.5,
        "lr": 2e-3,
        "dropout": 0.1,
        "optimizer": "adam",
        "batch_size": 32,
        "schedule": "onecycle",
        "max_epochs": TRAIN_IN_TUNE_EPOCHS,
        "seed": 0,
        "workers_per_trial": 2,
        "cpus_per_trial": 1,
        "gpus_per_trial": 0,
    }
    tuner = tune.Tuner(
        ddp_trainable(data, work, resources={"cpu": 1}),
        param_space=config,
        tune_config=tune.TuneConfig(num_samples=1, metric="val_acc", mode="max"),
        run_config=tune.RunConfig(name="tune", storage_path=str(work), verbose=0),
    )
    results = tuner.fit()
    result = results[0]
    rows = result.metrics_dataframe.to_dict("records")
    ckpt = Path(result.metrics["checkpoint_path"])
    evidence = read_rank_evidence(ckpt)
    return {
        "error": repr(result.error) if result.error else None,
        "rows": [{k: v for k, v in r.items() if isinstance(v, int | float | str)} for r in rows],
        "checkpoint": str(ckpt),
        "checkpoint_files": sorted(p.name for p in ckpt.iterdir()),
        "evidence": {
            r: {**{k: v for k, v in e.items() if k != "shard"}, "shard": e["shard"].tolist()}
            for r, e in evidence.items()
        },
        "n_train": int(len(data.train["original"][0])),
        "best_checkpoint_files": sorted(
            p.name for p in (best_train_checkpoint(ckpt.parent) or ckpt).iterdir()
        ),
        "best_config": results.get_best_result().config,
    }


def drive(work: Path) -> dict:
    import ray
    import ray.train.torch  # noqa: F401 - imported once here: two threads importing it at once race
    import ray.tune  # noqa: F401

    tmp = Path(tempfile.mkdtemp(prefix="fsd", dir="/tmp"))  # unix socket paths must stay short
    try:
        ray.init(num_cpus=NUM_CPUS, include_dashboard=False, _temp_dir=str(tmp), logging_level="WARNING")
        data_ref = [ray.put(small_data())]
        with ThreadPoolExecutor(2) as pool:  # Tune's driver keeps the main thread (signal handlers)
            straight = pool.submit(resume_run, work, data_ref, False)
            crashing = pool.submit(resume_run, work, data_ref, True)
            in_tune = train_in_tune(work / "train_in_tune")
            resume = {"False": straight.result(), "True": crashing.result()}
        return {"resume": resume, "train_in_tune": in_tune}
    finally:
        ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    work_dir = Path(sys.argv[1])
    (work_dir / "report.json").write_text(json.dumps(drive(work_dir), default=str))
