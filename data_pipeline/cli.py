"""``fersearch data …`` verbs; ``search.cli`` mounts them with :func:`register`."""

from __future__ import annotations

import argparse
import json

from data_pipeline.config import (
    EQUALIZE,
    FILTER_BY,
    LABEL_MODES,
    ROI_MODES,
    SOURCES,
    VARIANTS,
    AugmentConfig,
    PrepareConfig,
    PreprocessConfig,
    SourceConfig,
    VariantConfig,
)


def _synth(args: argparse.Namespace) -> int:
    from data_pipeline.synth import write_fer2013_csv

    path = write_fer2013_csv(args.out, n_rows=args.rows, seed=args.seed)
    print(f"wrote {args.rows} synthetic faces to {path}")
    return 0


def _fractions(text: str) -> tuple[float, float, float]:
    try:
        parts = tuple(float(x) for x in text.split(","))
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{text!r}: expected three numbers like 0.8,0.1,0.1") from e
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(f"{text!r}: expected three numbers like 0.8,0.1,0.1")
    return parts  # type: ignore[return-value]


def config_from_args(args: argparse.Namespace) -> PrepareConfig:
    return PrepareConfig(
        source=SourceConfig(
            args.source,
            args.path,
            ferplus=args.ferplus,
            label_mode=args.label_mode,
            contempt=args.contempt,
            split_fractions=args.split_fractions,
            class_names=tuple(args.class_names.split(",")) if args.class_names else None,
        ),
        preprocess=PreprocessConfig(
            size=args.size, equalize=args.equalize, roi=args.roi, roi_margin=args.roi_margin
        ),
        variant=VariantConfig(
            name=args.variant,
            per_class=args.per_class,
            filter_by=args.filter_by,
            relabel=not args.no_relabel,
            relabel_min_share=args.relabel_min_share,
            positive=args.positive,
            ovr_size=args.ovr_size,
            ovr_base=args.ovr_base,
            augment=AugmentConfig(),
        ),
        seed=args.seed,
        max_bad_fraction=args.max_bad_fraction,
        parallelism=args.parallelism,
    )


def _prepare(args: argparse.Namespace) -> int:
    from data_pipeline.describe import counts_table
    from data_pipeline.prepare import prepare, prepare_one_vs_rest

    cfg = config_from_args(args)
    if cfg.variant.name == "one-vs-rest" and cfg.variant.positive is None:
        built = list(prepare_one_vs_rest(cfg, args.out).values())
    else:
        built = [prepare(cfg, args.out)]
    for prepared in built:
        m = prepared.manifest
        line = {
            "variant": m.variant,
            "rows_in": m.rows_in,
            "rows_written": m.rows_written,
            "rows_quarantined": m.rows_quarantined,
            "rows_augmented": m.rows_augmented,
            "quarantine_kinds": m.quarantine_kinds,
        }
        print(json.dumps(line))
        print(counts_table(m))
        print(f"prepared {args.path} → {prepared.root}")
    return 0


def _describe(args: argparse.Namespace) -> int:
    from data_pipeline.describe import describe

    for _, text, plot in describe(args.dir, args.out):
        print(text)
        print(f"plot: {plot}\n")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    d = sub.add_parser("data", help="data tools").add_subparsers(dest="data_verb", required=True)
    s = d.add_parser("synth", help="write synthetic FER-like faces in the Kaggle fer2013.csv layout")
    s.add_argument("--out", required=True, help="output .csv or .csv.gz")
    s.add_argument("--rows", type=int, default=6000)
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=_synth)

    pr = d.add_parser("prepare", help="ingest a FER benchmark into Parquet per split (one dir per variant)")
    pr.add_argument("--source", default="fer2013", choices=SOURCES)
    pr.add_argument("--path", required=True, help="Kaggle CSV (.csv/.gz), or a folder / .tar of images")
    pr.add_argument("--out", required=True, help="output root; the variant lands in OUT/<variant>/")
    pr.add_argument("--variant", default="original", choices=VARIANTS)
    pr.add_argument("--ferplus", help="FER+ votes fer2013new.csv (default: next to --path)")
    pr.add_argument("--label-mode", default="majority", choices=LABEL_MODES, help="FER+ labels")
    pr.add_argument("--contempt", default="keep", choices=["keep", "disgust"], help="CK+/folder contempt")
    pr.add_argument(
        "--class-names", metavar="A,B,…",
        help="folder: the classes in label order; index folders 0,1,… take these names (e.g. "
        "Angry,Disgust,Fear,Happy,Sad,Surprise,Neutral for FER2013 written as 0..6)",
    )  # fmt: skip
    pr.add_argument("--split-fractions", type=_fractions, default=(0.8, 0.1, 0.1), metavar="T,V,T")
    pr.add_argument("--size", type=int, default=48, help="output images are SIZE×SIZE")
    pr.add_argument("--equalize", default="none", choices=EQUALIZE)
    pr.add_argument("--roi", default="auto", choices=ROI_MODES, help="Viola-Jones face ROI (paper 000)")
    pr.add_argument("--roi-margin", type=float, default=0.1)
    pr.add_argument("--per-class", type=int, default=8000, help="balanced: training images per class")
    pr.add_argument("--filter-by", default="auto", choices=FILTER_BY)
    pr.add_argument("--no-relabel", action="store_true", help="filtered: do not relabel by FER+ votes")
    pr.add_argument("--relabel-min-share", type=float, default=0.7, help="filtered: FER+ share to relabel")
    pr.add_argument("--positive", help="one-vs-rest: the positive class (default: one dataset per class)")
    pr.add_argument("--ovr-size", type=int, default=6000, help="one-vs-rest: training images per label")
    pr.add_argument("--ovr-base", default="filtered", choices=["filtered", "original"])
    pr.add_argument("--seed", type=int, default=0)
    pr.add_argument("--max-bad-fraction", type=float, default=0.01)
    pr.add_argument("--parallelism", type=int, help="Ray Data blocks (default: Ray decides)")
    pr.set_defaults(func=_prepare)

    de = d.add_parser("describe", help="counts per class and split, and a class-distribution PNG")
    de.add_argument("dir", help="a prepared dataset, or a prepare --out root holding several")
    de.add_argument("--out", help="write the PNGs here (OUT/<variant>/) instead of into the datasets")
    de.set_defaults(func=_describe)
