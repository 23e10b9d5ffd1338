"""The ``fersearch`` command line."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from data_pipeline.cli import register as register_data_commands


def apply_overrides(args: argparse.Namespace, base):
    """Apply the budget/resource flags shared by ``run`` and ``search`` to a base config."""
    import dataclasses

    from search.spec import ArchSpace, Resources, SpecError

    if args.budget_min is not None and not args.budget_min > 0:
        raise SpecError(f"--budget-min: expected minutes > 0, got {args.budget_min:g}")
    changes = {
        "num_samples": args.trials,
        "max_epochs": args.epochs,
        "time_budget_s": args.budget_min * 60 if args.budget_min else None,
        "seed": args.seed,
        "wandb": args.wandb,
        "wandb_project": args.wandb_project,
    }
    changes = {k: v for k, v in changes.items() if v is not None}
    if args.cpus_per_trial is not None or args.gpus_per_trial is not None:
        changes["resources"] = Resources(
            cpu=args.cpus_per_trial if args.cpus_per_trial is not None else base.resources.cpu,
            gpu=args.gpus_per_trial if args.gpus_per_trial is not None else base.resources.gpu,
        )
    if args.archs:
        archs = tuple(ArchSpace(a) for a in args.archs.split(","))
        changes["space"] = dataclasses.replace(base.space, archs=archs)
    return base.replace(**changes) if changes else base


def _default_out(prefix: str) -> Path:
    """Under ``$FERSEARCH_STORAGE`` when set (a path every cluster node mounts), else ``./runs``."""
    return (
        Path(os.environ.get("FERSEARCH_STORAGE", ".")) / "runs" / f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}"
    )


def _check_resources(args: argparse.Namespace, cfg) -> None:
    from search.spec import check_resources

    res = apply_overrides(args, cfg).resources
    check_resources(res.cpu, res.gpu, getattr(args, "address", None))


def _connect(args: argparse.Namespace) -> None:
    if getattr(args, "address", None):
        from search.tuning import init_ray

        init_ray(args.address)


def _run(args: argparse.Namespace) -> int:
    import dataclasses

    from search.pipeline import format_summary, resolve_data, run
    from search.spec import check_data, demo_config, quick_config
    from search.tuning import route_logs

    started = time.time()
    check_data(args.data)
    _check_resources(args, quick_config())
    out = Path(args.out) if args.out else _default_out("run")
    source = resolve_data(args.data, out.resolve())
    route_logs(out / "logs")
    _connect(args)
    preset = args.preset or ("demo" if source.synthetic else "quick")
    base = demo_config() if preset == "demo" else quick_config()
    print(f"preset {preset} on {'the embedded synthetic set' if source.synthetic else source.path}")
    cfg = apply_overrides(args, base)
    if args.budget_min:  # on `run` the budget is the whole run's, planned (search/plan.py)
        cfg = cfg.replace(run_budget_s=args.budget_min * 60, time_budget_s=base.time_budget_s)
    if args.distill:
        cfg = cfg.replace(distill=dataclasses.replace(cfg.distill, enabled=True))
    result = run(source, out, cfg, started=started)
    print(format_summary(result))
    return 0


def _portfolio_build(args: argparse.Namespace) -> int:
    from search.spec import PORTFOLIO_FILE, Portfolio, build_portfolio

    out = Path(args.out) if args.out else PORTFOLIO_FILE
    base = Portfolio.read(out) if out.is_file() else Portfolio.read()
    portfolio = build_portfolio(args.sources, base=base)
    portfolio.write(out)
    print(
        f"portfolio: {len(portfolio.recipes)} recipes from {len(args.sources)} source(s); second net worth "
        f"{portfolio.width.second_net_gain:+.2f} points, fewer epochs cost "
        f"{portfolio.width.epoch_cost:.0f}/E → {out}"
    )
    return 0


def _search(args: argparse.Namespace) -> int:
    from search.spec import check_data, load_spec
    from search.tuning import resume, route_logs, search

    if args.resume:
        route_logs(Path(args.resume) / "logs")
        _connect(args)
        result = resume(args.resume)
    else:
        if not args.spec:
            raise SystemExit("fersearch search: give a spec.yaml or --resume DIR")
        cfg, extra = load_spec(args.spec)
        cfg = apply_overrides(args, cfg)
        data = args.data or extra.get("data")
        if not data:
            raise SystemExit(f"fersearch search: no data: set `data:` in {args.spec} or pass --data")
        check_data(data, "--data" if args.data else f"{args.spec}: data:")
        _check_resources(args, cfg)
        out = Path(args.out or extra.get("out") or _default_out(cfg.name))
        route_logs(out / "logs")
        _connect(args)
        result = search(cfg, data, out)
    print(format_trials([_row_strings(r) for r in _rows(result.out_dir)], "val_acc"))
    print(f"search directory: {result.out_dir}")
    return 0


def _rows(out_dir: Path) -> list[dict]:
    from search.tuning import read_trials

    return read_trials(out_dir)


def _row_strings(row: dict) -> dict:
    return {k: ("" if v is None else str(v)) for k, v in row.items()}


def format_trials(rows: list[dict], sort: str, columns: tuple[str, ...] | None = None) -> str:
    cols = columns or (
        "trial_id", "status", "arch", "lr", "dropout", "optimizer", "batch_size", "schedule", "val_acc",
        "val_macro_f1", "best_epoch", "epochs", "latency_ms", "params",
    )  # fmt: skip
    cols = tuple(c for c in cols if any(r.get(c) for r in rows))

    def key(r: dict):
        try:
            return -float(r.get(sort) or "-inf")
        except ValueError:
            return r.get(sort) or ""

    def fmt(v: str) -> str:
        try:
            f = float(v)
        except ValueError:
            return v
        return v if f.is_integer() and "." not in v else f"{f:.4g}"

    ordered = sorted(rows, key=key)
    cells = [[fmt(r.get(c, "")) for c in cols] for r in ordered]
    widths = [max([len(c), *(len(row[i]) for row in cells)]) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    errors = [f"  {r['trial_id']}: {r['error']}" for r in ordered if r.get("error")]
    return "\n".join(lines + (["errors:", *errors] if errors else []))


def _export(args: argparse.Namespace) -> int:
    import dataclasses

    from search.ensemble import format_rows
    from search.pipeline import select_and_export
    from search.spec import check_search_dir
    from search.trial import tta_label
    from search.tuning import search_config

    check_search_dir(args.search_dir)
    cfg = search_config(Path(args.search_dir))
    merge = cfg.merge if args.merge_bases is None else dataclasses.replace(cfg.merge, bases=args.merge_bases)
    bags = cfg.ensemble_bags if args.bags is None else args.bags
    top_k = cfg.top_k if args.top_k is None else args.top_k
    result = select_and_export(args.search_dir, top_k, args.out, merge=merge, bags=bags)
    print(format_rows(result.rows))
    tta = f" with {tta_label()}" if result.chosen.tta else ""
    print(f"exported {result.chosen.name}{tta} ({len(result.chosen.weights)} members) to {result.export_dir}")
    mode = args.wandb or ("auto" if args.wandb_project else "off")
    if mode != "off":
        from search.serving import log_export_artifact

        project = args.wandb_project or cfg.wandb_project
        run_dir = log_export_artifact(
            result.export_dir, project=project, report=result.report, mode=None if mode == "auto" else mode
        )
        print(f"logged the export to W&B project {project} (run {run_dir})")
    return 0


def _trials(args: argparse.Namespace) -> int:
    from search.spec import check_search_dir

    check_search_dir(args.dir)
    print(format_trials(_rows(Path(args.dir)), args.sort))
    return 0


def _predict(args: argparse.Namespace) -> int:
    """Every record (errors and skipped files too) goes to the output; errors and skips are also named
    on stderr, and a summary line counts each status. Exit 1 on an error or when nothing was
    classified (``--strict``: on anything but ``ok``), else 0."""
    import csv

    from search.serving import STATUSES, Predictor, csv_header, predict_paths

    predictor = Predictor.from_dir(args.export_dir)
    roi = _roi_arg(args)
    sink = open(args.out, "w", newline="") if args.out else sys.stdout
    writer = csv.writer(sink, lineterminator="\n") if args.format == "csv" else None
    counts = dict.fromkeys(STATUSES, 0)
    try:
        if writer:
            writer.writerow(csv_header(predictor.classes))
        found = predict_paths(
            predictor, args.inputs, roi=roi, every=args.every, crop=args.crop, detector=args.detector
        )
        for result in found:
            counts[result.status] += 1
            if result.status in ("error", "skipped"):
                print(f"{result.status}: {result.error}", file=sys.stderr)
            if writer:
                writer.writerow(result.csv_row(predictor.classes))
            else:
                sink.write(json.dumps(result.to_json()) + "\n")
            sink.flush()
    finally:
        if sink is not sys.stdout:
            sink.close()
    print(
        f"fersearch predict: {sum(counts.values())} records: {counts['ok']} ok, {counts['no_face']} no face, "
        f"{counts['error']} error, {counts['skipped']} skipped",
        file=sys.stderr,
    )
    if not counts["ok"]:
        print("fersearch: nothing classified (no input, or no face found in any input)", file=sys.stderr)
    if args.strict and sum(counts.values()) > counts["ok"]:
        return 1
    return 1 if counts["error"] or not counts["ok"] else 0


def _distill(args: argparse.Namespace) -> int:
    from search.serving import DistillError, DistillOptions, distill

    try:
        temperatures = tuple(float(t) for t in args.temperature.split(","))
    except ValueError:
        raise DistillError(
            f"--temperature must be numbers separated by commas, got {args.temperature!r}"
        ) from None
    options = DistillOptions(
        arch=args.arch, budget_s=60 * args.budget_min, temperatures=temperatures, seed=args.seed,
        warm_start=not args.from_scratch,
    )  # fmt: skip
    result = distill(args.source, options, out=args.out, data=args.data)
    tried = ", ".join(
        f"T={r['temperature']:g}: {r['public_acc']:.4f} @{r['epoch']}/{r['epochs']}" for r in result.tried
    )
    print(
        f"fersearch distill: {result.arch} student at T={result.temperature:g}, epoch {result.epoch}: "
        f"PublicTest {result.public_acc:.4f} (teacher {result.teacher_public_acc:.4f}; tried {tried}) "
        f"→ {result.export_dir}"
    )
    return 0


def _interrupt(*_) -> None:
    raise KeyboardInterrupt


def _serve(args: argparse.Namespace) -> int:
    """Deploy the export on Ray Serve and serve until Ctrl-C (or SIGTERM), then shut Serve down."""
    import signal
    import tempfile

    from search.serving import ServeOptions, ensure_port_free, verify_export
    from search.serving.serve import start, stop
    from search.tuning import init_ray, route_logs

    verify_export(args.export_dir)  # a damaged export is one line here, not a replica's traceback
    roi = _roi_arg(args)
    options = ServeOptions(
        host=args.host, port=args.port, replicas=args.replicas, max_batch=args.max_batch,
        max_bytes=int(args.max_mb * 2**20), roi=roi, crop=args.crop, detector=args.detector,
    )  # fmt: skip
    options.check()
    ensure_port_free(options.host, options.port)  # before Ray starts: its proxy would fail out of sight
    route_logs(Path(tempfile.gettempdir()) / "fersearch-serve")
    init_ray(args.address)
    url = start(args.export_dir, options)
    print(
        f"fersearch serve: {args.export_dir} at {url} (POST /predict, GET /healthz, GET /model); "
        f"{options.replicas} replica(s), batches of up to {options.max_batch}; Ctrl-C stops",
        flush=True,
    )
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        print("fersearch serve: stopping", file=sys.stderr)
    finally:
        stop()
    return 0


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be ≥ 1, got {value}")
    return value


def _wandb_flags(p: argparse.ArgumentParser) -> None:
    """One spelling on every verb that can log to W&B."""
    p.add_argument(
        "--wandb", choices=["off", "offline", "online"],
        help="W&B logging (default: off; offline needs no account, `wandb sync` uploads later)",
    )  # fmt: skip
    p.add_argument("--wandb-project", metavar="NAME", help="W&B project (default: the spec's, fersearch)")


def budget_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--budget-min",
        type=float,
        help="wall-time budget in minutes: on `run` the whole run (data, search, ensemble, export), planned "
        "from this machine's measured throughput; on `search` the search's own",
    )
    p.add_argument("--trials", type=int, help="number of trials (default: the preset's or spec's)")
    p.add_argument("--epochs", type=int, help="max epochs per trial (default: the preset's or spec's)")
    p.add_argument("--archs", help="comma-separated architectures to search (see models.list_models())")
    p.add_argument("--seed", type=int, help="search seed (default: the preset's or spec's, 0)")
    p.add_argument("--cpus-per-trial", type=float, help="CPUs per trial (default: the preset's or spec's, 1)")
    p.add_argument(
        "--gpus-per-trial", type=float,
        help="GPUs per trial, fractions allowed, e.g. 0.25 (default: the preset's or spec's, 0)",
    )  # fmt: skip
    _wandb_flags(p)
    p.add_argument(
        "--address",
        help="connect to a running Ray cluster (auto, ray://host:10001, host:6379) instead of local",
    )
    out = p.add_mutually_exclusive_group()
    out.add_argument("--verbose", action="store_true", help="also show Ray's own status tables and logs")
    out.add_argument("--quiet", action="store_true", help="no progress lines (for scripts)")


def _crop_flags(p: argparse.ArgumentParser) -> None:
    """How photos become faces, one spelling on ``predict`` and ``serve``: ROI, crop, detector."""
    roi = p.add_mutually_exclusive_group()
    roi.add_argument(
        "--roi",
        choices=["auto", "face", "none"],
        help="Viola-Jones face ROI: auto = on images whose shorter side exceeds 96 px; "
        "default: as the export records, else auto",
    )
    roi.add_argument("--no-roi", action="store_true", help="classify each whole image resized (= --roi none)")
    p.add_argument(
        "--crop",
        choices=["face-box", "eyes-mouth"],
        help="how a found face is cropped: face-box = the detector's box with a FER2013-like margin, "
        "eyes-mouth = paper 000's ROI; default: as the export records its training crops",
    )
    p.add_argument(
        "--detector",
        choices=["yunet+haar", "yunet", "haar"],
        help="face detector of the face-box crop: yunet = landmark-based (eyes, nose, mouth), haar = "
        "Viola-Jones, yunet+haar = YuNet's faces framed by both; default: yunet+haar where YuNet's wheel "
        "(yuface) is installed, else haar",
    )


def _roi_arg(args: argparse.Namespace) -> bool | str:
    """``--no-roi`` / ``--roi MODE`` as ``predict_paths`` and ``ServeOptions`` take it (True: as recorded)."""
    return False if args.no_roi else (args.roi or True)


class _Help(argparse.RawDescriptionHelpFormatter):
    """Shows each flag's default when it has one (argparse's own formatter also prints "default: None")."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if "%(default)" in text or "default" in text or default in (None, False, argparse.SUPPRESS):
            return text
        return f"{text} (default: %(default)s)"


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", _Help)
        super().__init__(*args, **kwargs)


EXAMPLES = {
    "run": """examples:
  fersearch run                                   # embedded synthetic set (or ./data/fer2013.csv), seconds
  fersearch run --data fer2013.csv.gz             # quick preset: the whole run in 25 minutes
  fersearch run --data fer2013.csv.gz --budget-min 60 --wandb offline
  fersearch run --data fer2013.csv.gz --budget-min 40 --distill   # + one fast student of the ensemble""",
    "search": """examples:
  fersearch search search/spec/example.yaml --data fer2013.csv.gz --out runs/s1
  fersearch search --resume runs/s1               # finish an interrupted search exactly""",
    "export": """examples:
  fersearch export runs/s1                        # compare ensembles on PublicTest, export the best
  fersearch export runs/s1 --merge-bases 0 --bags 5 --wandb offline""",
    "trials": """examples:
  fersearch trials runs/s1 --sort epochs""",
    "portfolio": """examples:
  fersearch portfolio build runs/run-1 runs/run-2 benchmarks/results/recipe_race.json \\
      benchmarks/results/budget_race.json""",
    "distill": """examples:
  fersearch distill runs/run-1                    # student of runs/run-1/export → runs/run-1/student
  fersearch distill runs/run-1/export --data runs/run-1/data --arch convnet4 --budget-min 5 \\
      --temperature 2,4""",
    "serve": """examples:
  fersearch serve runs/s1/export                  # http://127.0.0.1:8000, one replica
  curl -s --data-binary @face.png -H 'Content-Type: image/png' http://127.0.0.1:8000/predict
  curl -s -F image=@photo.jpg http://127.0.0.1:8000/predict
  fersearch serve runs/s1/export --host 0.0.0.0 --replicas 2 --address auto""",
    "predict": """examples:
  fersearch predict runs/s1/export photo.jpg faces/ clip.mp4 --out results.csv --format csv""",
}


#: Entry-point group of the verbs other installed packages add (``register(subparsers)`` functions).
COMMANDS_GROUP = "fersearch.commands"


def build_parser() -> argparse.ArgumentParser:
    from importlib.metadata import PackageNotFoundError, entry_points, version

    try:
        release = version("fersearch")
    except PackageNotFoundError:
        release = "unknown"
    p = _Parser(prog="fersearch", description="Hyperparameter and ensemble search for FER")
    p.add_argument("--version", action="version", version=f"fersearch {release}")
    sub = p.add_subparsers(dest="verb", required=True, parser_class=_Parser)

    r = sub.add_parser(
        "run", help="prepare data, search, select an ensemble, export, report", epilog=EXAMPLES["run"]
    )
    r.add_argument("--data", help="FER2013 Kaggle CSV (.csv or .csv.gz); default: see README")
    r.add_argument("--out", help="output directory (default runs/run-<timestamp>)")
    r.add_argument(
        "--preset", choices=["demo", "quick"],
        help="demo (seconds, synthetic data) or quick (25 min, real data); default: by the data found",
    )  # fmt: skip
    r.add_argument(
        "--distill", action="store_true",
        help="end with a student distilled from the exported ensemble (<out>/student) in a share of the "
        "run's budget (distill.share, a quarter); its row joins the comparison and report with its latency",
    )  # fmt: skip
    budget_flags(r)
    r.set_defaults(func=_run)

    se = sub.add_parser(
        "search", help="run a search from a YAML spec, or resume one", epilog=EXAMPLES["search"]
    )
    se.add_argument("spec", nargs="?", help="search spec (YAML); see search/spec/example.yaml")
    se.add_argument("--resume", metavar="DIR", help="finish an interrupted search in DIR")
    se.add_argument("--data", help="override the spec's data")
    se.add_argument("--out", help="search directory (default runs/<name>-<timestamp>)")
    budget_flags(se)
    se.set_defaults(func=_search)

    ex = sub.add_parser(
        "export", help="compare ensembles of a finished search and export the best (PublicTest)",
        epilog=EXAMPLES["export"],
    )  # fmt: skip
    ex.add_argument("search_dir")
    ex.add_argument("--top-k", type=int, help="candidates: the k best trials (default: the spec's top_k)")
    ex.add_argument("--out", help="export directory (default <search_dir>/export)")
    ex.add_argument(
        "--merge-bases",
        type=int,
        metavar="K",
        help="bases of the merge net (0: none; default: the search spec's merge.bases)",
    )
    ex.add_argument("--bags", type=int, metavar="N", help="bagged greedy selection with N bags (0: plain)")
    _wandb_flags(ex)  # the export as a model artifact, the comparison as a table, the report as HTML
    ex.set_defaults(func=_export)

    tr = sub.add_parser("trials", help="table of a search directory's trials", epilog=EXAMPLES["trials"])
    tr.add_argument("dir")
    tr.add_argument("--sort", default="val_acc", help="column to sort by (numbers: descending)")
    tr.set_defaults(func=_trials)

    pf = sub.add_parser("portfolio", help="the recipes a budgeted search tries first, learned from runs")
    pf_sub = pf.add_subparsers(dest="portfolio_verb", required=True, parser_class=_Parser)
    pb = pf_sub.add_parser(
        "build",
        help="rank recorded recipes by PublicTest at their epoch budgets",
        epilog=EXAMPLES["portfolio"],
    )
    pb.add_argument("sources", nargs="+", help="fersearch run/search directories and race-record JSON files")
    pb.add_argument("--out", help="portfolio file to write (default: the one fersearch ships)")
    pb.set_defaults(func=_portfolio_build)

    register_data_commands(sub)
    # verbs of the packages above this one (``fersearch submit`` from cluster/) plug in by entry point, so
    # the search never imports them
    for plugin in entry_points(group=COMMANDS_GROUP):
        plugin.load()(sub)

    pd = sub.add_parser(
        "predict",
        help="classify the faces in images, folders, Kaggle CSVs or videos with an exported ensemble",
        epilog=EXAMPLES["predict"],
    )
    pd.add_argument("export_dir")
    pd.add_argument("inputs", nargs="+", help="image files, folders (recursive), .csv/.csv.gz, videos")
    pd.add_argument("--out", help="write here instead of stdout")
    pd.add_argument("--format", choices=["jsonl", "csv"], default="jsonl", help="one record per input/frame")
    pd.add_argument(
        "--every",
        type=_positive_int,
        metavar="N",
        help="classify every N-th video frame (default: one frame per second of video)",
    )
    _crop_flags(pd)
    pd.add_argument(
        "--strict",
        action="store_true",
        help="exit 1 when any input is not classified (no face, error or skipped), not only on errors",
    )
    pd.set_defaults(func=_predict)

    di = sub.add_parser(
        "distill", help="compress an exported ensemble into one fast student net", epilog=EXAMPLES["distill"]
    )
    di.add_argument("source", help="a run directory (export/ and data/ inside) or an export directory")
    di.add_argument("--data", help="prepared data directory (default: the run's data/)")
    di.add_argument("--arch", help="student architecture (default: the export's best single member's)")
    di.add_argument("--budget-min", type=float, default=10.0, help="training time for the student(s)")
    di.add_argument(
        "--temperature", default="2,4", help="softening temperature(s), comma-separated: PublicTest picks one"
    )
    di.add_argument("--seed", type=int, default=0)
    di.add_argument(
        "--from-scratch", action="store_true",
        help="random initial weights (default: a student of the best member's architecture starts from them)",
    )  # fmt: skip
    di.add_argument("--out", help="student export directory (default: beside the teacher's, student/)")
    di.set_defaults(func=_distill)

    sv = sub.add_parser(
        "serve",
        help="serve an export over HTTP on Ray Serve: POST /predict, GET /healthz, GET /model",
        epilog=EXAMPLES["serve"],
    )
    sv.add_argument("export_dir")
    sv.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    sv.add_argument("--port", type=int, default=8000)
    sv.add_argument("--replicas", type=_positive_int, default=1, help="replicas sharing this node's CPUs")
    sv.add_argument(
        "--max-batch", type=_positive_int, default=32,
        help="faces of concurrent requests classified in one call (a replica holds twice as many requests)",
    )  # fmt: skip
    sv.add_argument("--max-mb", type=float, default=10.0, help="largest image a request may send, in MiB")
    _crop_flags(sv)
    sv.add_argument("--address", help="deploy on a running Ray cluster (auto, host:6379) instead of local")
    sout = sv.add_mutually_exclusive_group()
    sout.add_argument("--verbose", action="store_true", help="also show Ray Serve's own logs")
    sout.add_argument("--quiet", action="store_true", help="no progress lines")
    sv.set_defaults(func=_serve)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if hasattr(args, "verbose"):  # run, search
        from search.tuning import set_mode

        set_mode("verbose" if args.verbose else "quiet" if args.quiet else "normal")
    from data_pipeline.fer2013 import DataError
    from search.serving import DistillError, ExportError, InputError, ServeError
    from search.spec import PortfolioError, PreflightError, SpecError
    from search.tuning import SearchFailed

    try:
        return args.func(args)
    except (
        DataError,
        DistillError,
        ExportError,
        InputError,
        PortfolioError,
        PreflightError,
        ServeError,
        SpecError,
        FileNotFoundError,
    ) as e:
        print(f"fersearch: error: {e}", file=sys.stderr)
        return 2
    except SearchFailed as e:
        print(f"fersearch: failed: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
