"""The parallel-merge net (paper 000, Model B) over a finished search's top trials: each base's and the
merged net's PublicTest / PrivateTest accuracy, and each base's PublicTest accuracy before and after
phase 2 (paper 000 reports the bases gaining ~2-3% there). Epochs are chosen on PublicTest; PrivateTest
is scored once, at the end.

    python -m benchmarks.merge_net --search runs/real-quick --phase1 3 --phase2 2
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from data_pipeline.fer2013 import load_split
from search.ensemble import train_merge
from search.metrics import accuracy
from search.pipeline import find_candidates
from search.spec import MergeConfig
from search.trial import TEST_FILE, VAL_FILE


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--search", required=True, help="a search directory (tune/ and data/)")
    ap.add_argument("--bases", type=int, default=3)
    ap.add_argument("--phase1", type=int, default=3, help="epochs with the bases frozen")
    ap.add_argument("--phase2", type=int, default=2, help="epochs training everything")
    ap.add_argument("--phase2-lr", type=float, default=1e-4)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    root = Path(args.search).resolve()
    cands = find_candidates(root, args.bases)
    cfg = MergeConfig(bases=args.bases, phase1_epochs=args.phase1, phase2_epochs=args.phase2,
                      phase2_lr=args.phase2_lr)  # fmt: skip
    start = time.perf_counter()
    result = train_merge(cands, root / "data", Path(tempfile.mkdtemp(prefix="fer_merge_")), cfg)
    wall = time.perf_counter() - start

    _, val_y = load_split(root / "data", "PublicTest")
    _, test_y = load_split(root / "data", "PrivateTest")
    print(
        f"\nmerge net over the top {len(cands)} trials of {root}: phase 1 {args.phase1} epochs "
        f"(lr {cfg.lr:g}), phase 2 {args.phase2} epochs (lr {cfg.phase2_lr:g}); {wall:.0f} s, "
        f"{args.threads} threads"
    )
    print(f"{'model':<22} {'PublicTest':>10} {'PrivateTest':>11} {'PublicTest after phase 2':>25}")
    for c, after in zip(cands, result.bases_after_phase2, strict=True):
        val, test = np.load(c.checkpoint / VAL_FILE), np.load(c.checkpoint / TEST_FILE)
        print(
            f"base {c.name:<17} {accuracy(val, val_y):>10.4f} {accuracy(test, test_y):>11.4f} {after:>25.4f}"
        )
    avg_val = sum(np.load(c.checkpoint / VAL_FILE) for c in cands)
    avg_test = sum(np.load(c.checkpoint / TEST_FILE) for c in cands)
    print(
        f"{'average of the bases':<22} {accuracy(avg_val, val_y):>10.4f} {accuracy(avg_test, test_y):>11.4f}"
    )
    merged_test = np.load(result.checkpoint / TEST_FILE)
    print(f"{'merge net':<22} {result.val_acc:>10.4f} {accuracy(merged_test, test_y):>11.4f}"
          f"   (kept: phase {result.best_phase} epoch {result.best_epoch})")  # fmt: skip


if __name__ == "__main__":
    main()
