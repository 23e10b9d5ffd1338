"""``fersearch data …`` verbs; ``search.cli`` mounts them with :func:`register`."""

from __future__ import annotations

import argparse
import json


def _synth(args: argparse.Namespace) -> int:
    from data_pipeline.synth import write_fer2013_csv

    path = write_fer2013_csv(args.out, n_rows=args.rows, seed=args.seed)
    print(f"wrote {args.rows} synthetic faces to {path}")
    return 0


def _prepare(args: argparse.Namespace) -> int:
    from data_pipeline.fer2013 import prepare_fer2013

    prepared = prepare_fer2013(args.path, args.out, max_bad_fraction=args.max_bad_fraction)
    m = prepared.manifest
    print(json.dumps({k: m[k] for k in ("rows_in", "rows_written", "rows_quarantined", "counts")}, indent=2))
    print(f"prepared {args.path} → {prepared.root}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    d = sub.add_parser("data", help="data tools").add_subparsers(dest="data_verb", required=True)
    s = d.add_parser("synth", help="write synthetic FER-like faces in the Kaggle fer2013.csv layout")
    s.add_argument("--out", required=True, help="output .csv or .csv.gz")
    s.add_argument("--rows", type=int, default=6000)
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=_synth)
    pr = d.add_parser("prepare", help="ingest a FER2013 CSV into Parquet per split with a manifest")
    pr.add_argument("--source", default="fer2013", choices=["fer2013"])
    pr.add_argument("--path", required=True)
    pr.add_argument("--out", required=True)
    pr.add_argument("--max-bad-fraction", type=float, default=0.01)
    pr.set_defaults(func=_prepare)
