"""Honest trial states: Ray calls a trial that ASHA pruned, one the budget cut and one that finished all
TERMINATED, and Ray's Optuna searcher tells Optuna a pruned trial COMPLETE and a cut one nothing (RUNNING
forever). The scheduler (:mod:`search.tuning.honest`) writes down whom it stopped, so every table and the
Optuna study can say which of these happened. No Ray import here: the tables and the CLI read states.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DONE = "done"
PRUNED = "pruned"
CUT = "cut (budget)"
FAILED = "error"
NEVER_STARTED = "never started"
DID_NOT_LEARN = "did not learn"

#: The file, in the search directory, where the scheduler records the trials it stopped.
PRUNED_FILE = "pruned.jsonl"


@dataclass(frozen=True)
class ChanceLevel:
    """What a model that learned nothing scores on PublicTest: always answering the majority class
    (accuracy), and answering every class with equal probability (log-loss ln K)."""

    majority_rate: float
    uniform_loss: float

    #: A model this many times a uniform guess's log-loss is confidently wrong (diverged), not young.
    DIVERGED = 2.0

    @classmethod
    def of_counts(cls, counts) -> ChanceLevel:
        n = np.asarray(list(counts), dtype=np.float64)
        if not len(n) or n.sum() <= 0:
            return cls(0.0, float("inf"))
        return cls(float(n.max() / n.sum()), math.log(len(n)))

    @classmethod
    def of_labels(cls, labels, num_classes: int) -> ChanceLevel:
        return cls.of_counts(np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes))

    def learned(self, val_acc: float, val_loss: float | None) -> bool:
        """False only on evidence: accuracy no better than always answering the majority class *and* a
        log-loss that is not finite or over twice a uniform guess's (Adam at lr 5 on FER2013: 14.7). A
        briefly trained model near the majority rate, whose loss is still about ln K, is young, not
        failed; without a recorded loss there is no evidence at all."""
        if val_acc > self.majority_rate or val_loss is None:
            return True
        return math.isfinite(val_loss) and val_loss <= self.DIVERGED * self.uniform_loss


def pruned_trials(path: str | Path) -> set[str]:
    path = Path(path)
    if not path.is_file():
        return set()
    return {json.loads(line)["trial_id"] for line in path.read_text().splitlines() if line.strip()}


def count_states(states) -> str:
    """``"3 pruned, 2 done, 1 cut (budget)"``: how many trials are in each state, most first."""
    counts: dict[str, int] = {}
    for state in states:
        counts[state] = counts.get(state, 0) + 1
    return ", ".join(f"{n} {s}" for s, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def trial_state(*, error: bool, epochs: int, finished: bool, pruned: bool, learned: bool) -> str:
    """One trial's state from what Tune and the scheduler recorded (``finished``: the trainable ended its
    plan or stopped early by itself; ``pruned``: the scheduler stopped it at a rung)."""
    if error:
        return FAILED
    if not epochs:
        return NEVER_STARTED
    if not learned:
        return DID_NOT_LEARN
    if pruned:
        return PRUNED
    return DONE if finished else CUT


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
