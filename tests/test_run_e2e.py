"""The whole `fersearch run` on a small synthetic set with a real Ray instance."""

from __future__ import annotations

import json

import numpy as np
import pytest

from data_pipeline.fer2013 import load_split
from data_pipeline.synth import write_fer2013_csv
from search.pipeline import format_summary, run
from search.serving import Predictor
from search.spec import ArchSpace, MergeConfig, Range, SearchConfig, SearchSpace


@pytest.mark.slow
def test_run_end_to_end_on_synthetic(tmp_path, ray_local, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    for var, sub in (("WANDB_DATA_DIR", "data"), ("WANDB_CACHE_DIR", "cache"), ("WANDB_CONFIG_DIR", "cfg")):
        monkeypatch.setenv(var, str(tmp_path / "wandb-home" / sub))
    csv_path = write_fer2013_csv(tmp_path / "synth.csv.gz", n_rows=1200, seed=5)
    cfg = SearchConfig(
        space=SearchSpace(archs=(ArchSpace("mini_xception"),), lr=Range(1e-3, 3e-3, log=True)),
        num_samples=3,
        max_epochs=3,
        grace_period=1,
        time_budget_s=240,
        top_k=3,
        wandb="offline",
        merge=MergeConfig(phase1_epochs=1, phase2_epochs=1),
    )
    result = run(csv_path, tmp_path / "run", cfg)

    assert len(result.trials) == 3
    assert all(t.status in ("done", "pruned") and t.usable for t in result.trials)
    assert [t.val_acc for t in result.trials] == sorted((t.val_acc for t in result.trials), reverse=True)
    assert max(t.epochs for t in result.trials) == 3
    assert result.exported.chosen.weights and (result.out_dir / "report" / "report.html").is_file()

    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert {t["trial_id"] for t in summary["trials"]} == {t.trial_id for t in result.trials}
    for split in ("PublicTest", "PrivateTest"):
        assert 0.0 <= summary["scores"][split]["ensemble"]["acc"] <= 1.0
    assert (
        summary["scores"]["PublicTest"]["ensemble"]["acc"]
        >= summary["scores"]["PublicTest"]["best_single"]["acc"]
    )

    predictor = Predictor.from_dir(result.exported.export_dir)
    test_x, test_y = load_split(tmp_path / "run" / "data", "PrivateTest")
    acc = float(np.mean(predictor.predict_proba(test_x).argmax(1) == test_y))
    assert acc == pytest.approx(summary["scores"]["PrivateTest"]["ensemble"]["acc"], abs=1e-6)
    assert acc > 1 / 7 + 0.05, "three short trials should already beat chance on the synthetic faces"

    # The merge net over a candidate of each trial ("trial@epoch") was a candidate; the export and its
    # report went to W&B (offline).
    bases = summary["merge"]["base_names"]
    assert sorted(n.split("@")[0] for n in bases) == sorted(t.trial_id for t in result.trials), bases
    assert {r["strategy"] for r in summary["comparison"]} >= {"merge net", "greedy + merge net"}
    from search.tracking import read_offline_artifacts

    logged = {
        a["type"]
        for d in (tmp_path / "run" / "wandb").rglob("offline-run-*")
        for a in read_offline_artifacts(d)
    }
    assert {"model", "report"} <= logged

    text = format_summary(result)
    assert "best single" in text and "ensemble" in text and str(result.exported.export_dir) in text
