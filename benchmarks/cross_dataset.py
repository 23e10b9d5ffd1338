"""Cross-dataset transfer as paper 001 (Tables 6-7): a FER2013-trained model fine-tuned on CK+ (all layers,
lower learning rate) against the same architecture trained on CK+ from scratch, and the FER2013 model
applied to CK+ as it is. CK+ splits are subject-independent; each split seed is a different assignment
of subjects, so the table shows the mean and spread over seeds. Epochs are chosen on the CK+ validation
split; the test split is scored once per run, after.

    python -m benchmarks.cross_dataset --ckplus ../shared/data/ckplus.tar \
        --pretrained runs/real-quick/tune/trial_XXXX/checkpoint_00000N
    python -m benchmarks.cross_dataset --ckplus ../shared/data/ckplus.tar \
        --fer2013 ../shared/data/fer2013.csv.gz --pretrain-epochs 5      # pretrains first
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

from data_pipeline.config import PrepareConfig, SourceConfig
from data_pipeline.fer2013 import load_split
from data_pipeline.prepare import prepare, prepare_fer2013
from search.metrics import accuracy
from search.trial import FitConfig, TrialCheckpoint, build_model, fit, load_checkpoint_model, predict_proba


def pretrain(csv: Path, work: Path, arch: str, epochs: int) -> torch.nn.Module:
    prepared = prepare_fer2013(csv, work / "fer2013")
    model = build_model(arch, len(prepared.classes), 0.1)
    r = fit(model, prepared.root, FitConfig(epochs=epochs, lr=3e-3, batch_size=64))
    print(f"pretrained {arch} on FER2013 for {epochs} epochs: PublicTest {r.val_acc:.4f} ({r.seconds:.0f} s)")
    return r.model


def subjects(root: Path, split: str) -> set[str]:
    return set(pq.read_table(root / f"{split}.parquet", columns=["subject"])["subject"].to_pylist())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckplus", required=True, help="CK+48 folder or .tar")
    ap.add_argument("--pretrained", help="a trial checkpoint dir trained on FER2013 (model.safetensors)")
    ap.add_argument("--fer2013", help="FER2013 CSV to pretrain on when --pretrained is not given")
    ap.add_argument("--pretrain-epochs", type=int, default=5)
    ap.add_argument("--arch", default="mini_xception", help="architecture when pretraining here")
    ap.add_argument("--seeds", type=int, default=3, help="subject-split seeds")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--lr", type=float, default=1e-3, help="from-scratch learning rate")
    ap.add_argument("--finetune-lr", type=float, default=1e-4)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="fer_xdata_"))
    start = time.perf_counter()

    if args.pretrained:
        base = load_checkpoint_model(args.pretrained)
        saved = TrialCheckpoint(Path(args.pretrained)).read()
        print(f"pretrained: {args.pretrained} ({saved.arch}, FER2013 PublicTest {saved.best_val_acc:.4f})")
        arch_name, arch_kwargs = saved.arch, saved.config.get("arch_kwargs") or {}
    elif args.fer2013:
        base = pretrain(Path(args.fer2013), work, args.arch, args.pretrain_epochs)
        arch_name, arch_kwargs = args.arch, {}
    else:
        ap.error("give --pretrained or --fer2013")
    arch = type(base).__name__

    rows: dict[str, list[tuple[float, float, int]]] = {"FER2013 model, no CK+ training": [], "scratch": [],
                                                       "fine-tuned": []}  # fmt: skip
    for seed in range(args.seeds):
        # Contempt -> Disgust as paper 001: the 7 FER2013 classes, so the pretrained classifier is kept.
        source = SourceConfig("ckplus", Path(args.ckplus), contempt="disgust")
        ck = prepare(PrepareConfig(source, seed=seed), work / f"ckplus_{seed}")
        split_subjects = [subjects(ck.root, s) for s in ("Training", "PublicTest", "PrivateTest")]
        assert not any(a & b for i, a in enumerate(split_subjects) for b in split_subjects[i + 1 :])
        counts = {s: sum(ck.manifest.counts[s].values()) for s in ("Training", "PublicTest", "PrivateTest")}
        val_x, val_y = load_split(ck.root, "PublicTest")

        runs = {
            "scratch": fit(build_model(arch_name, len(ck.classes), 0.1, arch_kwargs), ck.root,
                           FitConfig(epochs=args.epochs, lr=args.lr, seed=seed)),
            "fine-tuned": fit(copy.deepcopy(base), ck.root,
                              FitConfig(epochs=args.epochs, lr=args.finetune_lr, seed=seed)),
        }  # fmt: skip
        # Scored on the test split only now, with every choice made.
        test_x, test_y = load_split(ck.root, "PrivateTest")
        zero = base.eval()
        rows["FER2013 model, no CK+ training"].append(
            (accuracy(predict_proba(zero, val_x), val_y), accuracy(predict_proba(zero, test_x), test_y), 0)
        )
        for name, r in runs.items():
            rows[name].append((r.val_acc, accuracy(predict_proba(r.model, test_x), test_y), r.best_epoch))
        print(
            f"seed {seed}: subjects {[len(s) for s in split_subjects]}, images {counts}; test "
            + ", ".join(f"{k} {v[-1][1]:.4f}" for k, v in rows.items()),
            flush=True,
        )

    print(f"\nCK+48, contempt->disgust, subject-independent 80/10/10, {arch}, {args.seeds} split seeds, "
          f"{args.epochs} epochs, lr scratch {args.lr:g} / fine-tune {args.finetune_lr:g}")  # fmt: skip
    print(f"{'model':<32} {'val acc':>8} {'test acc (mean ± sd)':>21} {'per seed':>24} {'best epoch':>10}")
    for name, rs in rows.items():
        val = statistics.mean(r[0] for r in rs)
        tests = [r[1] for r in rs]
        sd = statistics.stdev(tests) if len(tests) > 1 else 0.0
        per = " ".join(f"{t:.3f}" for t in tests)
        epochs = " ".join(str(r[2]) for r in rs) if name != "FER2013 model, no CK+ training" else "-"
        print(f"{name:<32} {val:>8.4f} {statistics.mean(tests):>13.4f} ± {sd:.4f} {per:>24} {epochs:>10}")
    ft = np.mean([r[1] for r in rows["fine-tuned"]])
    sc = np.mean([r[1] for r in rows["scratch"]])
    print(f"fine-tuned / scratch test accuracy: {ft / sc:.3f}   wall {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
