"""The search service on a real local Ray with small synthetic data."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from data_pipeline.synth import write_fer2013_csv
from search.spec import ArchSpace, Range, SearchConfig, SearchSpace
from search.tracking import read_offline_run
from search.tuning import pareto_front, read_trials, resume, search

ROOT = Path(__file__).resolve().parents[1]
TINY = SearchSpace(
    archs=(ArchSpace("mini_xception", {"width": (0.5,)}),),
    lr=Range(1e-3, 3e-3, log=True),
    dropout=Range(0.0, 0.2),
)


@pytest.fixture(scope="module")
def synth_csv(tmp_path_factory):
    return write_fer2013_csv(tmp_path_factory.mktemp("synth") / "synth.csv.gz", n_rows=500, seed=11)


def _epochs_per_trial(out: Path) -> dict[str, list[int]]:
    runs = {}
    for result in sorted((out / "tune").glob("trial_*/result.json")):
        lines = [json.loads(line) for line in result.read_text().splitlines() if line.strip()]
        runs[result.parent.name.removeprefix("trial_")] = [r["epoch"] for r in lines]
    return runs


@pytest.mark.slow
def test_asha_stops_trials_and_a_diverging_trial_fails_while_the_search_finishes(
    tmp_path, ray_local, synth_csv
):
    # The first trial (a fixed point, outside the sampled lr range) diverges during epoch 2, before the first
    # ASHA rung at epoch 2 can stop it; the sampled trials train normally.
    cfg = SearchConfig(
        name="asha",
        space=SearchSpace(**{**TINY.__dict__, "optimizer": ("adam", "sgd")}),
        num_samples=6,
        max_epochs=4,
        grace_period=2,
        reduction_factor=3,
        points_to_evaluate=({"arch": "mini_xception", "lr": 10.0, "dropout": 0.0, "optimizer": "sgd"},),
        seed=1,
    )
    result = search(cfg, synth_csv, tmp_path / "s")
    by_status = {t.trial_id: t for t in result.trials}
    assert len(by_status) == 6
    failed = [t for t in result.trials if t.status == "error"]
    assert len(failed) == 1 and "diverged" in failed[0].error
    done = [t for t in result.trials if t.status in ("done", "pruned")]
    assert len(done) == 5 and all(t.usable for t in done)
    epochs = {t.status: t.epochs for t in done}
    assert max(t.epochs for t in done) == 4 and "pruned" in epochs, f"ASHA should prune some trials: {done}"
    assert all(t.epochs < 4 for t in done if t.status == "pruned")
    rows = read_trials(tmp_path / "s")
    assert {r["trial_id"] for r in rows} == set(by_status)
    assert (tmp_path / "s" / "confusion_best_trial.png").is_file()


@pytest.mark.slow
def test_multi_objective_writes_a_pareto_front(tmp_path, ray_local, synth_csv):
    """Also: with ``portfolio`` the first trials are the portfolio's recipes (enqueued), the rest sampled."""
    from search.spec import Portfolio, Recipe, WidthValue

    space = SearchSpace(
        archs=(ArchSpace("mini_xception", {"width": (0.25, 0.5, 1.0)}),), lr=Range(1e-3, 3e-3)
    )
    recipes = (Recipe({"lr": 0.0011}, 1, 0.5), Recipe({"lr": 0.0029}, 1, 0.4), Recipe({"lr": 0.002}, 30, 0.6))
    portfolio = Portfolio(recipes, WidthValue(1.0, 1.0)).write(tmp_path / "portfolio.json")
    cfg = SearchConfig(
        name="mo", space=space, objectives=("val_acc", "latency_ms"), num_samples=4, max_epochs=1,
        portfolio=str(portfolio),
    )  # fmt: skip
    result = search(cfg, synth_csv, tmp_path / "mo")
    lrs = sorted(t.hparams["lr"] for t in result.trials)
    # two slots on the tests' Ray: the two recipes nearest one epoch, then TPE's own samples
    assert 0.0011 in lrs and 0.0029 in lrs and 0.002 not in lrs and len(set(lrs)) == 4
    front = (tmp_path / "mo" / "pareto.csv").read_text().splitlines()
    assert front[0] == "trial_id,arch,val_acc,latency_ms" and len(front) >= 2
    assert (tmp_path / "mo" / "pareto.png").stat().st_size > 1000
    rows = read_trials(tmp_path / "mo")
    assert all(float(r["latency_ms"]) > 0 for r in rows)
    assert len(result.trials) == 4


def test_pareto_front_keeps_only_non_dominated_rows():
    rows = [
        {"trial_id": "a", "val_acc": 0.6, "latency_ms": 1.0},
        {"trial_id": "b", "val_acc": 0.7, "latency_ms": 2.0},
        {"trial_id": "c", "val_acc": 0.5, "latency_ms": 1.5},
        {"trial_id": "d", "val_acc": 0.7, "latency_ms": 3.0},
        {"trial_id": "e", "val_acc": 0.8, "latency_ms": 5.0},
    ]
    assert [r["trial_id"] for r in pareto_front(rows, ("val_acc", "latency_ms"))] == ["a", "b", "e"]


@pytest.mark.slow
def test_wandb_offline_runs_hold_the_logged_metrics(demo_run):
    """The W&B-offline search of ``demo_run`` (conftest.py; test_run_e2e.py checks the rest of that run)."""
    trials = demo_run.result.trials
    runs = sorted(p for p in (demo_run.dir / "wandb").rglob("offline-run-*") if p.is_dir())
    assert len(runs) == len(trials) + 2, runs  # a run per trial, the summary run, the export's run
    contents = [read_offline_run(r) for r in runs]
    trial_runs = [h for h, _ in contents if any("val_acc" in row for row in h)]
    assert len(trial_runs) == len(trials) == 3
    logged_epochs = []
    for history in trial_runs:
        epochs = [row["epoch"] for row in history if "epoch" in row]
        assert epochs == list(range(1, len(epochs) + 1))
        assert all(0 <= row["val_acc"] <= 1 for row in history if "val_acc" in row)
        logged_epochs.append(len(epochs))
    assert sorted(logged_epochs) == sorted(t.epochs for t in trials)  # every epoch of every trial
    summary_runs = [s for _, s in contents if any(k.startswith("trials/") for k in s)]
    assert len(summary_runs) == 1 and summary_runs[0]["best_trial"]
    assert 0 <= summary_runs[0]["best_val_acc"] <= 1


@pytest.mark.slow
def test_sigkill_driver_then_resume_keeps_finished_trials_and_runs_the_rest(tmp_path, ray_local):
    synth_csv = write_fer2013_csv(tmp_path / "synth.csv.gz", n_rows=900, seed=12)
    out = tmp_path / "killed"
    spec = {
        "name": "killme",
        "data": str(synth_csv),
        "num_samples": 5,
        "max_epochs": 3,
        "grace_period": 3,
        "max_concurrent_trials": 1,
        "space": {"archs": [{"mini_xception": {"width": [0.5]}}], "lr": {"low": 0.001, "high": 0.003}},
    }
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    ray_tmp = tempfile.mkdtemp(prefix="fsk", dir="/tmp")  # unix socket paths must stay short
    env = {**os.environ, "RAY_TMPDIR": ray_tmp, "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    log = open(tmp_path / "driver.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "search.cli", "search", str(spec_path), "--out", str(out)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.time() + 240
    finished: set[str] = set()
    try:
        while time.time() < deadline and proc.poll() is None:
            finished = {t for t, ep in _epochs_per_trial(out).items() if ep and ep[-1] == 3}
            if len(finished) >= 2:
                break
            time.sleep(1)
        assert proc.poll() is None, (tmp_path / "driver.log").read_text()[-3000:]
        assert len(finished) >= 2, "two trials should finish within the deadline"
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()
        time.sleep(2)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    before = _epochs_per_trial(out)
    finished = {t for t, ep in before.items() if ep and ep[-1] == 3}
    assert len(finished) < 5, "the kill came too late to test resume"

    result = resume(out)
    after = _epochs_per_trial(out)
    ids = [t.trial_id for t in result.trials]
    assert len(ids) == len(set(ids)) == 5, ids
    assert finished <= set(ids)
    for t in finished:
        assert after[t] == before[t] == [1, 2, 3], f"finished trial {t} was re-run: {after[t]}"
    assert all(t.status == "done" for t in result.trials)
    assert all(ep[-1] == 3 and ep == sorted(set(ep)) for ep in after.values()), after


@pytest.mark.slow
def test_the_data_variant_is_searched_and_a_storage_uri_holds_the_experiment(tmp_path, ray_local, synth_csv):
    """Each trial trains on the variant it drew. ``storage_uri`` (here ``file://``; S3/GCS the same through
    pyarrow) is where Tune persists; the search directory receives the experiment afterwards, so ensembles
    and export work as usual. One search checks both (each is its own part of the config)."""
    space = SearchSpace(**{**TINY.__dict__, "variant": ("original", "balanced")})
    fixed = {"arch": "mini_xception", "mini_xception.width": 0.5, "lr": 2e-3, "dropout": 0.1}
    cfg = SearchConfig(
        name="variants", space=space, num_samples=2, max_epochs=1, grace_period=1, balanced_per_class=40,
        points_to_evaluate=({**fixed, "variant": "original"}, {**fixed, "variant": "balanced"}),
        storage_uri=f"file://{tmp_path / 'bucket'}",
    )  # fmt: skip
    result = search(cfg, synth_csv, tmp_path / "s")
    assert len(result.trials) == 2 and all(t.status == "done" for t in result.trials)
    balanced = json.loads((tmp_path / "s" / "variants" / "balanced" / "manifest.json").read_text())
    assert balanced["counts"]["Training"] == {c: 40 for c in balanced["classes"]}
    original = json.loads((tmp_path / "s" / "data" / "manifest.json").read_text())
    assert not (tmp_path / "s" / "variants" / "original").exists()  # balanced was built from data/
    seen = {}
    for result_file in (tmp_path / "s" / "tune").glob("trial_*/result.json"):
        row = json.loads(result_file.read_text().splitlines()[0])
        seen[row["config"]["variant"]] = row["train_images"]
    assert seen == {"original": sum(original["counts"]["Training"].values()), "balanced": 7 * 40}

    remote = tmp_path / "bucket" / "s" / "tune"
    trial_dirs = sorted(p.name for p in remote.glob("trial_*"))
    assert trial_dirs == sorted(f"trial_{t.trial_id}" for t in result.trials)
    for t in result.trials:
        assert t.checkpoint.is_relative_to(tmp_path / "s" / "tune"), t.checkpoint
        assert (t.checkpoint / "model.safetensors").is_file()
        assert (remote / t.checkpoint.relative_to(tmp_path / "s" / "tune") / "model.safetensors").is_file()
    with pytest.raises(Exception, match="storage_uri"):
        SearchConfig(storage_uri="/not/a/uri")
