"""Baseline for `fersearch run`: one plain mini-Xception loop trained for the same wall time.

Adam, cosine LR over the wall-time budget, flip + shift augmentation, no search, no ensemble. Prints
PublicTest / PrivateTest accuracy and, given ``--run <fersearch run dir>``, the run's ensemble beside it.
``--save DIR`` keeps the softmax outputs (plain and mirrored) for the budget race, which averages two such
loops; ``--best-epoch`` keeps the weights of the epoch with the best PublicTest accuracy (checked at the end
of every pass) instead of the last ones.

    python -m benchmarks.single_model_baseline --data ../shared/data/fer2013.csv.gz --minutes 20 \
        --run runs/real-quick
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from data_pipeline import DataManifest
from data_pipeline.fer2013 import load_split
from data_pipeline.prepare import prepare_fer2013
from search.trial import augment as augment_batch
from search.trial import build_model, predict_proba, to_tensor


def train_loop(
    x: np.ndarray,
    y: np.ndarray,
    val: tuple[np.ndarray, np.ndarray],
    *,
    minutes: float,
    lr: float = 2e-3,
    seed: int = 0,
    best_epoch: bool = False,
    augment: str = "shift",
    smoothing: float = 0.0,
    precision: str = "fp32",
    batch_size: int = 64,
    arch: str = "mini_xception",
) -> tuple[torch.nn.Module, dict]:
    """The plain loop: train for ``minutes`` of wall time (cosine on elapsed time); returns the model and
    what it did (epochs, wall seconds, the PublicTest accuracy it was chosen at). The defaults are the
    user's script; ``augment`` (``shift``: flip + 4-px shift, or a number: the trials' affine augmentation
    at that strength), ``smoothing``, ``precision``, ``batch_size`` and ``arch`` let the recipe race
    (``benchmarks/recipe_race.py``) vary one thing at a time on the same loop."""
    strength_kind = (1.0, "shift") if augment == "shift" else (float(augment), "affine")
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    vx, vy = val
    model = build_model(arch, 7, 0.0)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    budget = minutes * 60
    start = time.time()
    epochs, done, passes = 0.0, False, 0
    best: tuple[float, dict | None, float] = (-1.0, None, 0.0)
    while not done:
        model.train()
        order = rng.permutation(len(x))
        for i in range(0, len(order), batch_size):
            elapsed = time.time() - start
            if elapsed >= budget:
                done = True
                break
            for g in opt.param_groups:
                g["lr"] = lr * 0.5 * (1 + math.cos(math.pi * elapsed / budget))
            idx = np.sort(order[i : i + batch_size])
            xb = to_tensor(x[idx])
            xb = augment_batch(xb, gen, *strength_kind)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                logits = model(xb)
            loss = F.cross_entropy(logits.float(), torch.from_numpy(y[idx]).long(), label_smoothing=smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            epochs += len(idx) / len(x)
        passes += 1
        if best_epoch and (not done or passes > 1):
            acc = float(np.mean(predict_proba(model, vx).argmax(1) == vy))
            if acc > best[0]:
                best = (acc, copy.deepcopy(model.state_dict()), epochs)
    wall = time.time() - start
    public = float(np.mean(predict_proba(model, vx).argmax(1) == vy))
    chosen_epochs = epochs
    if best_epoch and best[1] is not None and best[0] > public:
        model.load_state_dict(best[1])
        public, chosen_epochs = best[0], best[2]
    return model, {"epochs": round(epochs, 2), "chosen_epochs": round(chosen_epochs, 2), "wall_s": wall,
                   "public_acc": public}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", help="FER2013 CSV (prepared into a temporary folder unless --data-root)")
    ap.add_argument("--data-root", help="an already prepared data folder (manifest.json + Parquet splits)")
    ap.add_argument("--minutes", type=float, default=20)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--best-epoch", action="store_true", help="keep the best PublicTest epoch's weights")
    ap.add_argument("--augment", default="shift", help="shift (flip + 4-px shift) or the trials' strength")
    ap.add_argument("--smoothing", type=float, default=0.0, help="label smoothing")
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument(
        "--arch", default="mini_xception", help="a registered model (the user's script: mini_xception)"
    )
    ap.add_argument("--save", help="write PublicTest/PrivateTest probabilities (plain, mirrored) + JSON")
    ap.add_argument("--run", help="a fersearch run directory to compare against (reads its summary.json)")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    if args.data_root:
        root = Path(args.data_root)
    else:
        root = Path(args.run) / "data" if args.run else Path(tempfile.mkdtemp()) / "data"
        if DataManifest.try_read(root) is None:
            prepare_fer2013(args.data, root)
    x, y = load_split(root, "Training")
    vx, vy = load_split(root, "PublicTest")
    tx, _ = load_split(root, "PrivateTest", with_labels=False)
    model, info = train_loop(
        x,
        y,
        (vx, vy),
        minutes=args.minutes,
        lr=args.lr,
        seed=args.seed,
        best_epoch=args.best_epoch,
        augment=args.augment,
        smoothing=args.smoothing,
        precision=args.precision,
        batch_size=args.batch_size,
        arch=args.arch,
    )
    probs = {
        "PublicTest": predict_proba(model, vx),
        "PublicTest_flip": predict_proba(model, np.ascontiguousarray(vx[:, :, ::-1])),
        "PrivateTest": predict_proba(model, tx),
        "PrivateTest_flip": predict_proba(model, np.ascontiguousarray(tx[:, :, ::-1])),
    }
    info.update(augment=args.augment, smoothing=args.smoothing, precision=args.precision,
                batch_size=args.batch_size, lr=args.lr, threads=args.threads, seed=args.seed,
                arch=args.arch)  # fmt: skip
    _, ty = load_split(root, "PrivateTest")  # labels only now, for the final figure
    info["private_acc"] = float(np.mean(probs["PrivateTest"].argmax(1) == ty))
    if args.save:
        out = Path(args.save)
        out.mkdir(parents=True, exist_ok=True)
        for name, p in probs.items():
            np.save(out / f"{name}.npy", p)
        (out / "result.json").write_text(json.dumps(info, indent=2) + "\n")
    print(
        f"single {args.arch} loop: {info['wall_s'] / 60:.1f} min, {info['epochs']:.1f} epochs, "
        f"PublicTest {info['public_acc']:.4f}, PrivateTest {info['private_acc']:.4f}"
    )
    if args.run:
        s = json.loads((Path(args.run) / "summary.json").read_text())
        ens = s["scores"]["PrivateTest"]["ensemble"]["acc"]
        best = s["scores"]["PrivateTest"]["best_single"]["acc"]
        print(
            f"fersearch run ({s['wall_s'] / 60:.1f} min wall): ensemble PrivateTest {ens:.4f}, "
            f"best single trial {best:.4f}"
        )
        print(f"ratio ensemble / single loop (PrivateTest accuracy): {ens / info['private_acc']:.3f}")


if __name__ == "__main__":
    main()
