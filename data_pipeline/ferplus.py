"""FER+ votes (``fer2013new.csv``, row-aligned with ``fer2013.csv``) and Barsoum et al.'s label rules.

Votes are kept in this project's class order (FER2013's seven, then Contempt), followed by ``unknown`` and
``NF`` (not a face). Both rules first drop single votes as outliers, as the FER+ paper does:

* *majority*: an emotion needs more than half of the remaining votes; rows whose winner is unknown / NF,
  or that have no winner (ties, spread votes), are dropped.
* *probability*: the top emotions (ties together, at most three) are taken until they cover 75% of the
  votes; the row is dropped when they cover no more than half, or unknown / NF leads. The soft label is
  the taken votes normalised over the eight emotions.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data_pipeline.dataset import SPLITS, DataError

HEADER: tuple[str, ...] = (
    "Usage", "Image name", "neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear",
    "contempt", "unknown", "NF",
)
# FER+ vote column → index in (CLASSES8 + unknown + NF).
_TO_OURS = np.array([6, 3, 5, 4, 0, 1, 2, 7, 8, 9])
N_EMOTIONS = 8
UNKNOWN, NF = 8, 9


@dataclass(frozen=True)
class Votes:
    """Per data row: Usage, image name, votes ``int (n, 10)`` in our order, and rows that are malformed."""

    path: Path
    usage: list[str]
    names: list[str]
    votes: np.ndarray
    bad: dict[int, str]

    def info(self) -> dict:
        """The file's known quirks, counted, so nothing about it is handled silently."""
        good = np.array([i not in self.bad for i in range(len(self.usage))], dtype=bool)
        sums = self.votes.sum(1)
        return {
            "votes_file": str(self.path),
            "rows": len(self.usage),
            "rows_without_image_name": sum(1 for n in self.names if not n),
            "rows_vote_sum_not_10": int(((sums != 10) & good).sum()),
            "rows_nf_all_votes": int(((self.votes[:, NF] == sums) & (sums > 0) & good).sum()),
            "rows_malformed": len(self.bad),
        }


def read_votes(path: Path) -> Votes:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file (FER+ votes, fer2013new.csv)")
    try:
        with open(path, newline="") as f:
            lines = list(csv.reader(f))
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read as CSV: {e}") from e
    if not lines:
        raise DataError(f"{path}: file is empty, expected header {','.join(HEADER)}")
    if tuple(h.strip() for h in lines[0]) != HEADER:
        raise DataError(f"{path}: row 0 (header) is {','.join(lines[0])!r}, expected {','.join(HEADER)!r}")
    n = len(lines) - 1
    votes = np.zeros((n, 10), dtype=np.int64)
    usage, names, bad = [""] * n, [""] * n, {}
    for i, rec in enumerate(lines[1:]):
        if len(rec) != len(HEADER):
            bad[i] = f"FER+ votes row has {len(rec)} fields, expected {len(HEADER)}"
            continue
        usage[i], names[i] = rec[0].strip(), rec[1].strip()
        try:
            v = [int(x) for x in rec[2:]]
        except ValueError:
            bad[i] = f"FER+ votes are not all integers: {','.join(rec[2:])}"
            continue
        if min(v) < 0 or sum(v) == 0:
            bad[i] = f"FER+ votes must be ≥ 0 with at least one vote: {','.join(rec[2:])}"
            continue
        votes[i, _TO_OURS] = v
    return Votes(path, usage, names, votes, bad)


def check_aligned(votes: Votes, fer_path: Path, fer_usage: list[str | None]) -> None:
    """Fail unless the votes file has one row per FER2013 row with the same ``Usage``."""
    if len(votes.usage) != len(fer_usage):
        raise DataError(
            f"{votes.path}: {len(votes.usage)} data rows but {fer_path} has {len(fer_usage)}; "
            "the FER+ votes must be row-aligned with the FER2013 CSV"
        )
    mismatched = [
        i
        for i, (a, b) in enumerate(zip(votes.usage, fer_usage, strict=True))
        if i not in votes.bad and b in SPLITS and a != b
    ]
    if mismatched:
        i = mismatched[0]
        raise DataError(
            f"{votes.path}: row {i}: Usage {votes.usage[i]!r} but row {i} of {fer_path} has "
            f"{fer_usage[i]!r} ({len(mismatched)} rows differ); the files are not row-aligned"
        )


def _clean(votes: np.ndarray) -> np.ndarray:
    v = votes.astype(np.float64)
    v[v <= 1] = 0
    return v


def majority(votes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Winner index per row (into CLASSES8 + unknown + NF; -1 without a strict majority) and whether
    the row has one."""
    v = _clean(votes)
    s = v.sum(1)
    top = v.argmax(1)
    has = (v.max(1) * 2 > s) & (s > 0)
    return np.where(has, top, -1), has


def majority_labels(votes: np.ndarray) -> tuple[np.ndarray, list[str | None]]:
    """Hard labels by the majority rule (-1 = dropped) and each dropped row's reason."""
    top, _ = majority(votes)
    v = _clean(votes)
    reasons: list[str | None] = [None] * len(votes)
    for i in np.flatnonzero((top < 0) | (top >= N_EMOTIONS)):
        total = int(votes[i].sum())
        if top[i] == NF:
            reasons[i] = f"FER+ majority: not a face (NF {votes[i, NF]} of {total} votes)"
        elif top[i] == UNKNOWN:
            reasons[i] = f"FER+ majority: unknown ({votes[i, UNKNOWN]} of {total} votes)"
        else:
            reasons[i] = (
                f"FER+ majority: no emotion has more than half of the votes (top {int(v[i].max())} of "
                f"{int(v[i].sum())} after dropping single votes)"
            )
    return np.where(top < N_EMOTIONS, top, -1).astype(np.int8), reasons


def _probability_row(raw: np.ndarray) -> np.ndarray | None:
    v = [float(x) if x > 1 else 0.0 for x in raw]
    total = sum(v)
    if total == 0:
        return None
    taken = [0.0] * len(v)
    covered, count, stop = 0.0, 0, False
    while covered < 0.75 * total and count < 3 and not stop:
        peak = max(v)
        for i, x in enumerate(v):
            if x != peak:
                continue
            taken[i], v[i] = peak, 0.0
            covered += peak
            count += 1
            if i >= N_EMOTIONS:
                stop = True
                if sum(taken) > peak:
                    taken[i] = 0.0
                    count -= 1
                break
    if sum(taken) <= 0.5 * total or count > 3 or int(np.argmax(taken)) >= N_EMOTIONS:
        return None
    emo = np.array(taken[:N_EMOTIONS])
    return emo / emo.sum()


def probability_labels(votes: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[str | None]]:
    """Soft labels ``float32 (n, 8)``, hard labels (argmax; -1 = dropped) and dropped rows' reasons."""
    n = len(votes)
    soft = np.zeros((n, N_EMOTIONS), dtype=np.float32)
    labels = np.full(n, -1, dtype=np.int8)
    reasons: list[str | None] = [None] * n
    for i in range(n):
        dist = _probability_row(votes[i])
        if dist is None:
            reasons[i] = (
                f"FER+ probability: unknown/NF lead or the top ≤3 emotions hold ≤ half of the votes "
                f"({','.join(map(str, votes[i]))})"
            )
        else:
            soft[i] = dist
            labels[i] = int(np.argmax(dist))
    return soft, labels, reasons
