"""Train inside Tune: one Tune trial trains one model on 2 CPU ``TorchTrainer`` workers (DDP over gloo).

The scenario runs in a driver subprocess with its own single-node Ray (3 CPUs: the trial's Train driver
and two workers) and writes raw evidence; the assertions are made here.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from cluster.local import run_reaped

ROOT = Path(__file__).resolve().parents[1]
EPOCHS = 2


def driver(work: Path) -> dict:
    import ray
    from ray import tune

    from data_pipeline.prepare import prepare_fer2013
    from data_pipeline.synth import write_fer2013_csv
    from search.trial import best_train_checkpoint, ddp_trainable, read_rank_evidence
    from search.tuning import load_trial_data

    tmp = Path(tempfile.mkdtemp(prefix="fst", dir="/tmp"))
    try:
        ray.init(num_cpus=3, include_dashboard=False, _temp_dir=str(tmp), logging_level="WARNING")
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
            "max_epochs": EPOCHS,
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
    finally:
        ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.mark.slow
def test_a_trial_trains_on_two_torchtrainer_workers_with_disjoint_shards(tmp_path):
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    proc = run_reaped(
        [sys.executable, "-m", "tests.test_cluster_train", str(tmp_path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    r = json.loads((tmp_path / "report.json").read_text())
    assert r["error"] is None

    # Reported metrics came back to Tune: one row per epoch with the score ASHA/Optuna use.
    assert [row["epoch"] for row in r["rows"]] == list(range(1, EPOCHS + 1))
    assert all(0.0 <= row["val_acc"] <= 1.0 and row["world_size"] == 2 for row in r["rows"])
    assert all(np.isfinite(row["train_loss"]) for row in r["rows"])
    assert (tmp_path / "tune").is_dir() and list((tmp_path / "tune").glob("*/result.json"))

    # Both workers trained, on disjoint shards of equal size that together cover the epoch.
    ev = {int(k): v for k, v in r["evidence"].items()}
    assert set(ev) == {0, 1}
    a, b = set(ev[0]["shard"]), set(ev[1]["shard"])
    assert len(a) == len(b) == r["n_train"] // 2 == ev[0]["shard_size"]
    assert not a & b
    assert a | b <= set(range(r["n_train"]))
    # DDP kept the replicas identical although each saw different samples.
    assert ev[0]["params"] == ev[1]["params"]
    assert ev[0]["pid"] != ev[1]["pid"]
    # The checkpoint has the layout of an ordinary trial (ensemble/export read it alike).
    assert {"model.safetensors", "trial.json"} <= set(r["checkpoint_files"])
    assert {"PublicTest_probs.npy", "PrivateTest_probs.npy"} <= set(r["best_checkpoint_files"])


if __name__ == "__main__":
    work_dir = Path(sys.argv[1])
    report = driver(work_dir)
    (work_dir / "report.json").write_text(json.dumps(report, default=str))
