"""The portfolio: built from recorded runs and races, read back, and used for a budgeted search's first
trials; the budget race reads PrivateTest labels in its final table only."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from search.cli import main
from search.spec import (
    PORTFOLIO_FILE,
    Portfolio,
    PortfolioError,
    Recipe,
    WidthValue,
    build_portfolio,
    quick_config,
    width_value,
)


def _recipe_race(path: Path) -> Path:
    rows = [
        {
            "augment": "shift",
            "smoothing": 0.0,
            "lr": 0.002,
            "batch_size": 64,
            "epochs": 13.0,
            "public_acc": 0.60,
        },
        {
            "augment": "1.0",
            "smoothing": 0.0,
            "lr": 0.002,
            "batch_size": 64,
            "epochs": 13.0,
            "public_acc": 0.57,
        },
        {
            "augment": "0.4",
            "smoothing": 0.1,
            "lr": 0.002,
            "batch_size": 64,
            "epochs": 12.5,
            "public_acc": 0.61,
        },
        {
            "augment": "1.0",
            "smoothing": 0.1,
            "lr": 0.002,
            "batch_size": 64,
            "epochs": 40.0,
            "public_acc": 0.66,
        },
    ]
    path.write_text(json.dumps(rows))
    return path


def _budget_race(path: Path) -> Path:
    rec = {"minutes": 20, "width_value": {"epoch_cost": 120.0, "second_net_gain": 1.8, "pace_share": 0.7}}
    # a race with both widths run by fersearch itself: that measurement wins over the hand legs'
    both = {"minutes": 40, "width_value": {"epoch_cost": 60.0, "second_net_gain": 1.2},
            "run_width_value": {"epoch_cost": 60.0, "second_net_gain": 0.2}}  # fmt: skip
    path.write_text(json.dumps([rec, both, {"minutes": 10, "baseline": {}}]))
    return path


def test_a_portfolio_is_built_from_a_recorded_run_and_race_records(demo_run, tmp_path):
    sources = [demo_run.dir, _recipe_race(tmp_path / "recipes.json"), _budget_race(tmp_path / "race.json")]
    built = build_portfolio(sources)
    from_run = [r for r in built.recipes if r.source.startswith(str(demo_run.dir))]
    trials = [t for t in demo_run.result.trials if t.usable]
    assert len(from_run) == len(trials) == 3
    assert {round(r.params["lr"], 12) for r in from_run} == {round(t.hparams["lr"], 12) for t in trials}
    assert {r.epochs for r in from_run} == {float(t.epochs) for t in trials}
    # the user's flip + shift is the trials' ``shift`` kind at strength 1
    from_race = [r for r in built.recipes if r.source.startswith(str(tmp_path / "recipes.json"))]
    assert sorted((r.params["augment_kind"], r.params["augment"]) for r in from_race) == [
        ("affine", 0.4),
        ("affine", 1.0),
        ("affine", 1.0),
        ("shift", 1.0),
    ]
    race = tmp_path / "race.json"
    # (1.8 + 0.2) / 2, not (1.8 + 1.2) / 2
    assert built.width == WidthValue(90.0, 1.0, f"{race}[0], {race}[1]")
    # written and read back through the one reader: the same portfolio
    out = built.write(tmp_path / "portfolio.json")
    assert Portfolio.read(out) == Portfolio(
        tuple(sorted(built.recipes, key=lambda r: (r.epochs, -r.public_acc))), built.width, built.built_from
    )
    # what a trial affording ~12 epochs starts from: the best of the nearest budget first, no repeats
    light = {"arch": "mini_xception", "lr": 0.002, "augment": 0.4, "augment_kind": "affine",
             "label_smoothing": 0.1, "batch_size": 64}  # fmt: skip
    assert Portfolio.read(out).points(12, 2)[0] == light
    long = {"arch": "mini_xception", "lr": 0.002, "augment": 1.0, "augment_kind": "affine",
            "label_smoothing": 0.1, "batch_size": 64}  # fmt: skip
    assert Portfolio.read(out).points(45, 1) == (long,)


def test_the_cli_builds_a_portfolio_and_names_a_bad_source_in_one_line(tmp_path, capsys):
    out = tmp_path / "p.json"
    args = ["portfolio", "build", str(_recipe_race(tmp_path / "r.json")), "--out", str(out)]
    assert main(args) == 0
    built, shipped = Portfolio.read(out), Portfolio.read(PORTFOLIO_FILE)
    assert f"{len(built.recipes)} recipes from 1 source(s)" in capsys.readouterr().out
    assert built.width == shipped.width  # no budget race among the sources: the shipped width kept
    # the race's four recipes join what the shipped portfolio had learned, which stays
    assert len([r for r in built.recipes if r.source.startswith(str(tmp_path))]) == 4

    def keys(p: Portfolio) -> set:
        return {(json.dumps(r.params, sort_keys=True), round(r.epochs)) for r in p.recipes}

    assert keys(shipped) <= keys(built)
    assert main(["portfolio", "build", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"fersearch: error: {tmp_path / 'nowhere'}: no such run directory or race-record file"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"recipes": [{"params": {"lrate": 1}, "epochs": 3, "public_acc": 0.5}],
                               "width": {"epoch_cost": 1, "second_net_gain": 1}}))  # fmt: skip
    with pytest.raises(PortfolioError, match=r"bad.json: recipes\[0\].params: unknown parameter\(s\) lrate"):
        Portfolio.read(bad)
    rows = tmp_path / "rows.json"
    rows.write_text(json.dumps([{"augment": "shift", "public_acc": 0.6, "lr": 0.002}]))
    assert main(["portfolio", "build", str(rows)]) == 2
    assert (
        capsys.readouterr().err.strip() == f"fersearch: error: {rows}: record 0: bad or missing 'smoothing'"
    )
    bad.write_text(json.dumps({"recipes": []}))
    with pytest.raises(PortfolioError, match="bad.json: missing key 'width'"):
        Portfolio.read(bad)


def test_the_shipped_portfolio_reads_and_fits_the_quick_space():
    from search.tuning.service import with_portfolio

    portfolio = Portfolio.read()
    assert portfolio.recipes and portfolio.width.epoch_cost > 0
    cfg = quick_config()
    for epochs in (10, 25, 50):
        points = with_portfolio(cfg.replace(max_epochs=epochs), None, portfolio).points_to_evaluate
        assert points
        # only what the quick space searches, inside its domains (TPE models them as its own)
        for p in points:
            assert set(p) <= {"arch", "lr", "augment", "augment_kind", "label_smoothing"}, p
            assert p["arch"] in [a.name for a in cfg.space.archs]
            assert cfg.space.lr.low <= p["lr"] <= cfg.space.lr.high
            assert cfg.space.augment.low <= p.get("augment", 1.0) <= cfg.space.augment.high
            assert p.get("label_smoothing", 0.0) in cfg.space.label_smoothing
            assert p.get("augment_kind", "affine") in cfg.space.augment_kind


def test_side_by_side_trials_start_from_one_architecture_each():
    def recipe(arch: str, epochs: float, acc: float) -> Recipe:
        return Recipe({"arch": arch, "lr": 0.002, "augment": 1.0}, epochs, acc)

    p = Portfolio(
        (recipe("mini_xception", 20, 0.62), recipe("mini_xception", 20.5, 0.61), recipe("vgg_fer11", 7, 0.60),
         recipe("vgg_fer11", 7.2, 0.58), recipe("cnn_moderate", 10, 0.53)),
        WidthValue(30, 1.0),
    )  # fmt: skip
    both = ["mini_xception", "vgg_fer11"]
    # distinct params: the second mini-Xception recipe differs only in its score, so it dedupes
    assert [q["arch"] for q in p.points(20, 3, archs=both)] == ["mini_xception", "vgg_fer11"]
    assert [q["arch"] for q in p.points(20, 1, archs=both)] == ["mini_xception"]
    # a space of one net never gets another net's recipe; with no space given every recipe competes
    assert {q["arch"] for q in p.points(20, 3, archs=["mini_xception"])} == {"mini_xception"}
    assert len(p.points(20, 3)) == 3
    # a recipe recorded before recipes named their net is a mini-Xception's
    old = Portfolio.read(_written({"lr": 0.002}))
    assert old.recipes[0].arch == "mini_xception" and old.points(20, 1)[0]["arch"] == "mini_xception"


def _written(params: dict) -> Path:
    import tempfile

    path = Path(tempfile.mkdtemp()) / "old.json"
    d = {"width": {"epoch_cost": 30, "second_net_gain": 1.0},
         "recipes": [{"params": params, "epochs": 20, "public_acc": 0.6}]}  # fmt: skip
    path.write_text(json.dumps(d))
    return path


def test_width_value_is_fitted_from_the_loop_and_the_pair():
    # the loop: 36 epochs at 0.640; the pair's members alone: 24 epochs at 0.620, their average 0.640
    w = width_value(loop_epochs=36, loop_acc=0.640, pair_epochs=24, pair_alone_acc=0.620, pair_acc=0.640)
    assert w.second_net_gain == pytest.approx(2.0)
    assert w.epoch_cost == pytest.approx(2.0 / (1 / 24 - 1 / 36), rel=1e-3)


def test_the_budget_race_reads_privatetest_labels_in_its_final_table_only():
    tree = ast.parse((Path(__file__).parents[1] / "benchmarks" / "budget_race.py").read_text())
    readers = []
    for fn in (n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)):
        for call in (n for n in ast.walk(fn) if isinstance(n, ast.Call)):
            name = getattr(call.func, "id", getattr(call.func, "attr", ""))
            args = [a.value for a in call.args if isinstance(a, ast.Constant)]
            unlabelled = any(
                k.arg == "with_labels" and getattr(k.value, "value", 1) is False for k in call.keywords
            )
            if name == "load_split" and "PrivateTest" in args and not unlabelled:
                readers.append(fn.name)
    assert readers == ["final_table"]


def test_points_never_repeat_a_recipe_and_prefer_the_better_at_the_nearest_budget():
    a = Recipe({"lr": 0.002}, 12.2, 0.60, "a")
    b = Recipe({"lr": 0.002}, 11.8, 0.62, "b")
    c = Recipe({"lr": 0.003}, 12.0, 0.61, "c")
    p = Portfolio((a, b, c), WidthValue(1.0, 1.0))
    mx = {"arch": "mini_xception"}
    assert p.points(12, 3) == ({**mx, "lr": 0.002}, {**mx, "lr": 0.003})
