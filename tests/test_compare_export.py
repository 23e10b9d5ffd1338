"""Strategy comparison and `fersearch export` on a hand-built search directory (no search needed)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from data_pipeline.fer2013 import load_split, prepare_fer2013
from data_pipeline.synth import write_fer2013_csv
from search.cli import main
from search.compare import bootstrap_ci, choose
from search.export import Predictor
from search.run import find_candidates, select_and_export
from search.trainable import build_model, predict_proba, save_checkpoint


@pytest.fixture(scope="module")
def search_dir(tmp_path_factory, ray_local):
    """Three briefly trained mini-Xceptions laid out as Tune leaves them, with a trial's predictions."""
    root = tmp_path_factory.mktemp("search")
    csv_path = write_fer2013_csv(root / "synth.csv.gz", n_rows=700, seed=21)
    prepared = prepare_fer2013(csv_path, root / "data")
    x, y = load_split(prepared.root, "Training")
    val_x, val_y = load_split(prepared.root, "PublicTest")
    test_x, _ = load_split(prepared.root, "PrivateTest", with_labels=False)
    torch.set_num_threads(1)
    for t, steps in enumerate((10, 30, 60)):
        torch.manual_seed(t)
        model = build_model("mini_xception", 7, 0.0, {"width": 0.5})
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        model.train()
        for s in range(steps):
            idx = np.random.default_rng(s).choice(len(x), 32, replace=False)
            xb = torch.from_numpy(x[idx]).float().div(255).sub(0.5).div(0.5).unsqueeze(1)
            loss = torch.nn.functional.cross_entropy(model(xb), torch.from_numpy(y[idx]))
            opt.zero_grad()
            loss.backward()
            opt.step()
        val_p = predict_proba(model, val_x)
        acc = float((val_p.argmax(1) == val_y).mean())
        ckpt = root / "tune" / f"trial_t{t}" / "checkpoint_000000"
        ckpt.mkdir(parents=True)
        config = {"arch": "mini_xception", "arch_kwargs": {"width": 0.5}, "lr": 3e-3, "dropout": 0.0}
        save_checkpoint(
            ckpt, model, config, {"epoch": 1}, acc, 1, (val_p, predict_proba(model, test_x), None)
        )
        late = root / "tune" / f"trial_t{t}" / "checkpoint_000001"
        late.mkdir()
        save_checkpoint(late, model, config, {"epoch": 2}, acc, 1, None)
    return root


def test_find_candidates_takes_each_trials_best_checkpoint_with_predictions(search_dir):
    cands = find_candidates(search_dir, top_k=8)
    assert sorted(c.name for c in cands) == ["t0", "t1", "t2"]
    assert all(c.checkpoint.name == "checkpoint_000000" for c in cands)
    assert [c.val_acc for c in cands] == sorted((c.val_acc for c in cands), reverse=True)
    assert len(find_candidates(search_dir, top_k=2)) == 2


def test_export_picks_on_public_test_and_round_trips(search_dir, tmp_path):
    result = select_and_export(search_dir, top_k=3, out=tmp_path / "export")
    rows = {(r.strategy, r.tta): r for r in result.rows}
    assert set(rows) == {
        (s, t) for s in ("best single", "top-3 average", "greedy selection") for t in (False, True)
    }
    greedy = [r for r in result.rows if r.strategy == "greedy selection"]
    chosen = rows[(result.chosen.name, result.chosen.tta)]
    assert chosen.public_acc == max(r.public_acc for r in greedy)
    for r in result.rows:
        assert r.ci95[0] <= r.private_acc <= r.ci95[1] and r.ms_per_1000 > 0
    manifest = json.loads((result.export_dir / "manifest.json").read_text())
    assert manifest["tta_flip"] == result.chosen.tta
    test_x, test_y = load_split(search_dir / "data", "PrivateTest")
    for backend in ("onnx", "torch"):
        probs = Predictor.from_dir(result.export_dir, backend=backend).predict_proba(test_x)
        assert float((probs.argmax(1) == test_y).mean()) == pytest.approx(
            chosen.private_acc, abs=1 / len(test_y)
        )


def test_export_cli(search_dir, tmp_path, capsys):
    assert main(["export", str(search_dir), "--top-k", "2", "--out", str(tmp_path / "e")]) == 0
    out = capsys.readouterr().out
    assert "greedy selection" in out and "exported" in out
    assert (tmp_path / "e" / "model.onnx").is_file()


def test_strategies_are_chosen_from_public_test_arrays_only():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 7, 200)
    probs = [rng.dirichlet(np.ones(7), 200) for _ in range(4)]
    strategies = choose(probs, y, tta=False, top_k=3)
    assert [s.name for s in strategies] == ["best single", "top-3 average", "greedy selection"]
    assert sum(strategies[1].weights.values()) == pytest.approx(1.0)


def test_bootstrap_interval_brackets_the_mean():
    correct = (np.random.default_rng(1).random(2000) < 0.6).astype(float)
    lo, hi = bootstrap_ci(correct)
    assert lo < correct.mean() < hi and hi - lo < 0.06


def test_library_is_pruned_to_trials_near_the_best(search_dir, tmp_path):
    import shutil

    copy = tmp_path / "search"
    shutil.copytree(search_dir / "tune", copy / "tune")
    weak = copy / "tune" / "trial_weak" / "checkpoint_000000"
    shutil.copytree(copy / "tune" / "trial_t2" / "checkpoint_000000", weak)
    best = max(c.val_acc for c in find_candidates(copy, top_k=8))
    trial = json.loads((weak / "trial.json").read_text())
    trial["best_val_acc"] = best - 0.11
    (weak / "trial.json").write_text(json.dumps(trial))
    assert "weak" not in {c.name for c in find_candidates(copy, top_k=8)}
    trial["best_val_acc"] = best - 0.09
    (weak / "trial.json").write_text(json.dumps(trial))
    assert "weak" in {c.name for c in find_candidates(copy, top_k=8)}
