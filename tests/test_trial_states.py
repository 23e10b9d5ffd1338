"""Honest trial states: pruned, cut by the budget, done and did-not-learn are told apart in trials.csv,
`fersearch trials` and the Optuna study; a search where no trial learned fails with one line."""

from __future__ import annotations

import csv
import json
import time

import optuna
import pytest

from data_pipeline.synth import write_fer2013_csv
from search.spec import ArchSpace, Range, SearchConfig, SearchSpace
from search.tuning import (
    CUT,
    DID_NOT_LEARN,
    DONE,
    FAILED,
    NEVER_STARTED,
    PRUNED,
    PRUNED_FILE,
    ChanceLevel,
    close_open_trials,
    pruned_trials,
    trial_state,
)

TINY = SearchSpace(archs=(ArchSpace("mini_xception", {"width": (0.5,)}),), lr=Range(1e-6, 3e-3, log=True))


def test_states_from_what_tune_and_the_scheduler_recorded():
    base = dict(error=False, epochs=3, finished=True, pruned=False, learned=True)
    assert trial_state(**base) == DONE
    assert trial_state(**{**base, "learned": False}) == DID_NOT_LEARN
    assert trial_state(**{**base, "finished": False, "pruned": True}) == PRUNED
    assert trial_state(**{**base, "finished": False}) == CUT
    assert trial_state(**{**base, "epochs": 0, "finished": False}) == NEVER_STARTED
    assert trial_state(**{**base, "error": True}) == FAILED
    assert trial_state(**{**base, "pruned": True, "learned": False}) == DID_NOT_LEARN
    chance = ChanceLevel.of_counts([25, 25, 50])  # majority 0.5, a uniform guess's loss ln 3
    assert chance.majority_rate == 0.5 and chance.uniform_loss == pytest.approx(1.0986, abs=1e-4)
    assert chance.learned(0.51, 14.7)  # above the majority rate: learned, whatever the loss
    assert chance.learned(0.3, 1.2) and chance.learned(0.3, None)  # young (loss about ln K); no evidence
    assert not chance.learned(0.50, 14.7) and not chance.learned(0.2, 2.3)  # diverged: over 2 ln K
    assert not chance.learned(0.4, float("nan"))


def test_open_optuna_trials_are_settled():
    study = optuna.create_study(direction="maximize")
    cut = study.ask()
    cut.report(0.4, 1)
    study.ask()  # asked, never reported: never started
    done = study.ask()
    study.tell(done, 0.5)
    assert close_open_trials(study) == {"pruned": 1, "failed": 1}
    states = [t.state for t in study.get_trials()]
    assert states == [optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL,
                      optuna.trial.TrialState.COMPLETE]  # fmt: skip


@pytest.fixture(scope="module")
def synth_data(tmp_path_factory, ray_local):
    from search.tuning import load_trial_data, prepare_variants

    root = tmp_path_factory.mktemp("states")
    csv_path = write_fer2013_csv(root / "synth.csv.gz", n_rows=900, seed=5)
    return csv_path, load_trial_data(prepare_variants(csv_path, root / "prep", ("original",)))


def _states(out) -> dict[str, str]:
    with open(out / "trials.csv") as f:
        return {r["trial_id"]: r["status"] for r in csv.DictReader(f)}


@pytest.mark.slow
def test_pruned_and_cut_trials_everywhere(tmp_path, synth_data, capsys):
    from search.cli import main
    from search.trial import SearchPlan
    from search.tuning import run_search, write_trials_table

    _, data = synth_data
    # A budget plan of two cosine cycles: ASHA compares trials at the end of the first (epoch 2 of 4) and
    # stops 1e-6 trials there, annealed (lr at zero); the survivors restart and anneal at their last epoch.
    out = tmp_path / "pruned"
    plan = SearchPlan(
        budget_s=600, search_s=600, reserve_s=0, slots=1, rounds=3, trials=3, trial_budget_s=600,
        images_per_s=1.0, est_epoch_s=1.0, est_epochs_per_trial=4, cycles=2,
        search_deadline=time.time() + 600,
    )  # fmt: skip
    cfg = SearchConfig(
        name="pruned", space=SearchSpace(**{**TINY.__dict__, "lr": (3e-3, 1e-6), "schedule": ("cosine",)}),
        max_epochs=4, reduction_factor=2, max_concurrent_trials=1, seed=3,
        points_to_evaluate=({"lr": 3e-3}, {"lr": 1e-6}, {"lr": 1e-6}),
    )  # fmt: skip
    trials = run_search(cfg, data, out, plan=plan)
    write_trials_table(trials, out / "trials.csv")
    states = _states(out)
    assert sorted(states.values()).count(PRUNED) >= 1, states
    for t in trials:
        lines = (out / "tune" / f"trial_{t.trial_id}" / "result.json").read_text().splitlines()
        last = [json.loads(x) for x in lines if x.strip()][-1]
        assert last["planned_epochs"] == 4
        assert last["lr_last_step"] < 0.01 * float(t.hparams["lr"]), last  # annealed where it ended
        if states[t.trial_id] == PRUNED:
            assert last["epoch"] == 2  # the first rung: the end of the first cycle
    assert all(s in (DONE, PRUNED, DID_NOT_LEARN) for s in states.values()), states
    progress = capsys.readouterr().out  # the live lines name each ended trial's state as trials.csv does
    for trial_id, state in states.items():
        assert f"trial {trial_id} {state} at epoch" in progress, (trial_id, state, progress)
    assert main(["trials", str(out)]) == 0
    printed = capsys.readouterr().out
    assert PRUNED in printed
    study = optuna.load_study(study_name="pruned", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(out / "optuna.journal"))))  # fmt: skip
    optuna_states = [t.state for t in study.get_trials()]
    # Optuna has no "did not learn": every trial the scheduler stopped is PRUNED there
    stopped = pruned_trials(out / PRUNED_FILE)
    assert stopped >= {i for i, s in states.items() if s == PRUNED}
    assert optuna_states.count(optuna.trial.TrialState.PRUNED) == len(stopped)
    assert optuna.trial.TrialState.RUNNING not in optuna_states

    # the budget ends while a long trial runs: cut, not done; Optuna is told it was stopped
    out = tmp_path / "cut"
    cfg = SearchConfig(
        name="cut", space=TINY, max_epochs=200, grace_period=200, max_concurrent_trials=1, seed=3,
        num_samples=2, time_budget_s=15, points_to_evaluate=({"lr": 3e-3},),
    )  # fmt: skip
    trials = run_search(cfg, data, out)
    write_trials_table(trials, out / "trials.csv")
    assert _states(out)[trials[0].trial_id] == CUT
    study = optuna.load_study(study_name="cut", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(out / "optuna.journal"))))  # fmt: skip
    assert optuna.trial.TrialState.RUNNING not in [t.state for t in study.get_trials()]
    assert optuna.trial.TrialState.COMPLETE not in [t.state for t in study.get_trials()]


def test_a_search_without_a_usable_trial_fails_with_one_line(tmp_path):
    from search.tuning import SearchFailed, TrialRecord

    def rec(i: str, status: str, error: str | None = None) -> TrialRecord:
        return TrialRecord(i, "mini_xception", 5.0, 0.0, {}, 0.25, 3, 1, None, status, error)

    e = SearchFailed.of([rec("a", FAILED, "ValueError: loss is nan"), rec("b", DID_NOT_LEARN)], tmp_path)
    msg = str(e)
    assert "\n" not in msg and "1 did not learn, 1 error" in msg and "trial a: ValueError: loss is nan" in msg
    assert not rec("b", DID_NOT_LEARN).usable
