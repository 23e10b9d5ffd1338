"""What a search prints while it runs: one plain line per trial event instead of Ray's status tables.

Each line says where the search stands (trials started/finished of N, budget used) and the best PublicTest
accuracy so far, so a user sees progress without reading Ray's output; ``--verbose`` brings Ray's back.
"""

from __future__ import annotations

import time

from ray.tune import Callback

#: "normal" (these lines), "quiet" (none) or "verbose" (these and Ray's own output); set by the CLI.
MODES = ("normal", "quiet", "verbose")
_mode = {"value": "normal"}


def set_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"output mode: expected one of {MODES}, got {mode!r}")
    _mode["value"] = mode


def mode() -> str:
    return _mode["value"]


def _clock(s: float) -> str:
    return f"{int(s // 60)}:{int(s % 60):02d}"


class ProgressLines(Callback):
    """Prints ``[m:ss/budget] trial k/N …`` lines as trials start, improve the best and end."""

    def __init__(self, total: int, budget_s: float | None) -> None:
        self.total, self.budget_s = total, budget_s
        self.start = time.time()
        self.best: tuple[float, str] | None = None
        self.order: dict[str, int] = {}
        self.ended = 0

    def _say(self, text: str) -> None:
        used = _clock(time.time() - self.start)
        budget = f"/{_clock(self.budget_s)}" if self.budget_s else ""
        print(f"[{used}{budget}] {text}", flush=True)

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        self.order.setdefault(trial.trial_id, len(self.order) + 1)
        cfg = trial.config or {}
        lr = cfg.get("lr")
        hp = f"{cfg.get('arch', '?')}" + (f", lr {lr:.2g}" if isinstance(lr, float) else "")
        self._say(f"trial {self.order[trial.trial_id]}/{self.total} started ({trial.trial_id}: {hp})")

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        acc = result.get("val_acc")
        if isinstance(acc, float) and (self.best is None or acc > self.best[0]):
            self.best = (acc, trial.trial_id)
            running = sum(t.status == "RUNNING" for t in trials)
            self._say(
                f"best PublicTest so far {acc:.4f} (trial {trial.trial_id}, epoch {result.get('epoch')});"
                f" {running} running, {self.ended} ended of {self.total}"
            )

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self.ended += 1
        last = trial.last_result or {}
        acc = last.get("val_acc")
        score = f", PublicTest {acc:.4f}" if isinstance(acc, float) else ""
        self._say(f"trial {trial.trial_id} ended at epoch {last.get('epoch', 0)}{score}")

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self.ended += 1
        self._say(f"trial {trial.trial_id} failed (reason in trials.csv)")

    def on_experiment_end(self, trials, **info) -> None:
        best = f"; best PublicTest {self.best[0]:.4f} (trial {self.best[1]})" if self.best else ""
        self._say(f"search ended: {len(trials)} trials{best}")
