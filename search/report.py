"""Final report: the only place that reads PrivateTest labels and PrivateTest predictions."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torchmetrics.functional.classification import multiclass_accuracy, multiclass_f1_score

from data_pipeline.fer2013 import load_split
from search.ensemble import Selection
from search.trainable import TEST_FILE, VAL_FILE


def scores(probs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    p, y = torch.from_numpy(probs), torch.from_numpy(labels)
    k = probs.shape[1]
    return {
        "acc": float(multiclass_accuracy(p, y, num_classes=k, average="micro")),
        "macro_f1": float(multiclass_f1_score(p, y, num_classes=k, average="macro")),
    }


def final_report(data_root: Path, candidates: Sequence[Path], selection: Selection) -> dict[str, dict]:
    """PublicTest and PrivateTest scores of the best single candidate (index 0) and of the ensemble."""
    _, val_y = load_split(data_root, "PublicTest")
    _, test_y = load_split(data_root, "PrivateTest")
    out: dict[str, dict] = {}
    for split, file, labels in (("PublicTest", VAL_FILE, val_y), ("PrivateTest", TEST_FILE, test_y)):
        probs = [np.load(Path(c) / file) for c in candidates]
        out[split] = {
            "best_single": scores(probs[0], labels),
            "ensemble": scores(selection.combine(probs), labels),
        }
    return out
