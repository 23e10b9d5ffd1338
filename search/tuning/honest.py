"""Ray Tune's ASHA and Optuna searcher, told the truth: the scheduler records whom it stopped at a rung
(:data:`search.tuning.states.PRUNED_FILE`), and the searcher tells Optuna such a trial PRUNED."""

from __future__ import annotations

import json

from ray.tune.schedulers import ASHAScheduler, TrialScheduler
from ray.tune.search.optuna import OptunaSearch

from search.tuning.states import pruned_trials


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
