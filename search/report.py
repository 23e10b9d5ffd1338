"""Scores for the final report (accuracy, macro-F1 through torchmetrics)."""

from __future__ import annotations

import numpy as np
import torch
from torchmetrics.functional.classification import multiclass_accuracy, multiclass_f1_score


def scores(probs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    p, y = torch.from_numpy(probs), torch.from_numpy(labels)
    k = probs.shape[1]
    return {
        "acc": float(multiclass_accuracy(p, y, num_classes=k, average="micro")),
        "macro_f1": float(multiclass_f1_score(p, y, num_classes=k, average="macro")),
    }
