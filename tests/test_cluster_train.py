"""Train inside Tune: one Tune trial trains one model on 2 CPU ``TorchTrainer`` workers (DDP over gloo).

The scenario runs in the data-parallel driver subprocess (tests/data_parallel.py: its own single-node Ray,
shared with the exact-resume pair) and writes raw evidence; the assertions are made here.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.data_parallel import TRAIN_IN_TUNE_EPOCHS as EPOCHS


@pytest.mark.slow
def test_a_trial_trains_on_two_torchtrainer_workers_with_disjoint_shards(data_parallel_runs):
    work, report = data_parallel_runs
    r = report["train_in_tune"]
    assert r["error"] is None

    # Reported metrics came back to Tune: one row per epoch with the score ASHA/Optuna use.
    assert [row["epoch"] for row in r["rows"]] == list(range(1, EPOCHS + 1))
    assert all(0.0 <= row["val_acc"] <= 1.0 and row["world_size"] == 2 for row in r["rows"])
    assert all(np.isfinite(row["train_loss"]) for row in r["rows"])
    assert list((work / "train_in_tune" / "tune").glob("*/result.json"))

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

