"""Strategy comparison and `fersearch export` on a hand-built search directory (no search needed)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from data_pipeline.fer2013 import load_split
from data_pipeline.prepare import prepare_fer2013
from data_pipeline.synth import write_fer2013_csv
from search.cli import main
from search.ensemble import bootstrap_ci, choose
from search.pipeline import find_candidates, select_and_export
from search.serving import Predictor
from search.spec import MergeConfig
from search.trial import TrialCheckpoint, TrialState, build_model, predict_proba

SMALL_MERGE = MergeConfig(phase1_epochs=1, phase2_epochs=1, batch_size=64)


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
        TrialCheckpoint(ckpt).save(
            model, config, {"epoch": 1}, TrialState(1, acc, 1), (val_p, predict_proba(model, test_x), None)
        )
        late = root / "tune" / f"trial_t{t}" / "checkpoint_000001"
        late.mkdir()
        TrialCheckpoint(late).save(model, config, {"epoch": 2}, TrialState(2, acc, 1))
    return root


def test_find_candidates_takes_each_trials_best_checkpoint_with_predictions(search_dir):
    cands = find_candidates(search_dir, top_k=8)
    assert sorted(c.name for c in cands) == ["t0", "t1", "t2"]
    assert all(c.checkpoint.name == "checkpoint_000000" for c in cands)
    assert [c.val_acc for c in cands] == sorted((c.val_acc for c in cands), reverse=True)
    assert len(find_candidates(search_dir, top_k=2)) == 2


STRATEGIES = ("best single", "top-3 average", "greedy selection", "merge net", "greedy + merge net")


def test_export_picks_on_public_test_and_round_trips(search_dir, tmp_path):
    result = select_and_export(search_dir, top_k=3, out=tmp_path / "export", merge=SMALL_MERGE)
    rows = {(r.strategy, r.tta): r for r in result.rows}
    assert set(rows) == {(s, t) for s in STRATEGIES for t in (False, True)}
    assert [c.name for c in result.candidates] == [*(c.name for c in find_candidates(search_dir, 3)), "merge"]
    assert rows[("merge net", False)].members == ["merge"]
    assert "merge" not in rows[("greedy selection", False)].members
    greedy = [r for r in result.rows if r.strategy in ("greedy selection", "greedy + merge net")]
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


def test_export_cli_logs_the_export_to_wandb(search_dir, tmp_path, capsys, monkeypatch):
    """``fersearch export --merge-bases 0 --wandb-project``: real selection, real offline W&B."""
    from search.tracking import read_offline_artifacts

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for var, sub in (("WANDB_DATA_DIR", "data"), ("WANDB_CACHE_DIR", "cache"), ("WANDB_CONFIG_DIR", "cfg")):
        monkeypatch.setenv(var, str(tmp_path / "wandb-home" / sub))
    args = ["export", str(search_dir), "--top-k", "2", "--out", str(tmp_path / "e"), "--merge-bases", "0"]
    assert main([*args, "--wandb-project", "fersearch"]) == 0
    out = capsys.readouterr().out
    assert "greedy selection" in out and "exported" in out and "merge net" not in out
    assert "logged the export to W&B project fersearch" in out
    assert (tmp_path / "e" / "model.onnx").is_file()
    (run_dir,) = (tmp_path / "wandb").rglob("offline-run-*")
    artifacts = {a["type"]: set(a["files"]) for a in read_offline_artifacts(run_dir)}
    members = {f.name for f in (tmp_path / "e").glob("member_*.safetensors")}
    assert artifacts["model"] == {"manifest.json", "model.onnx", *members}
    assert "report/report.html" in artifacts["report"]


def test_strategies_are_chosen_from_public_test_arrays_only():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 7, 200)
    probs = [rng.dirichlet(np.ones(7), 200) for _ in range(4)]
    strategies = choose(probs, y, tta=False, top_k=3)
    assert [s.name for s in strategies] == ["best single", "top-3 average", "greedy selection"]
    assert sum(strategies[1].weights.values()) == pytest.approx(1.0)
    # Candidate 3 as the merge net: the trial strategies leave it out, two rows may use it.
    probs[3] = np.eye(7)[y] * 0.9 + 0.1 / 7  # a merge net that is right everywhere
    strategies = {s.name: s for s in choose(probs, y, tta=False, top_k=3, merge=3)}
    assert list(strategies) == list(STRATEGIES)
    assert all(3 not in strategies[n].weights for n in STRATEGIES[:3])
    assert strategies["merge net"].weights == {3: 1.0}
    assert strategies["greedy + merge net"].weights == {3: 1.0}
    # Bagged selection in the greedy rows: bags drawn without the perfect model still count.
    bagged = {s.name: s for s in choose(probs, y, tta=False, top_k=3, merge=3, bags=8)}
    assert list(bagged) == list(STRATEGIES) and 3 not in bagged["greedy selection"].weights
    weights = bagged["greedy + merge net"].weights
    assert sum(weights.values()) == pytest.approx(1.0) and weights[3] == max(weights.values())


def test_bootstrap_interval_brackets_the_mean():
    correct = (np.random.default_rng(1).random(2000) < 0.6).astype(float)
    lo, hi = bootstrap_ci(correct)
    assert lo < correct.mean() < hi and hi - lo < 0.06


def with_weak_trial(search_dir: Path, tmp_path: Path) -> tuple[Path, Path, float, dict]:
    """A copy of the search with a trial ``weak`` (a copy of t2's checkpoint): the copy, that checkpoint,
    the best candidate's PublicTest accuracy and the weak checkpoint's trial.json to edit."""
    import shutil

    copy = tmp_path / "search"
    shutil.copytree(search_dir / "tune", copy / "tune")
    weak = copy / "tune" / "trial_weak" / "checkpoint_000000"
    shutil.copytree(copy / "tune" / "trial_t2" / "checkpoint_000000", weak)
    best = max(c.val_acc for c in find_candidates(copy, top_k=8))
    return copy, weak, best, json.loads((weak / "trial.json").read_text())


def test_library_is_pruned_to_trials_near_the_best(search_dir, tmp_path):
    copy, weak, best, trial = with_weak_trial(search_dir, tmp_path)
    trial["best_val_acc"] = best - 0.11
    (weak / "trial.json").write_text(json.dumps(trial))
    assert "weak" not in {c.name for c in find_candidates(copy, top_k=8)}
    trial["best_val_acc"] = best - 0.09
    (weak / "trial.json").write_text(json.dumps(trial))
    assert "weak" in {c.name for c in find_candidates(copy, top_k=8)}


def test_merge_net_trains_in_two_phases_and_never_reads_private_test_labels(search_dir, tmp_path):
    """Trained twice, once with PrivateTest labels scrambled: the merge net comes out identical."""
    import shutil

    import pyarrow.parquet as pq

    from search.ensemble import train_merge

    cands = find_candidates(search_dir, top_k=2)
    first = train_merge(cands, search_dir / "data", tmp_path / "a", SMALL_MERGE)
    assert [h.phase for h in first.history] == [1, 2]
    # Phase 1 leaves the bases as they were; the PublicTest scores of the loaded bases are the trials' own.
    assert first.history[0].base_val_accs == first.bases_before
    assert first.bases_before == pytest.approx([c.val_acc for c in cands], abs=1e-6)
    assert first.val_acc == max(h.val_acc for h in first.history)

    poisoned = tmp_path / "data"
    shutil.copytree(search_dir / "data", poisoned)
    table = pq.read_table(poisoned / "PrivateTest.parquet")
    label = table.column_names.index("label")
    scrambled = np.random.default_rng(0).permutation(table["label"].to_numpy())
    pq.write_table(table.set_column(label, "label", pa_array(scrambled, table.schema.field("label").type)),
                   poisoned / "PrivateTest.parquet")  # fmt: skip
    second = train_merge(cands, poisoned, tmp_path / "b", SMALL_MERGE)

    def scores(r):
        return [(h.phase, h.epoch, h.val_acc, h.base_val_accs, h.train_loss) for h in r.history]

    assert scores(second) == scores(first)
    for name in ("PublicTest_probs.npy", "PrivateTest_probs.npy"):
        np.testing.assert_array_equal(np.load(tmp_path / "a" / name), np.load(tmp_path / "b" / name))


def pa_array(values, type_):
    import pyarrow as pa

    return pa.array(values, type=type_)


def test_an_ensemble_with_the_merge_net_exports_and_both_backends_agree(search_dir, tmp_path):
    from search.ensemble import Candidate, WeightedEnsemble, train_merge
    from search.serving import export_ensemble

    cands = find_candidates(search_dir, top_k=3)
    train_merge(cands, search_dir / "data", tmp_path / "merge", SMALL_MERGE)
    merged = Candidate.from_checkpoint("merge", tmp_path / "merge")
    assert merged.arch == "parallel_merge" and len(merged.arch_kwargs["bases"]) == 3
    members = [merged, cands[0]]
    out = export_ensemble(
        members, WeightedEnsemble({0: 0.6, 1: 0.4}, tta=True), tmp_path / "export",
        classes=[str(i) for i in range(7)], metrics={},
    )  # fmt: skip
    val_x, _ = load_split(search_dir / "data", "PublicTest")
    onnx = Predictor.from_dir(out, backend="onnx").predict_proba(val_x[:64])
    torch_p = Predictor.from_dir(out, backend="torch").predict_proba(val_x[:64])
    assert np.abs(onnx - torch_p).max() <= 1e-4
    # The exported merge net is the trained one: its PublicTest probabilities as saved at training time.
    only_merge = WeightedEnsemble({0: 1.0})
    alone = export_ensemble(
        members, only_merge, tmp_path / "alone", classes=[str(i) for i in range(7)], metrics={}
    )
    saved = np.load(tmp_path / "merge" / "PublicTest_probs.npy")
    np.testing.assert_allclose(Predictor.from_dir(alone).predict_proba(val_x), saved, atol=1e-4)


def test_a_checkpoint_at_chance_level_never_joins(search_dir, tmp_path):
    """Within the pruning window but no better than a constant answer (the majority class's accuracy, the
    class prior's log-loss): not a candidate; the same accuracy with a log-loss below the prior's is."""
    copy, weak, best, trial = with_weak_trial(search_dir, tmp_path)
    trial["best_val_acc"] = trial["metrics"]["val_acc"] = best - 0.09
    trial["metrics"]["val_loss"] = 14.7  # diverged
    (weak / "trial.json").write_text(json.dumps(trial))
    assert "weak" in {c.name for c in find_candidates(copy, top_k=8)}  # no manifest: chance level unknown
    (copy / "data").mkdir()
    majority = 0.5 if best - 0.09 < 0.5 else best - 0.08
    rest = round(100 * (1 - majority))
    counts = {"top": 100 - rest, **{f"c{i}": 1 for i in range(rest)}}
    (copy / "data" / "manifest.json").write_text(json.dumps({"counts": {"PublicTest": counts}}))
    names = {c.name for c in find_candidates(copy, top_k=8)}
    assert "weak" not in names and names, names
    trial["metrics"]["val_loss"] = 0.01  # same accuracy, but it learned more than the class prior
    (weak / "trial.json").write_text(json.dumps(trial))
    assert "weak" in {c.name for c in find_candidates(copy, top_k=8)}
