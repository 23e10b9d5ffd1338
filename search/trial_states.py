"""Honest trial states: Ray calls a trial that ASHA pruned, one the budget cut and one that finished all
TERMINATED, and Ray's Optuna searcher tells Optuna a pruned trial COMPLETE and a cut one nothing (RUNNING
forever). The scheduler here writes down whom it stopped, so every table and the Optuna study can say
which of these happened.
"""

from __future__ import annotations

import json
from pathlib import Path

from ray.tune.schedulers import ASHAScheduler, TrialScheduler
from ray.tune.search.optuna import OptunaSearch

DONE = "done"
PRUNED = "pruned"
CUT = "cut (budget)"
FAILED = "error"
NEVER_STARTED = "never started"
DID_NOT_LEARN = "did not learn"

#: The file, in the search directory, where the scheduler records the trials it stopped.
PRUNED_FILE = "pruned.jsonl"

#: A trial whose PublicTest accuracy is within this of always answering the majority class did not learn.
LEARN_MARGIN = 0.01


def pruned_trials(path: str | Path) -> set[str]:
    path = Path(path)
    if not path.is_file():
        return set()
    return {json.loads(line)["trial_id"] for line in path.read_text().splitlines() if line.strip()}


def did_not_learn(val_acc: float, majority_rate: float) -> bool:
    return val_acc < majority_rate + LEARN_MARGIN


def trial_state(*, error: bool, epochs: int, finished: bool, pruned: bool, learned: bool) -> str:
    """One trial's state from what Tune and the scheduler recorded (``finished``: the trainable returned)."""
    if error:
        return FAILED
    if not epochs:
        return NEVER_STARTED
    if not finished:
        return PRUNED if pruned else CUT
    return DONE if learned else DID_NOT_LEARN


class RecordingASHA(ASHAScheduler):
    """ASHA that appends each trial it stops before ``max_t`` to ``record`` (JSON lines)."""

    def __init__(self, *, record: str, time_attr: str, max_t: float, **kwargs) -> None:
        super().__init__(time_attr=time_attr, max_t=max_t, **kwargs)
        self.record, self.attr, self.limit = record, time_attr, max_t

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        decision = super().on_trial_result(tune_controller, trial, result)
        if decision == TrialScheduler.STOP and result.get(self.attr, 0) < self.limit:
            with open(self.record, "a") as f:
                f.write(json.dumps({"trial_id": trial.trial_id, self.attr: result.get(self.attr)}) + "\n")
        return decision


class HonestOptunaSearch(OptunaSearch):
    """Tells Optuna a pruned trial PRUNED (Ray's searcher says COMPLETE); :func:`close_open_trials` then
    settles the trials the search left RUNNING."""

    def __init__(self, *args, pruned_record: str, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.pruned_record = pruned_record

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        single = isinstance(self.metric, str)
        if single and not error and trial_id in pruned_trials(self.pruned_record):
            result = None  # Ray's searcher tells Optuna PRUNED for a trial that ends without a result
        super().on_trial_complete(trial_id, result=result, error=error)


def close_open_trials(study) -> dict[str, int]:
    """Settle every Optuna trial still RUNNING after the search: one the budget cut after it reported
    becomes PRUNED (single objective), one that never started (or a cut multi-objective one) FAIL."""
    import optuna

    settled = {"pruned": 0, "failed": 0}
    single = len(study.directions) == 1
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        state = optuna.trial.TrialState.PRUNED if single and t.intermediate_values else None
        study.tell(t.number, state=state or optuna.trial.TrialState.FAIL)
        settled["pruned" if state else "failed"] += 1
    return settled
