"""Baseline for `fersearch run`: one plain mini-Xception loop trained for the same wall time.

Adam, cosine LR over the wall-time budget, flip + shift augmentation, all threads, no search, no ensemble.
Prints PublicTest / PrivateTest accuracy and, given ``--run <fersearch run dir>``, the run's ensemble
beside it (same split files, same machine, measured in this process for the baseline).

    python -m benchmarks.single_model_baseline --data ../shared/data/fer2013.csv.gz --minutes 20 \
        --run runs/real-quick
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from data_pipeline.fer2013 import load_split, prepare_fer2013
from search.trainable import build_model, predict_proba, to_tensor


def shift_flip(x: torch.Tensor, gen: torch.Generator, pad: int = 4) -> torch.Tensor:
    n, _, h, w = x.shape
    flip = torch.rand(n, generator=gen) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(3), x)
    padded = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    dx, dy = torch.randint(0, 2 * pad + 1, (2,), generator=gen).tolist()
    return padded[:, :, dy : dy + h, dx : dx + w].contiguous(memory_format=torch.channels_last)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--minutes", type=float, default=20)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--run", help="a fersearch run directory to compare against (reads its summary.json)")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    rng = np.random.default_rng(0)
    root = Path(args.run) / "data" if args.run else Path(tempfile.mkdtemp()) / "data"
    if not (root / "manifest.json").is_file():
        prepare_fer2013(args.data, root)
    x, y = load_split(root, "Training")
    vx, vy = load_split(root, "PublicTest")
    tx, ty = load_split(root, "PrivateTest")

    model = build_model("mini_xception", 7, 0.0)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    budget = args.minutes * 60
    start = time.time()
    epochs = 0.0
    done = False
    while not done:
        model.train()
        order = rng.permutation(len(x))
        for i in range(0, len(order), 64):
            elapsed = time.time() - start
            if elapsed >= budget:
                done = True
                break
            for g in opt.param_groups:
                g["lr"] = args.lr * 0.5 * (1 + math.cos(math.pi * elapsed / budget))
            idx = np.sort(order[i : i + 64])
            loss = F.cross_entropy(model(shift_flip(to_tensor(x[idx]), gen)), torch.from_numpy(y[idx]))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            epochs += len(idx) / len(x)
    train_s = time.time() - start
    pub = float(np.mean(predict_proba(model, vx).argmax(1) == vy))
    priv = float(np.mean(predict_proba(model, tx).argmax(1) == ty))
    print(
        f"single mini_xception loop: {train_s / 60:.1f} min, {epochs:.1f} epochs, "
        f"PublicTest {pub:.4f}, PrivateTest {priv:.4f}"
    )
    if args.run:
        s = json.loads((Path(args.run) / "summary.json").read_text())
        ens = s["scores"]["PrivateTest"]["ensemble"]["acc"]
        best = s["scores"]["PrivateTest"]["best_single"]["acc"]
        print(
            f"fersearch run ({s['wall_s'] / 60:.1f} min wall): ensemble PrivateTest {ens:.4f}, "
            f"best single trial {best:.4f}"
        )
        print(f"ratio ensemble / single loop (PrivateTest accuracy): {ens / priv:.3f}")


if __name__ == "__main__":
    main()
