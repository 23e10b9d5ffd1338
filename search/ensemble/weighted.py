"""The two objects every ensemble stage passes on: a :class:`Candidate` (one trained model on disk) and a
:class:`WeightedEnsemble` (weights over a candidate list). Selection produces the ensemble, comparison
scores it, the merge net is built from candidates, and export writes candidates with their weights."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from search.trial import TrialCheckpoint


@dataclass(frozen=True)
class Candidate:
    """A trained model that may join an ensemble: a checkpoint directory and its identity."""

    name: str
    arch: str
    arch_kwargs: dict
    checkpoint: Path
    val_acc: float
    dropout: float = 0.0

    @classmethod
    def from_checkpoint(cls, name: str, checkpoint: Path) -> Candidate:
        saved = TrialCheckpoint(checkpoint).read()
        kwargs, dropout = saved.config.get("arch_kwargs", {}), float(saved.config.get("dropout", 0.0))
        return cls(name, saved.arch, kwargs, checkpoint, saved.val_acc, dropout)

    def load(self, num_classes: int) -> torch.nn.Module:
        return TrialCheckpoint(self.checkpoint).load_model(num_classes)


@dataclass(frozen=True)
class WeightedEnsemble:
    """Candidate indices with weights summing to 1, fixed on PublicTest; also the combiner, so what was
    chosen is what predicts (AutoGluon's ``fit`` → ``weights_``, then ``predict_proba``)."""

    weights: dict[int, float]
    name: str = ""
    tta: bool = False

    @property
    def members(self) -> list[int]:
        return list(self.weights)

    def combine(self, probs: Sequence[np.ndarray]) -> np.ndarray:
        """Weighted mean of the members' probabilities (any split, in the candidate order)."""
        return sum(w * probs[i] for i, w in self.weights.items())
