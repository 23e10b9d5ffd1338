"""The budget planner: plans fit their budget, schedules end where trials end, snapshots join selection."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from data_pipeline.synth import write_fer2013_csv
from search.spec import ArchSpace, Range, SearchConfig, SearchSpace
from search.trial import (
    CosineCycles,
    TrialPlan,
    cycle_ends,
    measure_images_per_s,
    plan_search,
    progress,
    rung_fractions,
)

TINY = SearchSpace(archs=(ArchSpace("mini_xception", {"width": (0.5,)}),), lr=Range(1e-3, 3e-3, log=True))


def test_cycles_end_on_the_rungs_and_anneal_to_zero():
    assert cycle_ends(27, 3, 3.0) == (3, 9, 27)
    assert cycle_ends(10, 2, 2.0) == (5, 10)
    assert cycle_ends(5, 1, 3.0) == (5,)
    for epochs, cycles, ratio in ((27, 3, 3.0), (10, 2, 2.0), (7, 3, 2.0)):
        ends = cycle_ends(epochs, cycles, ratio)
        fractions = rung_fractions(cycles, ratio)
        # each rung (a fraction of the plan) is first reached at the epoch where a cycle ends
        for end, rung in zip(ends, fractions[-len(ends) :], strict=True):
            assert progress(end, epochs) >= 1000 * rung - 1e-6 > progress(end - 1, epochs)
    f = CosineCycles([100, 300])
    assert f(0) == 1.0 and f(99) < 1e-3 and f(100) == 1.0 and f(299) < 1e-3 and f(300) == 0.0


def test_a_trial_plans_what_fits_in_its_time():
    plan = TrialPlan.from_first_epoch(epoch_s=30, remaining_s=300, max_epochs=100, cycles=1, ratio=3)
    assert plan.epochs == 11 and plan.ends == (11,)
    assert (
        TrialPlan.from_first_epoch(epoch_s=30, remaining_s=300, max_epochs=6, cycles=2, ratio=2).epochs == 6
    )
    assert TrialPlan.from_first_epoch(epoch_s=30, remaining_s=-5, max_epochs=6, cycles=1, ratio=2).epochs == 2


def test_a_budgeted_trial_scores_only_where_a_score_is_read():
    plan = TrialPlan.fixed(20, 2, 3.0)  # cycles end at 7 and 20; the last fifth is 16..20
    assert [e for e in range(1, 21) if plan.scored(e)] == [1, 7, 16, 17, 18, 19, 20]
    # 10 s epochs, 5 s per score: 100 s left after epoch 3 fit 9 more epochs without scoring, fewer with
    free = TrialPlan.from_pace(
        epoch_s=10, eval_s=0, remaining_s=100, max_epochs=99, cycles=1, ratio=3, done=3
    )
    paid = TrialPlan.from_pace(
        epoch_s=10, eval_s=5, remaining_s=100, max_epochs=99, cycles=1, ratio=3, done=3
    )
    assert free.epochs == 13 and paid.epochs < 13
    cost = sum(10 + (10 if paid.scored(e) else 0) for e in range(4, paid.epochs + 1))  # late: two passes
    assert cost <= 100 < cost + 10 + 10 + 10  # and one epoch more would not fit


def test_the_search_plan_fills_the_budget_with_rounds_of_long_trials():
    kw = dict(slots=2, images_per_s=700, train_images=28709, eval_images=3589, reserve_s=60, now=0.0)
    short = plan_search(budget_s=20 * 60, elapsed_s=30, min_epochs=50, **kw)
    assert (short.rounds, short.trials, short.cycles) == (1, 2, 1)
    assert short.search_s == pytest.approx(20 * 60 - 30 - 60)
    assert short.search_deadline == pytest.approx(short.search_s)
    long = plan_search(budget_s=120 * 60, elapsed_s=30, min_epochs=50, **kw)
    assert long.rounds == 3 and long.trials == 6 and long.cycles == 2
    assert long.est_epochs_per_trial >= 50
    assert long.trial_budget_s * long.rounds == pytest.approx(long.search_s)


def _run(cfg: SearchConfig, csv: Path, out: Path):
    from search.pipeline import DataSource, run

    return run(DataSource(csv, synthetic=True), out, cfg)


@pytest.fixture(scope="module")
def synth_csv(tmp_path_factory):
    return write_fer2013_csv(tmp_path_factory.mktemp("plan") / "synth.csv.gz", n_rows=900, seed=5)


@pytest.mark.slow
def test_a_planned_run_ends_within_its_budget_with_snapshot_candidates(tmp_path, ray_local, synth_csv):
    budget = 100.0  # the search window has a 60 s floor: below ~90 s the floor, not the plan, sets the wall
    cfg = SearchConfig(
        name="planned", space=TINY, run_budget_s=budget, max_epochs=400, cycles=2, reduction_factor=2,
        min_epochs_per_trial=100, checkpoints_to_keep=1, merge=SearchConfig().merge.__class__(bases=0),
        precision="auto",
    )  # fmt: skip
    start = time.time()
    result = _run(cfg, synth_csv, tmp_path / "r")
    wall = time.time() - start
    assert 0.8 * budget <= wall <= 1.05 * budget, f"run took {wall:.0f} s for a {budget:.0f} s budget"
    plan = json.loads((tmp_path / "r" / "plan.json").read_text())
    # one round of as many trials as fit side by side, at the width measured to train faster here
    assert plan["rounds"] == 1 and plan["trials"] == plan["slots"] == 2 // plan["threads_per_trial"]
    # "auto" was settled by measurement before the trials started, and they trained at what it chose
    assert plan["precision"] in ("fp32", "bf16")
    # every trial planned its own epochs and ran them to the end of its schedule
    for t in result.trials:
        lines = (tmp_path / "r" / "tune" / f"trial_{t.trial_id}" / "result.json").read_text().splitlines()
        reports = [json.loads(x) for x in lines if x.strip()]
        assert reports[-1]["epoch"] == reports[-1]["planned_epochs"] >= 2
        assert reports[-1]["lr_last_step"] < 1e-3 * reports[0]["lr_last_step"]
        assert reports[0]["config"]["precision"] == plan["precision"]
    # several annealed checkpoints of one trial enter selection
    names = [c.name for c in result.exported.candidates]
    per_trial = {}
    for n in names:
        per_trial.setdefault(n.split("@")[0], []).append(n)
    assert max(len(v) for v in per_trial.values()) >= 2, names
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["candidates"] == len(names)


def test_exact_resume_gives_bit_identical_weights(tmp_path):
    """A trial stopped after epoch 2 and resumed from its checkpoint in a fresh TrialCheckpoint restore
    trains on to the same weights, bit for bit, as the same trial run without a stop."""
    from search.trial import Recipe, TrialCheckpoint, TrialState, build_model, train_one_epoch

    torch.set_num_threads(1)
    rng_data = np.random.default_rng(0)
    x = rng_data.integers(0, 256, (96, 48, 48), dtype=np.uint8)
    y = rng_data.integers(0, 7, 96)
    config = {"arch": "mini_xception", "arch_kwargs": {"width": 0.25}, "lr": 3e-3, "max_epochs": 4,
              "schedule": "cosine", "optimizer": "adam", "dropout": 0.2, "cycles": 2,
              "cycle_ratio": 2}  # fmt: skip

    def fresh():
        torch.manual_seed(0)
        model = build_model("mini_xception", 7, 0.2, {"width": 0.25})
        recipe = Recipe.from_config(config, model.parameters(), y, 7, "cpu", 3)
        return model, recipe, torch.Generator().manual_seed(0), np.random.default_rng(0)

    def epochs(model, recipe, gen, rng, first, last):
        for _ in range(first, last + 1):
            train_one_epoch(model, recipe.opt, x, y, batch_size=32, gen=gen, rng=rng, **recipe.epoch_kwargs())

    model, recipe, gen, rng = fresh()
    epochs(model, recipe, gen, rng, 1, 4)
    straight = {k: v.clone() for k, v in model.state_dict().items()}

    model, recipe, gen, rng = fresh()
    epochs(model, recipe, gen, rng, 1, 2)
    TrialCheckpoint(tmp_path).save(
        model, config, {"epoch": 2}, TrialState(epoch=2, plan=recipe.plan), recipe=recipe, gen=gen, rng=rng
    )
    torch.manual_seed(123)  # the resumed process starts from other RNG states
    model, recipe, gen, rng = fresh()
    state = TrialCheckpoint(tmp_path).restore(model, "cpu", recipe=recipe, gen=gen, rng=rng)
    assert state.epoch == 2
    epochs(model, recipe, gen, rng, 3, 4)
    for k, v in model.state_dict().items():
        assert torch.equal(v, straight[k]), k


def test_pace_is_measured_through_the_training_step_at_each_precision():
    for precision in ("fp32", "bf16"):
        rate = measure_images_per_s(
            "mini_xception", {"width": 0.5}, 1, 8, seconds=0, precision=precision, warmup=0, min_steps=1
        )
        assert 0 < rate < 1e6, (precision, rate)


def test_trials_run_side_by_side_where_the_second_net_is_worth_the_epochs_it_costs():
    from search.spec import WidthValue
    from search.tuning.service import threads_per_trial

    width = WidthValue(epoch_cost=130.0, second_net_gain=2.0)
    n, search_s = 28709, 1050.0  # FER2013's Training set, a 20-minute run's search
    # the AVX2 EPYC at ddce45c: 260 img/s each side by side against 410 wide, 9.5 vs 15 epochs: 5.0 points
    # lost to fewer epochs outweigh a second net's 2.0 -> one trial on both cores
    assert threads_per_trial(260.0, 410.0, 2, 1.0, search_s=search_s, train_images=n, width=width) == 2.0
    # this session's Zen 4 (bf16): 653 each side by side, 985 wide: 24 vs 36 epochs, 1.8 points < 2.0
    assert threads_per_trial(653.0, 985.0, 2, 1.0, search_s=search_s, train_images=n, width=width) == 1.0
    # the same paces with a second net worth less than what the epochs cost: wide
    low = WidthValue(epoch_cost=130.0, second_net_gain=1.0)
    assert threads_per_trial(653.0, 985.0, 2, 1.0, search_s=search_s, train_images=n, width=low) == 2.0
    # a longer budget makes each lost epoch cheaper: the same paces at 40 minutes go side by side even then
    assert threads_per_trial(653.0, 985.0, 2, 1.0, search_s=2 * 1050.0 + 60, train_images=n, width=low) == 1.0
    # side by side faster per trial than wide: always narrow; slots and cpu carry through
    assert threads_per_trial(27.0, 24.0, 4, 2.0, search_s=search_s, train_images=n, width=low) == 2.0
    assert threads_per_trial(1.0, 24.0, 4, 2.0, search_s=search_s, train_images=n, width=width) == 8.0
