"""Greedy forward ensemble selection with replacement (Caruana et al., ICML 2004).

Selection sees validation (PublicTest) probabilities and labels only: its inputs are arrays, and the
loader below opens nothing but ``PublicTest_probs.npy``. PrivateTest is scored later, in ``report``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from search.trainable import VAL_FILE


@dataclass(frozen=True)
class Selection:
    """Members (indices into the candidate list) with their integer counts and normalised weights."""

    counts: tuple[int, ...]
    val_score: float
    history: tuple[float, ...]

    @property
    def members(self) -> list[int]:
        return [i for i, c in enumerate(self.counts) if c > 0]

    @property
    def weights(self) -> np.ndarray:
        c = np.asarray(self.counts, dtype=np.float64)
        return c / c.sum()

    def combine(self, probs: Sequence[np.ndarray]) -> np.ndarray:
        """Weighted average of the members' probabilities (any split, same candidate order)."""
        w = self.weights
        return sum(w[i] * probs[i] for i in self.members)


def accuracy(probs: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(probs.argmax(axis=1) == labels))


def greedy_select(
    val_probs: Sequence[np.ndarray], val_labels: np.ndarray, *, max_size: int = 25, init_best: int = 1
) -> Selection:
    """Add, one at a time and with replacement, the candidate that most improves validation accuracy.

    Starts from the ``init_best`` best single candidates; returns the ensemble at the size that scored best
    (the earliest such size). Ties go to a candidate already in the ensemble, then the lower index, so the
    result is deterministic.
    """
    if not val_probs:
        raise ValueError("greedy_select needs at least one candidate")
    n = len(val_probs)
    shape = val_probs[0].shape
    for i, p in enumerate(val_probs):
        if p.shape != shape or p.shape[0] != len(val_labels):
            raise ValueError(
                f"candidate {i} has shape {p.shape}, expected {shape} with {len(val_labels)} rows"
            )
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


def load_val_probs(checkpoints: Sequence[Path]) -> list[np.ndarray]:
    """PublicTest probabilities of each candidate; never opens anything else."""
    return [np.load(Path(c) / VAL_FILE) for c in checkpoints]
