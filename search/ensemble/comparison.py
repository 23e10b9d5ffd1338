"""Which way of combining the trials wins: best single, unweighted top-k (paper 004), greedy selection, the
parallel-merge net (paper 000) and greedy selection that may pick it.

Every combination is chosen on PublicTest; PrivateTest labels are read once, in ``score``, after all
choices are fixed. With test-time augmentation (TTA) each model's probabilities are the mean over the image,
zoomed in and out, and the mirror of each (``search.trial.tta``), as the exported graph computes them.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torchmetrics.functional.classification import multiclass_confusion_matrix

from data_pipeline.fer2013 import load_split
from search.ensemble.selection import Selection, bagged_select, greedy_select, load_val_probs
from search.ensemble.weighted import Candidate, WeightedEnsemble
from search.metrics import accuracy, scores
from search.trial import TEST_FILE, TTA_ZOOMS, VAL_FILE, predict_proba


@dataclass(frozen=True)
class Row:
    strategy: str
    tta: bool
    members: list[str]
    weights: list[float]
    public_acc: float
    private_acc: float
    private_macro_f1: float
    ci95: tuple[float, float]
    ms_per_1000: float


MERGE_NET = "merge net"
GREEDY = "greedy selection"
GREEDY_MERGE = "greedy + merge net"
STUDENT = "distilled student"


def choose(
    val_probs: Sequence[np.ndarray],
    val_y: np.ndarray,
    tta: bool,
    top_k: int = 3,
    merge: int | None = None,
    bags: int = 0,
) -> list[WeightedEnsemble]:
    """The strategies, each fixed from PublicTest probabilities and labels only.

    ``merge`` is the index of the merge net among the candidates, if there is one: the trial strategies
    leave it out; it gets its own row and one greedy selection over every candidate, the merge net included.
    ``bags`` > 0: the greedy rows use bagged selection (that many bags of half the candidates).
    """

    def select(probs: Sequence[np.ndarray]) -> Selection:
        return bagged_select(probs, val_y, n_bags=bags) if bags else greedy_select(probs, val_y)

    trials = [i for i in range(len(val_probs)) if i != merge]
    order = sorted(trials, key=lambda i: (-accuracy(val_probs[i], val_y), i))
    k = min(top_k, len(order))
    greedy = select([val_probs[i] for i in trials])
    chosen = [
        WeightedEnsemble({order[0]: 1.0}, "best single", tta),
        WeightedEnsemble({i: 1.0 / k for i in order[:k]}, f"top-{k} average", tta),
        greedy.ensemble(GREEDY, tta, index=trials),
    ]
    if merge is not None:
        chosen.append(WeightedEnsemble({merge: 1.0}, MERGE_NET, tta))
        chosen.append(select(val_probs).ensemble(GREEDY_MERGE, tta))
    return chosen


def bootstrap_ci(correct: np.ndarray, n: int = 1000, seed: int = 0) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(correct), size=(n, len(correct)))
    means = correct[idx].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def time_per_1000(models: Sequence[torch.nn.Module], images: np.ndarray, tta: bool, n: int = 256) -> float:
    """Milliseconds to classify 1000 images in batches of 32 (paper 004's protocol) with these members,
    timed on the first ``n`` (a TTA row costs six passes: timing all 1000 took seconds of a budgeted run)."""
    batch = images[:n]
    start = time.perf_counter()
    for m in models:
        for i in range(0, len(batch), 32):
            chunk = batch[i : i + 32]
            if tta:
                predict_proba(m, chunk, batch_size=32 * 2 * len(TTA_ZOOMS), tta=TTA_ZOOMS)
            else:
                predict_proba(m, chunk, batch_size=32)
    return 1000 * (time.perf_counter() - start) * 1000 / len(batch)


@dataclass(frozen=True)
class Comparison:
    rows: list[Row]
    strategies: dict[tuple[str, bool], WeightedEnsemble]
    private_confusion: dict[tuple[str, bool], np.ndarray]


def compare(
    candidates: Sequence[Candidate],
    data_root: Path,
    *,
    top_k: int = 3,
    merge: int | None = None,
    bags: int = 0,
) -> Comparison:
    """The comparison table, the strategies by (name, tta), and their PrivateTest confusion matrices.
    ``merge``: index of the merge net in ``candidates`` (see :func:`choose`)."""
    val_x, val_y = load_split(data_root, "PublicTest")
    test_x, _ = load_split(data_root, "PrivateTest", with_labels=False)
    num_classes = int(np.load(candidates[0].checkpoint / VAL_FILE).shape[1])
    models = [c.load(num_classes) for c in candidates]
    plain_val = load_val_probs([c.checkpoint for c in candidates])
    plain_test = [np.load(c.checkpoint / TEST_FILE) for c in candidates]
    tta_val = [predict_proba(m, val_x, tta=TTA_ZOOMS) for m in models]
    tta_test = [predict_proba(m, test_x, tta=TTA_ZOOMS) for m in models]

    strategies = [
        s
        for tta, val in ((False, plain_val), (True, tta_val))
        for s in choose(val, val_y, tta, top_k, merge, bags)
    ]
    _, test_y = load_split(data_root, "PrivateTest")
    rows, chosen, confusion = [], {}, {}
    for s in strategies:
        val_p, test_p = (tta_val, tta_test) if s.tta else (plain_val, plain_test)
        combined = s.combine(test_p)
        sc = scores(combined, test_y)
        members = [models[i] for i in s.weights]
        rows.append(
            Row(
                strategy=s.name,
                tta=s.tta,
                members=[candidates[i].name for i in s.weights],
                weights=[round(w, 4) for w in s.weights.values()],
                public_acc=accuracy(s.combine(val_p), val_y),
                private_acc=sc["acc"],
                private_macro_f1=sc["macro_f1"],
                ci95=bootstrap_ci((combined.argmax(1) == test_y).astype(np.float64)),
                ms_per_1000=time_per_1000(members, test_x, s.tta),
            )
        )
        chosen[(s.name, s.tta)] = s
        confusion[(s.name, s.tta)] = multiclass_confusion_matrix(
            torch.from_numpy(combined), torch.from_numpy(test_y), num_classes=num_classes
        ).numpy()
    return Comparison(rows, chosen, confusion)


def model_row(strategy: str, name: str, model: torch.nn.Module, data_root: Path) -> Row:
    """One model scored as :func:`compare` scores its rows, without TTA: for a model fixed after the
    comparison, such as the student distilled from the exported ensemble (``strategy`` :data:`STUDENT`)."""
    val_x, val_y = load_split(data_root, "PublicTest")
    test_x, _ = load_split(data_root, "PrivateTest", with_labels=False)
    public = accuracy(predict_proba(model, val_x), val_y)
    probs = predict_proba(model, test_x)
    _, test_y = load_split(data_root, "PrivateTest")
    sc = scores(probs, test_y)
    return Row(
        strategy=strategy, tta=False, members=[name], weights=[1.0], public_acc=public,
        private_acc=sc["acc"], private_macro_f1=sc["macro_f1"],
        ci95=bootstrap_ci((probs.argmax(1) == test_y).astype(np.float64)),
        ms_per_1000=time_per_1000([model], test_x, False),
    )  # fmt: skip


def format_rows(rows: Sequence[Row]) -> str:
    head = (
        f"{'strategy':<18} {'TTA':<4} {'PublicTest':>10} {'PrivateTest':>11} {'95% CI':>15} "
        f"{'macro-F1':>8} {'ms/1000':>8}  members"
    )
    lines = [head]
    for r in rows:
        members = ", ".join(f"{m}×{w:.2f}" for m, w in zip(r.members, r.weights, strict=True))
        lines.append(
            f"{r.strategy:<18} {'yes' if r.tta else 'no':<4} {r.public_acc:>10.4f} {r.private_acc:>11.4f} "
            f"{r.ci95[0]:>7.4f}-{r.ci95[1]:.4f} {r.private_macro_f1:>8.4f} {r.ms_per_1000:>8.0f}  {members}"
        )
    return "\n".join(lines)
