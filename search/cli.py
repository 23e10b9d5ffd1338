"""The ``fersearch`` command line."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from data_pipeline.cli import register as register_data_commands


def _run(args: argparse.Namespace) -> int:
    from search.config import SearchSpace, demo_config, quick_config
    from search.run import format_summary, run

    cfg = None
    overrides = {
        "num_samples": args.trials,
        "max_epochs": args.epochs,
        "time_budget_s": args.budget_min * 60 if args.budget_min else None,
        "seed": args.seed,
        "wandb": args.wandb,
        "cpus_per_trial": args.cpus_per_trial,
        "gpus_per_trial": args.gpus_per_trial,
    }
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if overrides or args.archs:
        base = quick_config() if args.data else demo_config()
        if args.archs:
            overrides["space"] = SearchSpace(
                archs=tuple(args.archs.split(",")), lr=base.space.lr, dropout=base.space.dropout
            )
        cfg = base.replace(**overrides)
    out = Path(args.out or f"runs/{time.strftime('%Y%m%d-%H%M%S')}")
    result = run(args.data, out, cfg)
    print(format_summary(result))
    return 0


def _predict(args: argparse.Namespace) -> int:
    from search.export import Predictor
    from search.predict import InputError, iter_inputs

    predictor = Predictor.from_dir(args.export_dir)
    sink = open(args.out, "w") if args.out else sys.stdout
    failed = 0
    batch: list[tuple[str, object]] = []

    def flush() -> None:
        import numpy as np

        if not batch:
            return
        probs = predictor.predict_proba(np.stack([img for _, img in batch]))
        for (name, _), p in zip(batch, probs, strict=True):
            k = int(p.argmax())
            if args.format == "csv":
                sink.write(",".join([name, predictor.classes[k], *(f"{v:.6f}" for v in p)]) + "\n")
            else:
                record = {
                    "input": name,
                    "class": predictor.classes[k],
                    "probabilities": {
                        c: round(float(v), 6) for c, v in zip(predictor.classes, p, strict=True)
                    },
                }
                sink.write(json.dumps(record) + "\n")
        batch.clear()

    if args.format == "csv":
        sink.write(",".join(["input", "class", *predictor.classes]) + "\n")
    try:
        for name, item in iter_inputs(args.inputs):
            if isinstance(item, InputError):
                failed += 1
                print(f"error: {item}", file=sys.stderr)
                continue
            batch.append((name, item))
            if len(batch) >= 256:
                flush()
        flush()
    finally:
        if sink is not sys.stdout:
            sink.close()
    return 1 if failed else 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fersearch", description="Hyperparameter and ensemble search for FER")
    sub = p.add_subparsers(dest="verb", required=True)

    r = sub.add_parser("run", help="prepare data, search, select an ensemble, export, report")
    r.add_argument("--data", help="FER2013 Kaggle CSV (.csv or .csv.gz); default: see README")
    r.add_argument("--out", help="output directory (default runs/<timestamp>)")
    r.add_argument("--budget-min", type=float, help="search wall-time budget in minutes")
    r.add_argument("--trials", type=int, help="number of trials")
    r.add_argument("--epochs", type=int, help="max epochs per trial")
    r.add_argument("--archs", help="comma-separated architectures to search (see models.list_models())")
    r.add_argument("--seed", type=int)
    r.add_argument("--cpus-per-trial", type=float)
    r.add_argument("--gpus-per-trial", type=float, help="fractions allowed, e.g. 0.25")
    r.add_argument("--wandb", choices=["off", "offline", "online"], help="W&B logging (default off)")
    r.set_defaults(func=_run)

    register_data_commands(sub)

    pd = sub.add_parser("predict", help="classify images, folders or a Kaggle CSV with an exported ensemble")
    pd.add_argument("export_dir")
    pd.add_argument("inputs", nargs="+")
    pd.add_argument("--out", help="write here instead of stdout")
    pd.add_argument("--format", choices=["jsonl", "csv"], default="jsonl")
    pd.set_defaults(func=_predict)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from data_pipeline.fer2013 import DataError
    from search.export import ExportError
    from search.predict import InputError

    try:
        return args.func(args)
    except (DataError, ExportError, InputError) as e:
        print(f"fersearch: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
