"""Exact resume: a trial whose process dies after epoch k and is restarted from its checkpoint (in a fresh
process, by Tune's or Train's own failure handling) ends with the same weights, bit for bit, and the same
metrics as the same trial run without a stop -- for the Tune trainable and for the data-parallel path.

The crash is the test's: a wrapper around the production trainable reports as usual, then ``os._exit``s
right after epoch ``CRASH_AFTER`` on the first attempt only (tests/data_parallel.py, whose driver also runs
the data-parallel pair).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors.torch import load_file

from search.trial import TrialCheckpoint
from tests.data_parallel import CRASH_AFTER, EPOCHS, die_after, small_data, trial_config

#: the learned metrics of the last epoch (timings differ by nature)
LEARNED = ("epoch", "val_acc", "train_loss", "best_val_acc")


def tune_trial(config: dict, data) -> None:
    import ray.tune

    from search.trial import train_fer

    marker = Path(config["_marker"])
    die_after(ray.tune, bool(config["_crash"]), marker, ray.tune.get_checkpoint())
    train_fer(config, data)


def last_state(checkpoint_dir: Path) -> tuple[dict, dict]:
    metrics = TrialCheckpoint(checkpoint_dir).read().metrics
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


@pytest.mark.slow
def test_a_data_parallel_trial_whose_rank_dies_after_epoch_2_resumes_bit_identically(data_parallel_runs):
    work, report = data_parallel_runs
    runs = report["resume"]
    assert all(r["error"] is None for r in runs.values()), runs
    crashed_pid = int((work / "ddp_crash").read_text())
    resumed = json.loads((work / "ddp_crash.resumed").read_text())
    assert 1 <= resumed["epoch"] <= CRASH_AFTER and resumed["pid"] != crashed_pid
    straight, again = (last_state(Path(runs[c]["checkpoint"])) for c in ("False", "True"))
    assert straight[1]["epoch"] == EPOCHS
    assert_same(straight, again)
    # every rank kept its own RNG states beside rank 0's optimiser and schedule
    files = {p.name for p in Path(runs["True"]["checkpoint"]).iterdir()}
    assert {"state.safetensors", "rng_rank0.safetensors", "rng_rank1.safetensors"} <= files

