"""Scores shared by trials, selection and the final report (accuracy, macro-F1 through torchmetrics)."""

from __future__ import annotations

import numpy as np
import torch
from torchmetrics.functional.classification import multiclass_accuracy, multiclass_f1_score


def accuracy(probs: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy of class probabilities (or logits) against integer labels."""
    return float(np.mean(probs.argmax(axis=1) == labels))


def scores(probs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    p, y = torch.from_numpy(probs), torch.from_numpy(labels)
    k = probs.shape[1]
    return {
        "acc": float(multiclass_accuracy(p, y, num_classes=k, average="micro")),
        "macro_f1": float(multiclass_f1_score(p, y, num_classes=k, average="macro")),
    }


def per_class(confusion: np.ndarray, classes: list[str] | tuple[str, ...]) -> list[dict]:
    """Precision, recall and F1 per class from a confusion matrix (rows true, columns predicted).

    Computed from the matrix rather than re-scored so the table and the plotted matrix cannot disagree; a
    class never predicted gets precision 0 (not NaN), which is what it is worth to a user.
    """
    m = np.asarray(confusion, dtype=np.float64)
    tp = np.diag(m)
    predicted, support = m.sum(0), m.sum(1)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    return [
        {
            "class": c,
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
            "predicted": int(predicted[i]),
        }
        for i, c in enumerate(classes)
    ]
