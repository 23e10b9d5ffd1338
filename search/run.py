"""``fersearch run``: data → search → ensemble → export → report, in one go."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from data_pipeline.fer2013 import CLASSES, load_split
from search.config import SearchConfig, demo_config, quick_config
from search.ensemble import Selection, greedy_select, load_val_probs
from search.export import Member, export_ensemble
from search.report import final_report
from search.service import search
from search.tuner import TrialRecord

DATA_ENV = "FERSEARCH_FER2013"
SYNTH_ROWS = 6000


def default_data_locations(cwd: Path | None = None) -> list[Path]:
    """Where ``fersearch run`` looks for a real FER2013 CSV when ``--data`` is not given."""
    cwd = cwd or Path.cwd()
    found = [Path(os.environ[DATA_ENV])] if os.environ.get(DATA_ENV) else []
    return found + [cwd / "data" / "fer2013.csv", cwd / "data" / "fer2013.csv.gz"]


def resolve_data(data: str | Path | None, out_dir: Path, seed: int = 0) -> tuple[Path, bool]:
    """The CSV to use and whether it is the embedded synthetic set."""
    if data is not None:
        return Path(data), False
    for candidate in default_data_locations():
        if candidate.is_file():
            return candidate, False
    from data_pipeline.synth import write_fer2013_csv

    path = write_fer2013_csv(out_dir / "synthetic" / "fer2013_synth.csv.gz", n_rows=SYNTH_ROWS, seed=seed)
    print(
        f"No FER2013 CSV given or found ({', '.join(map(str, default_data_locations()))}): "
        f"using {SYNTH_ROWS} synthetic faces written to {path}"
    )
    return path, True


@dataclass(frozen=True)
class RunResult:
    out_dir: Path
    trials: list[TrialRecord]
    candidates: list[TrialRecord]
    selection: Selection
    export_dir: Path
    report: dict
    wall_s: float


def run(data: str | Path | None, out_dir: str | Path, cfg: SearchConfig | None = None) -> RunResult:
    start = time.time()
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    csv_path, synthetic = resolve_data(data, out)
    if cfg is None:
        cfg = demo_config() if synthetic else quick_config()

    print(f"[1/3] search ({cfg.name})")
    searched = search(cfg, csv_path, out)
    trials = searched.trials
    candidates = [t for t in trials if t.usable][: cfg.top_k]
    if not candidates:
        errors = "; ".join(f"{t.trial_id}: {t.error}" for t in trials if t.error)
        raise RuntimeError(
            f"no trial finished an epoch; see {out / 'tune'} ({errors or 'no errors recorded'})"
        )

    print(f"[2/3] greedy ensemble selection over the top {len(candidates)} trials (PublicTest only)")
    _, val_y = load_split(searched.prepared.root, "PublicTest")
    selection = greedy_select(load_val_probs([c.checkpoint for c in candidates]), val_y)
    report = final_report(searched.prepared.root, [c.checkpoint for c in candidates], selection)

    members = [
        Member(c.trial_id, c.arch, c.arch_kwargs, float(selection.weights[i]), c.checkpoint, c.val_acc)
        for i, c in enumerate(candidates)
        if selection.counts[i] > 0
    ]
    classes = searched.prepared.manifest.get("classes", list(CLASSES))
    export_dir = export_ensemble(
        members, out / "export", classes=classes, metrics=report, data_manifest=searched.prepared.manifest
    )
    print(f"[3/3] exported {len(members)} members to {export_dir}")
    result = RunResult(out, trials, candidates, selection, export_dir, report, time.time() - start)
    (out / "summary.json").write_text(
        json.dumps(summary_dict(result, cfg, csv_path, synthetic), indent=2) + "\n"
    )
    return result


def summary_dict(r: RunResult, cfg: SearchConfig, csv_path: Path, synthetic: bool) -> dict:
    return {
        "data": str(csv_path),
        "synthetic": synthetic,
        "config": cfg.to_dict(),
        "wall_s": round(r.wall_s, 1),
        "trials": [
            {
                "trial_id": t.trial_id,
                "arch": t.arch,
                "lr": t.lr,
                "dropout": t.dropout,
                "val_acc": t.val_acc,
                "epochs": t.epochs,
                "best_epoch": t.best_epoch,
                "status": t.status,
                "error": t.error,
            }
            for t in r.trials
        ],
        "ensemble": [
            {"trial_id": r.candidates[i].trial_id, "weight": float(r.selection.weights[i])}
            for i in r.selection.members
        ],
        "scores": r.report,
        "export": str(r.export_dir),
    }


def format_summary(r: RunResult) -> str:
    lines = ["", "Trials (best PublicTest accuracy first):"]
    lines.append(f"  {'trial':<12} {'arch':<16} {'lr':>9} {'dropout':>8} {'epochs':>6} {'PublicTest':>10}")
    for t in r.trials:
        acc = f"{t.val_acc:.4f}" if t.val_acc >= 0 else "-"
        extra = f"  ({t.status}: {t.error})" if t.error else ""
        lines.append(
            f"  {t.trial_id:<12} {t.arch:<16} {t.lr:>9.2e} {t.dropout:>8.3f} {t.epochs:>6} {acc:>10}{extra}"
        )
    lines.append("Ensemble members (greedy selection with replacement on PublicTest):")
    for i in r.selection.members:
        c = r.candidates[i]
        lines.append(f"  {c.trial_id:<12} {c.arch:<16} weight {r.selection.weights[i]:.3f}")
    lines.append(f"  {'':<12} {'':<16} {'PublicTest':>10} {'PrivateTest':>11}")
    for key, label in (("best_single", "best single"), ("ensemble", "ensemble")):
        pub, priv = r.report["PublicTest"][key]["acc"], r.report["PrivateTest"][key]["acc"]
        lines.append(f"  {label:<29} {pub:>10.4f} {priv:>11.4f}")
    lines.append(f"Export: {r.export_dir}")
    lines.append(f"Logs and trials: {r.out_dir / 'tune'}   summary: {r.out_dir / 'summary.json'}")
    lines.append(f"Wall time: {r.wall_s / 60:.1f} min")
    return "\n".join(lines)
