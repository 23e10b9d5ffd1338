"""``fersearch run``: data → search → ensemble → export → report, in one go."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from data_pipeline import DataManifest
from models import list_models
from search.ensemble import (
    GREEDY,
    GREEDY_MERGE,
    MERGE_DIR,
    STUDENT,
    Candidate,
    Row,
    WeightedEnsemble,
    compare,
    format_rows,
    model_row,
    train_merge,
)
from search.reporting import write_report
from search.serving import DistillOptions, distill, export_ensemble
from search.spec import DistillConfig, MergeConfig, SearchConfig, SpecError, demo_config, quick_config
from search.trial import TRIAL_FILE, VAL_FILE, TrialCheckpoint, tta_label
from search.tuning import ChanceLevel, SearchFailed, TrialRecord, count_states, search, trial_row

DATA_ENV = "FERSEARCH_FER2013"
SYNTH_ROWS = 6000


def default_data_locations(cwd: Path | None = None) -> list[Path]:
    """Where ``fersearch run`` looks for a real FER2013 CSV when ``--data`` is not given."""
    cwd = cwd or Path.cwd()
    found = [Path(os.environ[DATA_ENV])] if os.environ.get(DATA_ENV) else []
    return found + [cwd / "data" / "fer2013.csv", cwd / "data" / "fer2013.csv.gz"]


@dataclass(frozen=True)
class DataSource:
    """The FER2013 CSV a run reads, resolved once (a path given or found, or the embedded synthetic set)
    and passed on as is, so every stage and ``summary.json`` agree on what was read."""

    path: Path
    synthetic: bool = False


def resolve_data(data: str | Path | None, out_dir: Path, seed: int = 0) -> DataSource:
    """The CSV to use: ``data`` when given, else the first default location that exists, else the
    embedded synthetic set written under ``out_dir``."""
    if data is not None:
        return DataSource(Path(data))
    for candidate in default_data_locations():
        if candidate.is_file():
            return DataSource(candidate)
    from data_pipeline.synth import write_fer2013_csv

    path = write_fer2013_csv(out_dir / "synthetic" / "fer2013_synth.csv.gz", n_rows=SYNTH_ROWS, seed=seed)
    print(
        f"No FER2013 CSV given or found ({', '.join(map(str, default_data_locations()))}): "
        f"using {SYNTH_ROWS} synthetic faces written to {path}"
    )
    return DataSource(path, synthetic=True)


@dataclass(frozen=True)
class ExportResult:
    """The comparison of ensembling strategies and the exported one (chosen on PublicTest)."""

    candidates: list[Candidate]
    rows: list[Row]
    chosen: WeightedEnsemble
    export_dir: Path
    report: Path
    student: Path | None = None  # the distilled student's export, when one was asked for


@dataclass(frozen=True)
class RunResult:
    out_dir: Path
    trials: list[TrialRecord]
    exported: ExportResult
    wall_s: float


PRUNE_BELOW_BEST = 0.10


def find_candidates(search_dir: Path, top_k: int) -> list[Candidate]:
    """Every checkpoint with predictions of each of the top-k trials -- a trial's annealed snapshots and
    its best epochs -- best PublicTest first; a trial with several is named ``<trial>@<epoch>``.

    Selection improves with a larger, more diverse library (Caruana et al. 2004), and each cycle end of a
    trial is a snapshot-ensemble member for free (Huang et al. 2017). The library is pruned to candidates
    within ``PRUNE_BELOW_BEST`` of the best PublicTest accuracy (Caruana et al. 2006): a barely trained
    model's near-flat outputs can otherwise win greedy steps on a small validation set by nudging ties.
    """
    data = DataManifest.try_read(search_dir / "data")
    counts = data.counts.get("PublicTest", {}) if data else {}
    chance = ChanceLevel.of_counts(counts.values())
    per_trial: dict[str, list[tuple[float, int, Path]]] = {}
    for trial_file in (search_dir / "tune").glob(f"trial_*/checkpoint_*/{TRIAL_FILE}"):
        ckpt = trial_file.parent
        if not (ckpt / VAL_FILE).is_file():
            continue
        saved = TrialCheckpoint(ckpt).read()
        acc, epoch = saved.val_acc, saved.epoch
        if not chance.learned(acc, saved.val_loss):
            continue  # never an ensemble member: no better than a constant answer (ChanceLevel)
        per_trial.setdefault(ckpt.parent.name.removeprefix("trial_"), []).append((acc, epoch, ckpt))
    if not per_trial:
        return []
    trials = sorted(per_trial, key=lambda t: (-max(a for a, _, _ in per_trial[t]), t))[:top_k]
    found = []
    for t in trials:
        snaps = sorted(per_trial[t], key=lambda s: (-s[0], -s[1]))
        for acc, epoch, ckpt in snaps:
            found.append((acc, f"{t}@{epoch}" if len(snaps) > 1 else t, ckpt))
    found.sort(key=lambda f: (-f[0], f[1]))
    found = [f for f in found if f[0] >= found[0][0] - PRUNE_BELOW_BEST]
    return [Candidate.from_checkpoint(name, ckpt) for _, name, ckpt in found]


def trial_of(candidate: Candidate) -> str:
    """The trial a candidate comes from (a snapshot is named ``<trial>@<epoch>``)."""
    return candidate.name.split("@", 1)[0]


def merge_candidate(root: Path, candidates: list[Candidate], cfg: MergeConfig) -> Candidate | None:
    """The merge net over the top ``cfg.bases`` trials, trained once and kept in ``<root>/merge`` (reused
    while it was built from the same trials)."""
    distinct = {trial_of(c): c for c in reversed(candidates)}  # each trial's best candidate
    bases = sorted(distinct.values(), key=lambda c: -c.val_acc)[: cfg.bases]
    if cfg.bases < 2 or len(bases) < 2:
        return None
    ckpt = root / MERGE_DIR
    saved = ckpt / TRIAL_FILE
    if saved.is_file() and (ckpt / VAL_FILE).is_file():
        merge = TrialCheckpoint(ckpt).read().merge or {}
        if merge.get("base_names") == [c.name for c in bases] and merge.get("config") == asdict(cfg):
            print(f"merge net: reusing {ckpt}")
            return Candidate.from_checkpoint(MERGE_DIR, ckpt)
    print(f"merge net: {len(bases)} bases ({', '.join(c.name for c in bases)}), two-phase training")
    train_merge(bases, root / "data", ckpt, cfg)
    return Candidate.from_checkpoint(MERGE_DIR, ckpt)


def preprocessing_of(data: DataManifest) -> dict | None:
    """What the data pipeline did to each image (face ROI, equalisation, size) and how the training images
    were cropped (``crop``), for predict to repeat on raw photos: ``face-box`` when they are a dataset's
    whole-face crops (FER2013, CK+48: the ROI never ran on them), ``eyes-mouth`` when the pipeline's ROI
    cropped them (forced, or most images were photos)."""
    pre = data.preprocess
    if not pre:
        return None
    size = int(pre.get("size", 48))
    roi = (data.info or {}).get("roi") or {}
    written = data.rows_written
    cropped = pre.get("roi") == "face" or (pre.get("roi") != "none" and 2 * int(roi.get("face", 0)) > written)
    crop = "eyes-mouth" if cropped else "face-box"
    return {"grayscale": True, "resize": [size, size], "interpolation": "area", **pre, "crop": crop}


def select_and_export(
    search_dir: str | Path,
    top_k: int = 8,
    out: str | Path | None = None,
    merge: MergeConfig | None = None,
    bags: int = 0,
    student: DistillConfig | None = None,
    deadline: float | None = None,
) -> ExportResult:
    """Compare ensembling strategies over the top-k trials (and the merge net built from the best of
    them, unless ``merge.bases`` is 0) and export the greedy ensemble (± TTA, ± merge net) that scores
    best on PublicTest. ``student`` (enabled): then distil the export into one net (``<root>/student``,
    done by ``deadline`` when given) and add its row, with its latency, to the comparison and the report."""
    started = time.time()  # the report's wall time of this stage
    root = Path(search_dir).resolve()
    candidates = find_candidates(root, top_k)
    if not candidates:
        raise SearchFailed(
            f"{root}: no trial checkpoint with PublicTest predictions that learned (above the majority-class "
            "rate, or a finite log-loss under twice a uniform guess's) to export; see trials.csv"
        )
    data_root = root / "data"
    merged = merge_candidate(root, candidates, merge or MergeConfig())
    merge_index = None
    if merged is not None:
        candidates, merge_index = [*candidates, merged], len(candidates)
    comparison = compare(candidates, data_root, merge=merge_index, bags=bags)
    rows = comparison.rows
    greedy = [r for r in rows if r.strategy in (GREEDY, GREEDY_MERGE)]
    pick = max(greedy, key=lambda r: (r.public_acc, not r.tta))
    strategy = comparison.strategies[(pick.strategy, pick.tta)]
    data = DataManifest.read(data_root)
    metrics = {
        "chosen": {"strategy": pick.strategy, "tta": pick.tta},
        "PublicTest": {"acc": pick.public_acc},
        "PrivateTest": {"acc": pick.private_acc, "macro_f1": pick.private_macro_f1, "ci95": list(pick.ci95)},
        "comparison": [asdict(r) for r in rows],
    }
    export_dir = export_ensemble(
        candidates,
        strategy,
        Path(out) if out else root / "export",
        classes=data.classes,
        metrics=metrics,
        data_manifest=data,
        preprocessing=preprocessing_of(data),
    )
    student_dir = None
    if student is not None and student.enabled:
        row, student_dir = distil_export(root, export_dir, student, deadline)
        rows = [*rows, row]
    (root / "comparison.txt").write_text(format_rows(rows) + "\n")
    confusion = comparison.private_confusion[(pick.strategy, pick.tta)]
    report = write_report(root, rows, pick, confusion, started=started)
    return ExportResult(candidates, rows, strategy, export_dir, report, student_dir)


def distill_options(cfg: DistillConfig, budgeted: bool) -> DistillOptions:
    """``fersearch distill``'s options for a run's student, checked (a bad ``distill.arch`` fails before the
    search, not after it); under a run budget the deadline bounds its training instead of ``budget_s``."""
    if cfg.arch is not None and cfg.arch not in list_models():
        raise SpecError(f"distill.arch: {cfg.arch!r} is not a registered model: {', '.join(list_models())}")
    budget_s = float("inf") if budgeted else cfg.budget_s
    return DistillOptions(arch=cfg.arch, budget_s=budget_s, temperatures=tuple(cfg.temperatures))


def distil_export(
    root: Path, export_dir: Path, cfg: DistillConfig, deadline: float | None
) -> tuple[Row, Path]:
    """The exported ensemble distilled into one student (``fersearch distill``) and its comparison row."""
    options = distill_options(cfg, deadline is not None)
    print(f"distil: the exported ensemble into one {cfg.arch or 'best-member architecture'} student")
    result = distill(export_dir, options, out=root / "student", data=root / "data", deadline=deadline)
    name = f"student-T{result.temperature:g}@{result.epoch}"
    return model_row(STUDENT, name, result.model, root / "data"), result.export_dir


def run(
    data: DataSource | str | Path | None,
    out_dir: str | Path,
    cfg: SearchConfig | None = None,
    *,
    started: float | None = None,
) -> RunResult:
    """``data``: a resolved :class:`DataSource`, or what :func:`resolve_data` takes; ``started``: when the
    run began (``time.time()``), so a whole-run budget counts what came before."""
    start = time.time() if started is None else started
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    source = data if isinstance(data, DataSource) else resolve_data(data, out)
    csv_path, synthetic = source.path, source.synthetic
    if cfg is None:
        cfg = demo_config() if synthetic else quick_config()
    deadline = start + cfg.run_budget_s if cfg.run_budget_s else None
    distil = cfg.distill.enabled
    if distil:
        distill_options(cfg.distill, deadline is not None)
    search_deadline = deadline - cfg.distill.share * cfg.run_budget_s if deadline and distil else deadline

    print(f"[1/2] search ({cfg.name})")
    try:
        searched = search(cfg, csv_path, out, deadline=search_deadline)
    except SearchFailed as e:
        failed = {"error": str(e), "data": str(csv_path), "synthetic": synthetic,
                  "trials": [trial_row(t) for t in e.trials]}  # fmt: skip
        (out / "summary.json").write_text(json.dumps(failed, indent=2) + "\n")
        raise
    usable = sum(t.usable for t in searched.trials)
    print(
        f"[2/2] ensembles over the top {min(cfg.top_k, usable)} of {len(searched.trials)} trials' checkpoints"
        f" (those that learned), chosen on PublicTest; export{'; distil' if distil else ''}"
    )
    merge = cfg.merge
    if deadline is not None and merge.bases:
        # the planner gives the search every minute the selection does not need; a merge net would
        # overrun the budget (at 20-40 min it also adds less than a longer search: benchmarks/budget_race)
        print("merge net: skipped under a run budget (merge.bases > 0 is honoured without --budget-min)")
        merge = dataclasses.replace(merge, bases=0)
    exported = select_and_export(out, cfg.top_k, merge=merge, bags=cfg.ensemble_bags, student=cfg.distill,
                                 deadline=deadline)  # fmt: skip
    if cfg.wandb != "off":
        from search.serving import log_export_artifact
        from search.tracking import wandb_mode

        run_dir = log_export_artifact(
            exported.export_dir, project=cfg.wandb_project, mode=wandb_mode(cfg.wandb), dir=out / "wandb",
            report=exported.report,
        )  # fmt: skip
        print(f"export and report logged to W&B ({cfg.wandb}): {run_dir}")
    result = RunResult(out, searched.trials, exported, time.time() - start)
    summary = summary_dict(result, cfg, source)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return result


def summary_dict(r: RunResult, cfg: SearchConfig, source: DataSource) -> dict:
    e = r.exported
    best = next(row for row in e.rows if row.strategy == "best single" and not row.tta)
    chosen = next(row for row in e.rows if (row.strategy, row.tta) == (e.chosen.name, e.chosen.tta))
    return {
        "data": str(source.path),
        "synthetic": source.synthetic,
        "config": cfg.to_dict(),
        "wall_s": round(r.wall_s, 1),
        "trials": [trial_row(t) for t in r.trials],
        "ensemble": {
            "strategy": e.chosen.name,
            "tta": e.chosen.tta,
            "members": [{"trial_id": e.candidates[i].name, "weight": w} for i, w in e.chosen.weights.items()],
        },
        "scores": {
            split: {
                "best_single": {"acc": getattr(best, key)},
                "ensemble": {"acc": getattr(chosen, key)},
            }
            for split, key in (("PublicTest", "public_acc"), ("PrivateTest", "private_acc"))
        },
        "candidates": len(e.candidates),
        "comparison": [asdict(row) for row in e.rows],
        "merge": merge_summary(r.out_dir),
        "export": str(e.export_dir),
        **({"student": student_summary(e)} if e.student else {}),
    }


def student_summary(e: ExportResult) -> dict:
    """The distilled student's export and scores beside the ensemble's and the best single trial's."""
    row = next(r for r in e.rows if r.strategy == STUDENT)
    return {"export": str(e.student), "member": row.members[0], "PublicTest": {"acc": row.public_acc},
            "PrivateTest": {"acc": row.private_acc}, "ms_per_1000": row.ms_per_1000}  # fmt: skip


def merge_summary(root: Path) -> dict | None:
    """The merge net's bases and their PublicTest accuracy before and after phase 2, if one was built."""
    ckpt = root / MERGE_DIR
    if not (ckpt / TRIAL_FILE).is_file():
        return None
    merge = TrialCheckpoint(ckpt).read().merge or {}
    if not merge:
        return None
    return {k: merge[k] for k in ("base_names", "val_acc", "best_phase", "best_epoch", "bases_before",
                                  "bases_after_phase2")}  # fmt: skip


def format_summary(r: RunResult) -> str:
    e = r.exported
    counts = count_states(t.status for t in r.trials)
    lines = ["", f"Trials: {len(r.trials)} ({counts}), best PublicTest accuracy first:"]
    lines.append(
        f"  {'trial':<12} {'arch':<16} {'lr':>9} {'dropout':>8} {'epochs':>6} {'PublicTest':>10}  state"
    )
    for t in r.trials:
        acc = f"{t.val_acc:.4f}" if t.val_acc >= 0 else "-"
        extra = f": {t.error}" if t.error else ""
        lines.append(
            f"  {t.trial_id:<12} {t.arch:<16} {t.lr:>9.2e} {t.dropout:>8.3f} {t.epochs:>6} {acc:>10}"
            f"  {t.status}{extra}"
        )
    lines.append("")
    lines.append("Ensembles (each chosen on PublicTest; PrivateTest is the final report):")
    lines.extend("  " + line for line in format_rows(e.rows).splitlines())
    lines.append("")
    tta = f" with {tta_label()}" if e.chosen.tta else ""
    lines.append(f"Exported: {e.chosen.name}{tta}, members and weights:")
    for i, w in e.chosen.weights.items():
        c = e.candidates[i]
        lines.append(f"  {c.name:<12} {c.arch:<16} weight {w:.3f}")
    best = next(row for row in e.rows if row.strategy == "best single" and not row.tta)
    chosen = next(row for row in e.rows if (row.strategy, row.tta) == (e.chosen.name, e.chosen.tta))
    lines.append(f"  {'':<29} {'PublicTest':>10} {'PrivateTest':>11}")
    lines.append(f"  {'best single trial':<29} {best.public_acc:>10.4f} {best.private_acc:>11.4f}")
    lines.append(f"  {'exported ensemble':<29} {chosen.public_acc:>10.4f} {chosen.private_acc:>11.4f}")
    student = next((row for row in e.rows if row.strategy == STUDENT), None)
    if student:
        lines.append(
            f"  {'distilled student':<29} {student.public_acc:>10.4f} {student.private_acc:>11.4f}  "
            f"{student.ms_per_1000:.0f} ms per 1000 faces against the ensemble's {chosen.ms_per_1000:.0f}"
        )
    merge = merge_summary(r.out_dir)
    if merge:
        before = ", ".join(f"{a:.4f}" for a in merge["bases_before"])
        after = ", ".join(f"{a:.4f}" for a in merge["bases_after_phase2"])
        lines.append(
            f"Merge net over {', '.join(merge['base_names'])}: PublicTest {merge['val_acc']:.4f} "
            f"(phase {merge['best_phase']} epoch {merge['best_epoch']}); bases {before} -> {after} in phase 2"
        )
    lines.append(f"Export: {e.export_dir}   report: {e.report}")
    if e.student:
        lines.append(f"Student export: {e.student}")
    lines.append(f"Logs and trials: {r.out_dir / 'tune'}   summary: {r.out_dir / 'summary.json'}")
    lines.append(f"Wall time: {r.wall_s / 60:.1f} min")
    return "\n".join(lines)
