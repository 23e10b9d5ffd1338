"""Greedy forward ensemble selection with replacement (Caruana et al., ICML 2004), plain or bagged.

Selection sees validation (PublicTest) probabilities and labels only: its inputs are arrays, and the
loader below opens nothing but ``PublicTest_probs.npy``. PrivateTest is scored later, in ``report``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from search.ensemble.weighted import WeightedEnsemble
from search.metrics import accuracy
from search.trial import VAL_FILE


@dataclass(frozen=True)
class Selection:
    """What a selection run found: integer counts per candidate (with replacement), the PublicTest score
    of the chosen size and the score after each step."""

    counts: tuple[int, ...]
    val_score: float
    history: tuple[float, ...]

    @property
    def members(self) -> list[int]:
        return [i for i, c in enumerate(self.counts) if c > 0]

    def ensemble(
        self, name: str = "", tta: bool = False, index: Sequence[int] | None = None
    ) -> WeightedEnsemble:
        """The counts as weights; ``index`` maps the positions selected over back to candidate indices."""
        total = float(sum(self.counts))
        where = list(index) if index is not None else list(range(len(self.counts)))
        return WeightedEnsemble({where[i]: self.counts[i] / total for i in self.members}, name, tta)


def _check_candidates(caller: str, val_probs: Sequence[np.ndarray], val_labels: np.ndarray) -> None:
    if len(val_probs) == 0:
        raise ValueError(f"{caller} needs at least one candidate")
    shape = val_probs[0].shape
    for i, p in enumerate(val_probs):
        if p.ndim != 2 or p.shape != shape or p.shape[0] != len(val_labels):
            raise ValueError(
                f"candidate {i} has shape {p.shape}, expected {shape} with {len(val_labels)} rows"
            )


def greedy_select(
    val_probs: Sequence[np.ndarray], val_labels: np.ndarray, *, max_size: int = 25, init_best: int = 1
) -> Selection:
    """Add, one at a time and with replacement, the candidate that most improves validation accuracy.

    Starts from the ``init_best`` best single candidates; returns the ensemble at the size that scored best
    (the earliest such size). Ties go to a candidate already in the ensemble, then the lower index, so the
    result is deterministic.
    """
    _check_candidates("greedy_select", val_probs, val_labels)
    n = len(val_probs)
    stacked = np.stack([p.astype(np.float64) for p in val_probs])
    singles = [accuracy(p, val_labels) for p in stacked]
    order = sorted(range(n), key=lambda i: (-singles[i], i))
    counts = np.zeros(n, dtype=np.int64)
    for i in order[: max(1, min(init_best, n))]:
        counts[i] += 1
    running = stacked[counts > 0].sum(axis=0)
    size = int(counts.sum())
    history = [accuracy(running / size, val_labels)]
    best_counts, best_score = counts.copy(), history[0]
    while size < max_size:
        scores = [accuracy((running + stacked[i]) / (size + 1), val_labels) for i in range(n)]
        pick = max(range(n), key=lambda i: (scores[i], counts[i] > 0, -i))
        counts[pick] += 1
        running += stacked[pick]
        size += 1
        history.append(scores[pick])
        if scores[pick] > best_score:
            best_counts, best_score = counts.copy(), scores[pick]
    return Selection(tuple(int(c) for c in best_counts), float(best_score), tuple(history))


def bagged_select(
    val_probs: Sequence[np.ndarray],
    val_labels: np.ndarray,
    *,
    n_bags: int = 20,
    fraction: float = 0.5,
    max_size: int = 25,
    init_best: int = 1,
    seed: int = 0,
) -> Selection:
    """Bagged ensemble selection (Caruana et al. 2004): ``greedy_select`` on ``n_bags`` random subsets.

    Each bag draws ``fraction`` of the candidates without replacement (rounded half up, at least one) with a
    ``numpy`` Generator seeded by ``seed``, runs ``greedy_select`` on them, and adds its counts to the
    candidates it drew. The ensemble is the sum of the bags' counts, so a candidate that only wins by chance
    on one bag's subset is outweighed by the others. ``val_score`` is the accuracy of that combined ensemble
    on ``val_labels``; ``history`` is its accuracy after each bag. With one bag and ``fraction=1`` this is
    ``greedy_select``. Deterministic for a given seed.
    """
    _check_candidates("bagged_select", val_probs, val_labels)
    if n_bags < 1:
        raise ValueError(f"n_bags must be at least 1, got {n_bags}")
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    n = len(val_probs)
    k = min(n, max(1, int(np.floor(fraction * n + 0.5))))
    rng = np.random.default_rng(seed)
    stacked = np.stack([p.astype(np.float64) for p in val_probs])
    counts = np.zeros(n, dtype=np.int64)
    history = []
    for _ in range(n_bags):
        drawn = np.sort(rng.choice(n, size=k, replace=False))
        bag = greedy_select([val_probs[i] for i in drawn], val_labels, max_size=max_size, init_best=init_best)
        counts[drawn] += np.asarray(bag.counts, dtype=np.int64)
        history.append(accuracy(np.tensordot(counts, stacked, axes=1) / counts.sum(), val_labels))
    return Selection(tuple(int(c) for c in counts), float(history[-1]), tuple(history))


def load_val_probs(checkpoints: Sequence[Path]) -> list[np.ndarray]:
    """PublicTest probabilities of each candidate; never opens anything else."""
    return [np.load(Path(c) / VAL_FILE) for c in checkpoints]
