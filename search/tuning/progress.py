"""What a search prints while it runs, instead of Ray's status tables and config boxes.

:class:`ProgressView` is a Tune callback: on a terminal it keeps one status line refreshed in place (budget
used, trials running/ended of N, the best PublicTest so far, each running trial's epoch); otherwise it
prints plain lines, no control codes: one per trial event and a status line every minute. Ray's own
reporter is switched to its classic flow at verbosity 0, which prints nothing (``RAY_AIR_NEW_OUTPUT=0``,
as Ray's RLlib examples do for a custom reporter; the new flow prints its config box and TensorBoard hint
at any verbosity). ``--verbose`` brings Ray's output back beside these lines; ``--quiet`` prints none.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

from ray.tune import Callback

from search.trial import FINISHED
from search.tuning.states import CUT, DID_NOT_LEARN, DONE, FAILED, PRUNED, ChanceLevel, pruned_trials

#: "normal" (these lines), "quiet" (none) or "verbose" (these and Ray's own output); set by the CLI.
MODES = ("normal", "quiet", "verbose")
_mode = {"value": "normal"}
#: Seconds between status lines when stdout is not a terminal (a terminal's line is redrawn every second).
PLAIN_EVERY_S = 60.0


def set_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"output mode: expected one of {MODES}, got {mode!r}")
    _mode["value"] = mode


def mode() -> str:
    return _mode["value"]


#: The loggers whose records go to ``<out>/logs/libraries.log`` instead of the terminal (unless --verbose).
LIBRARY_LOGGERS = ("ray", "ray.data", "ray.tune", "ray.train", "optuna", "wandb", "filelock")


def route_logs(log_dir: Path) -> Path | None:
    """Send Ray's, Optuna's and W&B's log records to ``log_dir/libraries.log`` (warnings included: they are
    kept, not filtered); with --verbose they stay on the terminal and nothing is routed.

    The file handler sits on the root logger and the libraries' loggers propagate to it without terminal
    handlers of their own: ``ray.init(configure_logging=False)`` clears the ``ray`` logger's handlers, so a
    handler put there would be gone before Ray's start-up warnings."""
    if mode() == "verbose":
        return None
    import optuna
    import ray.data  # noqa: F401  (Ray Data configures its console handler on import)

    log_dir.mkdir(parents=True, exist_ok=True)
    path = log_dir / "libraries.log"
    handler = logging.FileHandler(path)
    handler.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(min(root.level or logging.INFO, logging.INFO))
    optuna.logging.disable_default_handler()
    for name in LIBRARY_LOGGERS:
        lg = logging.getLogger(name)
        for h in list(lg.handlers):
            if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler):
                lg.removeHandler(h)
        lg.propagate = True
    os.environ["RAY_DATA_DISABLE_PROGRESS_BARS"] = "1"
    return path


def clock(s: float) -> str:
    return f"{int(s // 60)}:{int(s % 60):02d}"


def silence_tune_reporter() -> None:
    """Unless --verbose: Tune's classic reporter at verbosity 0 prints nothing (see the module docstring)."""
    if mode() != "verbose":
        os.environ["RAY_AIR_NEW_OUTPUT"] = "0"


class ProgressView(Callback):
    """Trial events and a status line: ``[m:ss/budget] …``."""

    def __init__(
        self,
        total: int,
        budget_s: float | None,
        pruned_record: str | None = None,
        silent=False,
        chance: ChanceLevel | None = None,
    ):
        self.total, self.budget_s, self.pruned_record, self.silent = total, budget_s, pruned_record, silent
        self.chance = chance  # PublicTest's chance level: a trial that ends at it "did not learn"
        self.live = sys.stdout.isatty()  # the stream itself is looked up per line: Tune pickles callbacks
        self.start = time.time()
        self.best: tuple[float, str, str] | None = None
        self.order: dict[str, int] = {}
        self.running: dict[str, tuple[int, float | None]] = {}
        self.scored: dict[str, tuple[float, int]] = {}  # per trial: last PublicTest score and its epoch
        self.ended: dict[str, int] = {}
        self.last_status = time.time()

    def setup(self, **info) -> None:
        self.start = time.time()
        self._write(f"search started: {self.total} trials")

    def _stamp(self) -> str:
        budget = f"/{clock(self.budget_s)}" if self.budget_s else ""
        return f"[{clock(time.time() - self.start)}{budget}]"

    def _write(self, text: str, *, status: bool = False) -> None:
        if self.silent:
            return
        if self.live:
            end = "" if status else "\n"
            sys.stdout.write(f"\r\x1b[K{self._stamp()} {text}{end}")
        else:
            sys.stdout.write(f"{self._stamp()} {text}\n")
        sys.stdout.flush()

    def status(self) -> str:
        ended = ", ".join(f"{n} {s}" for s, n in sorted(self.ended.items())) or "none ended"
        best = f"; best PublicTest {self.best[0]:.4f} ({self.best[1]}, {self.best[2]})" if self.best else ""
        now = "; ".join(f"{t} epoch {e}{self._last_score(t, e)}" for t, (e, _) in self.running.items())
        return f"{len(self.running)} running, {ended} of {self.total}{best}" + (f" | {now}" if now else "")

    def _last_score(self, trial_id: str, epoch: int) -> str:
        """A budgeted trial scores PublicTest only at some epochs: its last score, and where it was taken."""
        if trial_id not in self.scored:
            return ""
        acc, at = self.scored[trial_id]
        return f" {acc:.3f}" if at == epoch else f" ({acc:.3f} at epoch {at})"

    def on_step_end(self, iteration, trials, **info) -> None:
        every = 1.0 if self.live else PLAIN_EVERY_S
        if time.time() - self.last_status >= every and self.running:
            self.last_status = time.time()
            self._write(self.status(), status=True)

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        self.order.setdefault(trial.trial_id, len(self.order) + 1)
        self.running[trial.trial_id] = (0, None)
        cfg = trial.config or {}
        lr = cfg.get("lr")
        hp = f"{cfg.get('arch', '?')}" + (f", lr {lr:.2g}" if isinstance(lr, float) else "")
        self._write(f"trial {self.order[trial.trial_id]}/{self.total} started ({trial.trial_id}: {hp})")

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        acc = result.get("val_acc")
        acc = float(acc) if isinstance(acc, int | float) and result.get("evaluated", True) else None
        epoch = int(result.get("epoch", 0))
        if acc is not None:
            self.scored[trial.trial_id] = (acc, epoch)
        self.running[trial.trial_id] = (epoch, None)
        if acc is not None and (self.best is None or acc > self.best[0]):
            self.best = (acc, trial.trial_id, str((trial.config or {}).get("arch", "?")))

    def _ended(self, trial, state: str) -> None:
        self.running.pop(trial.trial_id, None)
        self.ended[state] = self.ended.get(state, 0) + 1

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        last = trial.last_result or {}
        stopped = self.pruned_record and trial.trial_id in pruned_trials(self.pruned_record)
        state = PRUNED if stopped else DONE if last.get(FINISHED, True) else CUT
        acc = last.get("val_acc")
        best = last.get("best_val_acc", acc)
        if self.chance and isinstance(best, float) and not self.chance.learned(best, last.get("val_loss")):
            state = DID_NOT_LEARN  # as trials.csv will say; never quoted as the best
            if self.best and self.best[1] == trial.trial_id:
                self.best = None
        self._ended(trial, state)
        score = f", PublicTest {acc:.4f}" if isinstance(acc, float) else ""
        self._write(f"trial {trial.trial_id} {state} at epoch {last.get('epoch', 0)}{score}")

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._ended(trial, FAILED)
        self._write(f"trial {trial.trial_id} failed (reason in trials.csv)")

    def on_experiment_end(self, trials, **info) -> None:
        best = f"; best PublicTest {self.best[0]:.4f} ({self.best[1]}, {self.best[2]})" if self.best else ""
        never = self.total - len(self.order)
        extra = f", {never} never started" if never > 0 else ""
        self._write(f"search ended: {len(self.order)} trials ran{extra}{best}")
