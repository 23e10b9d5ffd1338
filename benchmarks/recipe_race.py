"""The recipe race: which training recipe of one mini-Xception trial scores best at a given wall time?

Each recipe is the plain loop of ``benchmarks/single_model_baseline.py`` with one thing changed
(augmentation, label smoothing, learning rate, batch size), trained for ``--minutes`` of wall time on
``--threads`` threads; ``--side-by-side 2`` runs two recipes at once, one thread each, as a budgeted search
runs its trials. A recipe is ``AUGMENT:SMOOTHING:LR:BATCH[:ARCH[:SEED]]`` (``shift:0:2e-3:64`` is the user's
script; ``0.4:0.1:2e-3:64`` the trials' affine augmentation at strength 0.4 with smoothing 0.1;
``shift:0:2e-3:64:vgg_fer11:1`` another net, seed 1). PublicTest is reported for choosing (``fersearch
portfolio build`` reads these records); PrivateTest only for the table. At the end every pair of the run's
recipes is scored as an ensemble (probabilities averaged with their mirrors'), which says what a second net
of the same or another architecture is worth at that budget.

    python -m benchmarks.recipe_race --data ../shared/data/fer2013.csv.gz --minutes 10 \
        --recipes shift:0:2e-3:64 1.0:0:2e-3:64 --precision bf16 --side-by-side 2
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.machine import load, machine_info
from data_pipeline import DataManifest
from data_pipeline.fer2013 import load_split
from data_pipeline.prepare import prepare_fer2013

RESULTS = Path(__file__).parent / "results" / "recipe_race.json"


def parse_recipe(text: str, seed: int = 0) -> dict:
    """``AUGMENT:SMOOTHING:LR:BATCH[:ARCH[:SEED]]`` → the loop's arguments (missing fields: the user's
    script's, the seed ``seed``)."""
    parts = text.split(":")
    defaults = ["shift", "0", "2e-3", "64", "mini_xception", str(seed)]
    augment, smoothing, lr, batch, arch, run_seed = parts + defaults[len(parts) :]
    if augment != "shift":
        float(augment)
    return {"augment": augment, "smoothing": float(smoothing), "lr": float(lr), "batch_size": int(batch),
            "arch": arch, "seed": int(run_seed)}  # fmt: skip


def _launch(root: Path, recipe: dict, minutes: float, threads: int, precision: str, out: Path):
    cmd = [sys.executable, "-m", "benchmarks.single_model_baseline", "--data-root", str(root),
           "--minutes", str(minutes), "--threads", str(threads), "--seed", str(recipe["seed"]),
           "--save", str(out), "--augment", recipe["augment"], "--smoothing", str(recipe["smoothing"]),
           "--lr", str(recipe["lr"]), "--batch-size", str(recipe["batch_size"]), "--arch", recipe["arch"],
           "--precision", precision]  # fmt: skip
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL)


def pair_scores(outs: list[Path], labels: dict[str, np.ndarray]) -> list[tuple[int, int, dict[str, float]]]:
    """Every pair of saved runs as a two-net ensemble: plain and mirrored probabilities of both averaged."""

    def probs(out: Path, split: str) -> np.ndarray:
        return np.load(out / f"{split}.npy") + np.load(out / f"{split}_flip.npy")

    return [
        (
            i,
            j,
            {
                s: float(np.mean((probs(outs[i], s) + probs(outs[j], s)).argmax(1) == y))
                for s, y in labels.items()
            },
        )
        for i, j in itertools.combinations(range(len(outs)), 2)
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="FER2013 Kaggle CSV (.csv or .csv.gz)")
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument(
        "--recipes", nargs="+", required=True, help="AUGMENT:SMOOTHING:LR:BATCH[:ARCH[:SEED]] each"
    )
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--side-by-side", type=int, default=1, help="recipes trained at once, one thread each")
    ap.add_argument("--threads", type=int, default=2, help="threads of a recipe trained alone")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", help="working folder (default: a temporary one)")
    ap.add_argument("--results", default=str(RESULTS))
    args = ap.parse_args()
    recipes = [parse_recipe(r, args.seed) for r in args.recipes]
    work = Path(args.work or tempfile.mkdtemp(prefix="recipe_race-"))
    root = work / "data"
    if DataManifest.try_read(root) is None:
        prepare_fer2013(Path(args.data), root)
    path = Path(args.results)
    records = json.loads(path.read_text()) if path.is_file() else []
    width = max(1, args.side_by_side)
    threads = 1 if width > 1 else args.threads
    machine = machine_info()
    saved: list[Path] = []
    for start in range(0, len(recipes), width):
        group = recipes[start : start + width]
        before = load()
        t = time.time()
        outs = [work / f"r{start + i}-{time.strftime('%H%M%S')}" for i in range(len(group))]
        procs = [
            _launch(root, r, args.minutes, threads, args.precision, out)
            for r, out in zip(group, outs, strict=True)
        ]
        for p in procs:
            p.wait()
        for recipe, out in zip(group, outs, strict=True):
            info = json.loads((out / "result.json").read_text())
            rec = {**machine, "minutes": args.minutes, "threads": threads, "side_by_side": len(group),
                   "precision": args.precision, "load_before": before,
                   "wall_s": round(time.time() - t, 1), **recipe, "epochs": info["epochs"],
                   "public_acc": info["public_acc"], "private_acc": info["private_acc"]}  # fmt: skip
            records.append(rec)
            saved.append(out)
            print(
                f"{recipe['arch']} seed {recipe['seed']} {recipe['augment']:>5} ls {recipe['smoothing']:.2f} "
                f"lr {recipe['lr']:g} bs "
                f"{recipe['batch_size']}: {info['epochs']:.1f} epochs, PublicTest {info['public_acc']:.4f}, "
                f"PrivateTest {info['private_acc']:.4f} ({args.minutes:g} min, {threads} thread(s), "
                f"{args.precision}, load before {before})",
                flush=True,
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(records, indent=2) + "\n")  # each group's records as soon as it ends
    print(f"records: {path}")
    if len(saved) > 1:
        labels = {s: load_split(root, s)[1] for s in ("PublicTest", "PrivateTest")}  # after every recipe ran
        for i, j, acc in pair_scores(saved, labels):
            a, b = recipes[i], recipes[j]
            print(
                f"pair {i}+{j} ({a['arch']} s{a['seed']} {a['augment']} + {b['arch']} s{b['seed']} "
                f"{b['augment']}, mirrors averaged): PublicTest {acc['PublicTest']:.4f}, "
                f"PrivateTest {acc['PrivateTest']:.4f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
