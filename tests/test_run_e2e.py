"""The whole `fersearch run` on a small synthetic set with a real Ray instance (the run is ``demo_run``, which
test_run_output.py reads too)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from data_pipeline.fer2013 import load_split
from search.pipeline import format_summary
from search.serving import Predictor


@pytest.mark.slow
def test_run_end_to_end_on_synthetic(demo_run):
    """The run made by ``demo_run`` (conftest.py): three trials, a merge net, the export, W&B offline."""
    assert demo_run.code == 0, demo_run.out[-3000:]
    result, run_dir = demo_run.result, demo_run.dir
    assert len(result.trials) == 3
    assert all(t.status in ("done", "pruned") and t.usable for t in result.trials)
    assert [t.val_acc for t in result.trials] == sorted((t.val_acc for t in result.trials), reverse=True)
    assert max(t.epochs for t in result.trials) == 3
    assert result.exported.chosen.weights and (result.out_dir / "report" / "report.html").is_file()

    summary = json.loads((run_dir / "summary.json").read_text())
    assert {t["trial_id"] for t in summary["trials"]} == {t.trial_id for t in result.trials}
    for split in ("PublicTest", "PrivateTest"):
        assert 0.0 <= summary["scores"][split]["ensemble"]["acc"] <= 1.0
    assert (
        summary["scores"]["PublicTest"]["ensemble"]["acc"]
        >= summary["scores"]["PublicTest"]["best_single"]["acc"]
    )

    predictor = Predictor.from_dir(result.exported.export_dir)
    test_x, test_y = load_split(run_dir / "data", "PrivateTest")
    acc = float(np.mean(predictor.predict_proba(test_x).argmax(1) == test_y))
    assert acc == pytest.approx(summary["scores"]["PrivateTest"]["ensemble"]["acc"], abs=1e-6)
    assert acc > 1 / 7 + 0.05, "three short trials should already beat chance on the synthetic faces"

    # The merge net over a candidate of each trial ("trial@epoch") was a candidate; the export and its
    # report went to W&B (offline).
    bases = summary["merge"]["base_names"]
    # the distinct trials among the top-k candidates: a trial whose two snapshots both rank in the top k
    # leaves fewer trials than the run had (2 of 3 in some runs), so the bases are a subset, each once
    names = [n.split("@")[0] for n in bases]
    assert len(set(names)) == len(names) >= 2, bases
    assert set(names) <= {t.trial_id for t in result.trials}, bases
    assert {r["strategy"] for r in summary["comparison"]} >= {"merge net", "greedy + merge net"}
    from search.tracking import read_offline_artifacts

    logged = {
        a["type"] for d in (run_dir / "wandb").rglob("offline-run-*") for a in read_offline_artifacts(d)
    }
    assert {"model", "report"} <= logged

    text = format_summary(result)
    assert "best single" in text and "ensemble" in text and str(result.exported.export_dir) in text
