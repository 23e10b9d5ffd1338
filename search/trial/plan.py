"""Budget planning: a wall-time budget becomes a search plan, and each trial's schedule ends where it ends.

Two halves. The *driver* half (:func:`plan_search`) turns "the whole run must finish in M minutes" into
how many trials run and for how long, from the measured throughput of this machine. The *trial* half
(:class:`TrialPlan`) fixes a trial's epoch count from its own measured first epoch so its learning-rate
schedule decays to zero exactly when its budget ends (Li, Yumer & Ramanan, "Budgeted training", ICLR 2020),
and splits it into cosine cycles whose ends fall on the successive-halving rungs (SGDR, Loshchilov & Hutter
2017): every rung is reached annealed, so a rung comparison is fair, and every rung's checkpoint is a
snapshot-ensemble member (Huang et al. 2017).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from search.trial.tta import TTA_ZOOMS

#: ASHA's time axis for planned trials: ``progress`` runs 0 → PROGRESS_MAX over a trial's planned epochs, so
#: trials of different lengths meet at the same rungs (fractions of their own budget).
PROGRESS = "progress"
PROGRESS_MAX = 1000.0


def cycle_ends(epochs: int, cycles: int, ratio: float) -> tuple[int, ...]:
    """Epochs at which each cosine cycle ends: the last at ``epochs``, each earlier one ``ratio`` times
    shorter in cumulative length (the ASHA rungs at ``epochs / ratio**k``); duplicates collapse."""
    ends = {epochs}
    for k in range(1, max(1, cycles)):
        ends.add(max(1, math.ceil(epochs / ratio**k - 1e-9)))
    return tuple(sorted(ends))


def rung_fractions(cycles: int, ratio: float) -> tuple[float, ...]:
    """Where ASHA's rungs sit on the progress axis, as fractions of a trial's plan (ascending)."""
    return tuple(ratio ** -(cycles - 1 - k) for k in range(max(1, cycles)))


def progress(epoch: int, epochs: int) -> float:
    return PROGRESS_MAX * epoch / max(1, epochs)


class CosineCycles:
    """LR factor per optimiser step: cosine from 1 to 0 within each cycle (the cycle ends in steps).

    A callable object rather than a closure, so ``LambdaLR.state_dict()`` carries the cycle ends and a
    checkpoint restores the schedule exactly.
    """

    def __init__(self, ends_in_steps: list[int]) -> None:
        self.ends = [int(e) for e in ends_in_steps]

    def __call__(self, step: int) -> float:
        start = 0
        for end in self.ends:
            if step < end:
                return 0.5 * (1 + math.cos(math.pi * (step - start) / max(1, end - start)))
            start = end
        return 0.0


@dataclass(frozen=True)
class TrialPlan:
    """A trial's own plan: how many epochs it trains and where its cosine cycles end."""

    epochs: int
    ends: tuple[int, ...]

    @classmethod
    def fixed(cls, epochs: int, cycles: int = 1, ratio: float = 3.0) -> TrialPlan:
        return cls(epochs, cycle_ends(epochs, cycles, ratio))

    @classmethod
    def from_first_epoch(
        cls, *, epoch_s: float, remaining_s: float, max_epochs: int, cycles: int, ratio: float,
        min_epochs: int = 2, done: int = 1,
    ) -> TrialPlan:  # fmt: skip
        """Epochs that fit: ``done`` already trained plus as many more of ``epoch_s`` (the measured pace,
        evaluation included) as fit in ``remaining_s``, capped by ``max_epochs``."""
        return cls.from_pace(
            epoch_s=epoch_s, eval_s=0.0, remaining_s=remaining_s, max_epochs=max_epochs, cycles=cycles,
            ratio=ratio, min_epochs=min_epochs, done=done,
        )  # fmt: skip

    @classmethod
    def from_pace(
        cls, *, epoch_s: float, eval_s: float, remaining_s: float, max_epochs: int, cycles: int,
        ratio: float, min_epochs: int = 2, done: int = 1,
    ) -> TrialPlan:  # fmt: skip
        """The longest plan whose remaining epochs fit in ``remaining_s``: each costs ``epoch_s`` of
        training, and each :meth:`scored` one ``eval_s`` more for PublicTest -- twice that in the late
        epochs, where a new best also takes a PrivateTest pass as a candidate."""
        fit = done + int(max(0.0, remaining_s) // max(epoch_s, 1e-6))
        floor = max(min_epochs, done + 1 if remaining_s > 0 else done)
        epochs = max(floor, min(max_epochs, fit))
        while epochs > floor:
            plan = cls.fixed(epochs, cycles, ratio)
            scoring = sum(
                2 if plan.late(e) or plan.is_cycle_end(e) else 1
                for e in range(done + 1, epochs + 1)
                if plan.scored(e)
            )
            if (epochs - done) * epoch_s + scoring * eval_s <= remaining_s:
                break
            epochs -= 1
        epochs = min(epochs, max(max_epochs, done))
        return cls.fixed(epochs, cycles, ratio)

    def last_cycle_mid(self) -> int:
        """The middle epoch of the last cosine cycle: where a budgeted trial re-plans once more, late enough
        for a steady pace, early enough that a longer or shorter last cycle still anneals smoothly."""
        start = self.ends[-2] if len(self.ends) > 1 else 0
        return (start + self.epochs) // 2

    def with_last_cycle_to(self, epochs: int) -> TrialPlan:
        """This plan with its last cycle ending at ``epochs`` (earlier cycle ends, already trained, kept)."""
        kept = tuple(e for e in self.ends[:-1] if e < epochs)
        return TrialPlan(epochs, (*kept, epochs))

    def late(self, epoch: int) -> bool:
        """In the last fifth of the plan, where the schedule has annealed enough for a snapshot to be an
        ensemble member worth its PrivateTest pass."""
        return 5 * epoch >= 4 * self.epochs

    def scored(self, epoch: int) -> bool:
        """Whether a budgeted trial scores PublicTest after this epoch: the first (a first number, and the
        cost of scoring), every cycle end (ASHA's rungs, annealed candidates) and the late epochs (the
        best of them is a candidate). Nothing else reads a score, so the rest of the epochs only train."""
        return epoch == 1 or self.is_cycle_end(epoch) or self.late(epoch)

    def is_cycle_end(self, epoch: int) -> bool:
        return epoch in self.ends

    def to_dict(self) -> dict:
        return {"epochs": self.epochs, "ends": list(self.ends)}

    @classmethod
    def from_dict(cls, d: dict) -> TrialPlan:
        return cls(int(d["epochs"]), tuple(int(e) for e in d["ends"]))


@dataclass(frozen=True)
class SearchPlan:
    """What the driver decided for a budgeted search, and from what (kept in ``plan.json``)."""

    budget_s: float
    search_s: float
    reserve_s: float
    slots: int
    rounds: int
    trials: int
    trial_budget_s: float
    images_per_s: float
    est_epoch_s: float
    est_epochs_per_trial: int
    cycles: int
    search_deadline: float
    precision: str = "fp32"
    threads_per_trial: float = 1.0

    def describe(self) -> str:
        return (
            f"budget plan: {self.trials} trials ({self.slots} at a time on {self.threads_per_trial:g} "
            f"thread{'s' if self.threads_per_trial != 1 else ''} each, {self.rounds} round"
            f"{'s' if self.rounds > 1 else ''}), ~{self.est_epochs_per_trial} epochs each "
            f"({self.images_per_s:.0f} img/s per trial measured, {self.precision}), "
            f"search {self.search_s / 60:.1f} min, "
            f"{self.reserve_s:.0f} s kept for selection and export"
        )


def plan_search(
    *, budget_s: float, elapsed_s: float, slots: int, images_per_s: float, train_images: int,
    eval_images: int, min_epochs: int, reserve_s: float, cycles: int = 1, now: float | None = None,
    precision: str = "fp32", threads: float = 1.0,
) -> SearchPlan:  # fmt: skip
    """Rounds of ``slots`` parallel trials that fill the search window, each round's trials long enough for
    ``min_epochs`` (fewer, longer trials beat many short ones at a fixed budget; parallel one-thread trials
    beat one trial on all threads on a CPU). ``images_per_s`` is one trial's measured training throughput.
    With more than one round, successive halving can free slots for new trials, so each trial gets at least
    two cosine cycles and its first rung is reached annealed."""
    search_s = max(60.0, budget_s - elapsed_s - reserve_s)
    # evaluation runs at ~3x the training speed (no backward pass); a budgeted trial scores PublicTest in
    # about a fifth of its epochs (TrialPlan.scored), those late ones PrivateTest too
    est_epoch_s = (train_images + 0.45 * eval_images / 3) / max(images_per_s, 1e-6)
    epochs_per_slot = search_s / est_epoch_s
    rounds = max(1, int(epochs_per_slot // max(1, min_epochs)))
    trial_budget_s = search_s / rounds
    return SearchPlan(
        budget_s=budget_s,
        search_s=search_s,
        reserve_s=reserve_s,
        slots=slots,
        rounds=rounds,
        trials=slots * rounds,
        trial_budget_s=trial_budget_s,
        images_per_s=images_per_s,
        est_epoch_s=est_epoch_s,
        est_epochs_per_trial=max(1, int(trial_budget_s // est_epoch_s)),
        cycles=cycles if rounds == 1 else max(2, cycles),
        search_deadline=(time.time() if now is None else now) + search_s,
        precision=precision,
        threads_per_trial=threads,
    )


def selection_reserve_s(
    candidates: int, eval_images: int, images_per_s: float = 2000.0, tta_passes: int = 2 * len(TTA_ZOOMS)
) -> float:
    """Seconds to keep after the search for selection, export and report: a fixed part (Ray shutdown,
    ONNX export, plots) plus, for every candidate, ``tta_passes`` TTA passes over PublicTest and PrivateTest
    and one more for timing and the rest. 10-minute race on FER2013 with flip TTA (one pass: the plain
    probabilities were on disk; 4 candidates, 2 cores): 40 s from the search's end to the run's (log
    times), of which this formula's passes estimate 29 s, leaving about 11 s for the fixed part."""
    return 15.0 + candidates * (tta_passes + 1) * eval_images / images_per_s
