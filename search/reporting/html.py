"""``<search>/report/report.html``: what a person reads after a search and export.

It analyses the search, not only its result: data, budget and wall time per stage, every trial, best-so-far
over time, hyperparameter importance and parallel coordinates (Optuna's own, from the study's journal), the
trials' timeline on the workers, per-class scores of the exported model, readable confusion matrices, and
plain warnings when the exported ensemble's PublicTest lead is noise or a class is never predicted.

The folder is self-contained: every image is a PNG beside ``report.html``, linked by bare file name, so the
folder can be copied, zipped or uploaded and still opens.
"""

from __future__ import annotations

import html
import json
import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data_pipeline import DataManifest
from search.ensemble import MERGE_DIR, STUDENT, Row
from search.metrics import per_class
from search.trial import CONFUSION_FILE, TRIAL_FILE, TrialCheckpoint, tta_label
from search.tuning import SPEC_FILE, pareto_front, read_trials

REPORT_DIR = "report"
REPORT_FILE = "report.html"
RESULT_FILE = "result.json"
Z95 = 1.96
# Trial config keys that are run settings, not hyperparameters, and trials.csv columns that are outcomes.
RUN_SETTINGS = frozenset(
    {"max_epochs", "seed", "cpus_per_trial", "gpus_per_trial", "early_stop_patience", "objectives",
     "workers_per_trial", "checkpoints_to_keep"}
)  # fmt: skip
OUTCOMES = frozenset(
    {"trial_id", "status", "val_acc", "best_epoch", "epochs", "val_macro_f1", "params", "latency_ms",
     "train_images_per_s", "error"}
)  # fmt: skip


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _plt().close(fig)
    return path


def _num(value) -> float | None:
    """A trials.csv cell as a number (cells are strings; empty or non-numeric gives None)."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(x) else x


def _fmt(value) -> str:
    x = _num(value)
    if x is None or isinstance(value, bool) or str(value) in ("True", "False"):
        return str(value)
    if x.is_integer() and abs(x) < 1e6:
        return str(int(x))
    return f"{x:.3g}" if abs(x) < 1e-2 or abs(x) >= 1e4 else f"{x:.4g}"


def _minutes(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


@dataclass(frozen=True)
class Epoch:
    """One reported epoch of a trial: when it ran, on which worker process, and its PublicTest accuracy."""

    trial: str
    epoch: int
    val_acc: float
    start: float
    end: float
    worker: str


def read_epochs(search_dir: Path) -> dict[str, list[Epoch]]:
    """Every trial's epochs from Tune's ``result.json`` (timestamps, host and pid of the worker)."""
    out: dict[str, list[Epoch]] = {}
    for trial_dir in sorted((search_dir / "tune").glob("trial_*")):
        path = trial_dir / RESULT_FILE
        if not path.is_file():
            continue
        tid = trial_dir.name.removeprefix("trial_")
        for line in path.read_text().splitlines():
            if not line.strip():
                continue
            r = json.loads(line)
            if "val_acc" not in r or "timestamp" not in r:
                continue
            end = float(r["timestamp"])
            worker = f"{r.get('hostname', '?')} pid {r.get('pid', '?')}"
            out.setdefault(tid, []).append(
                Epoch(tid, int(r.get("epoch", 0)), float(r["val_acc"]),
                      end - float(r.get("time_this_iter_s", 0)), end, worker)
            )  # fmt: skip
    return out


# ---------------------------------------------------------------------------------------------- figures


def best_so_far(epochs: dict[str, list[Epoch]], budget_s: float | None, path: Path) -> Path | None:
    """PublicTest accuracy of every epoch as it arrived, and the best so far: did the search still gain?"""
    points = sorted((e for es in epochs.values() for e in es), key=lambda e: e.end)
    if not points:
        return None
    plt = _plt()
    t0 = min(e.start for e in points)
    x = [(e.end - t0) / 60 for e in points]
    y = [e.val_acc for e in points]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.scatter(x, y, c="0.65", s=14, label="an epoch of a trial")
    ax.step([0, *x], [min(y), *np.maximum.accumulate(y)], where="post", c="C3", lw=2, label="best so far")
    if budget_s:
        ax.axvline(budget_s / 60, ls="--", c="0.3", label=f"time budget ({budget_s / 60:.0f} min)")
    ax.set_xlabel("minutes since the first trial started")
    ax.set_ylabel("PublicTest accuracy")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path)


def timeline(epochs: dict[str, list[Epoch]], arch_of: dict[str, str], path: Path) -> Path | None:
    """Each trial's epochs as bars on the worker process that ran them: idle workers, stopped trials."""
    points = [e for es in epochs.values() for e in es]
    if not points:
        return None
    plt = _plt()
    t0 = min(e.start for e in points)
    workers = sorted({e.worker for e in points}, key=lambda w: min(e.start for e in points if e.worker == w))
    lane = {w: i for i, w in enumerate(workers)}
    archs = sorted({arch_of.get(t, "?") for t in epochs})
    colour = {a: f"C{i % 10}" for i, a in enumerate(archs)}
    fig, ax = plt.subplots(figsize=(10, 1.2 + 0.75 * len(workers)))
    for tid, es in epochs.items():
        c = colour[arch_of.get(tid, "?")]
        for e in es:
            ax.barh(lane[e.worker], (e.end - e.start) / 60, left=(e.start - t0) / 60, height=0.6, color=c,
                    edgecolor="white", linewidth=1)  # fmt: skip
        first = min(es, key=lambda e: e.start)
        ax.text((first.start - t0) / 60 + 0.05, lane[first.worker] + 0.42, f"{tid} ({len(es)} ep)",
                fontsize=7, va="bottom")  # fmt: skip
    ax.set_yticks(range(len(workers)), [f"worker {i + 1}\n{w}" for i, w in enumerate(workers)], fontsize=8)
    ax.set_ylim(-0.6, len(workers) - 0.1)
    ax.invert_yaxis()
    ax.set_xlabel("minutes since the first trial started (one bar segment per epoch)")
    handles = [plt.Rectangle((0, 0), 1, 1, color=colour[a]) for a in archs]
    ax.legend(handles, archs, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


def learning_curves(epochs: dict[str, list[Epoch]], labels: dict[str, str], path: Path) -> Path | None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4))
    drawn = 0
    for tid, label in labels.items():
        es = sorted(epochs.get(tid, []), key=lambda e: e.epoch)
        if es:
            ax.plot([e.epoch for e in es], [e.val_acc for e in es], marker="o", ms=3, label=label)
            drawn += 1
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xlabel("epoch")
    ax.set_ylabel("PublicTest accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    return _save(fig, path)


def accuracy_vs_size(rows: Sequence[dict], path: Path) -> Path | None:
    """PublicTest accuracy against parameters (or latency when measured), Pareto front highlighted."""
    plt = _plt()
    x_key = "latency_ms" if any(_num(r.get("latency_ms")) for r in rows) else "params"
    pts = [
        {**r, "val_acc": _num(r["val_acc"]), x_key: _num(r[x_key])}
        for r in rows
        if _num(r.get(x_key)) and (_num(r.get("val_acc")) or -1) >= 0
    ]
    if not pts:
        return None
    front = sorted(pareto_front(pts, ("val_acc", x_key)), key=lambda r: r[x_key])
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.scatter([r[x_key] for r in pts], [r["val_acc"] for r in pts], c="0.6", label="trials")
    ax.plot([r[x_key] for r in front], [r["val_acc"] for r in front], "o-", c="C3", label="Pareto front")
    for r in front:
        ax.annotate(f"{r['trial_id']} {r.get('arch', '')}", (r[x_key], r["val_acc"]), fontsize=7,
                    xytext=(4, -10), textcoords="offset points")  # fmt: skip
    ax.set_xscale("log")
    ax.set_xlabel("latency (ms)" if x_key == "latency_ms" else "parameters")
    ax.set_ylabel("PublicTest accuracy")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


LATENCY_CAPTION = (
    "PrivateTest accuracy against inference time: green star the exported ensemble, light blue square the "
    "best single trial, red diamond the distilled student (when asked for); bars: 95% CI"
)


def accuracy_vs_latency(rows: Sequence[Row], chosen: Row, path: Path) -> Path:
    """Every compared model's PrivateTest accuracy against its inference time: what each point of accuracy
    costs to serve (the exported ensemble, the best single trial and, when distilled, the student)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4))
    for r in rows:
        key = (r.strategy, r.tta) == (chosen.strategy, chosen.tta)
        style = ("C2", "*", 160) if key else ("C3", "D", 70) if r.strategy == STUDENT else ("C0", "o", 40)
        if r.strategy == "best single" and not r.tta:
            style = ("C9", "s", 60)
        ax.scatter([r.ms_per_1000], [r.private_acc], c=style[0], marker=style[1], s=style[2], zorder=3)
        err = [[r.private_acc - r.ci95[0]], [r.ci95[1] - r.private_acc]]
        ax.errorbar([r.ms_per_1000], [r.private_acc], yerr=err, c=style[0], alpha=0.35, lw=1)
        ax.annotate(f"{r.strategy}{' + TTA' if r.tta else ''}", (r.ms_per_1000, r.private_acc), fontsize=7,
                    xytext=(5, 3), textcoords="offset points")  # fmt: skip
    ax.set_xscale("log")
    ax.set_xlabel("ms per 1000 faces (batches of 32, this machine's CPU)")
    ax.set_ylabel("PrivateTest accuracy")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def ensemble_weights(labels: Sequence[str], weights: Sequence[float], path: Path) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.bar(range(len(labels)), weights, color="C0")
    ax.set_xticks(range(len(labels)), labels, rotation=25, ha="right", fontsize=8)
    ax.set_ylabel("weight in the ensemble")
    return _save(fig, path)


def confusion(matrix: np.ndarray, classes: Sequence[str], path: Path, title: str) -> Path:
    """Row-normalised (share of each true class), percentages and counts in every cell with a contrasting
    text colour, a colour bar, and never-predicted classes' column labels in red."""
    plt = _plt()
    m = np.asarray(matrix, dtype=np.float64)
    support = m.sum(1, keepdims=True)
    norm = np.divide(m, support, out=np.zeros_like(m), where=support > 0)
    fig, ax = plt.subplots(figsize=(7, 6))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    bar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, format=lambda v, _: f"{v:.0%}")
    bar.set_label("share of the true class (each row sums to 100%)")
    for i in range(len(classes)):
        for j in range(len(classes)):
            colour = "white" if norm[i, j] > 0.5 else "black"
            ax.text(j, i, f"{norm[i, j]:.0%}\n{int(m[i, j])}", ha="center", va="center", fontsize=8,
                    color=colour)  # fmt: skip
    ax.set_xticks(range(len(classes)), classes, rotation=35, ha="right")
    ax.set_yticks(
        range(len(classes)), [f"{c} ({int(n)})" for c, n in zip(classes, support[:, 0], strict=True)]
    )
    for j, label in enumerate(ax.get_xticklabels()):
        if m[:, j].sum() == 0:
            label.set_color("red")
    ax.set_xlabel("predicted (red: never predicted)")
    ax.set_ylabel("true class (images)")
    ax.set_title(title, fontsize=10)
    return _save(fig, path)


def class_distribution(manifest: DataManifest, path: Path) -> Path:
    plt = _plt()
    classes = manifest.classes
    counts = manifest.counts
    fig, ax = plt.subplots(figsize=(7, 3.5))
    width = 0.8 / max(1, len(counts))
    for k, (split, per) in enumerate(counts.items()):
        ax.bar(np.arange(len(classes)) + k * width, [per.get(c, 0) for c in classes], width, label=split)
    ax.set_xticks(np.arange(len(classes)) + width * (len(counts) - 1) / 2, classes, rotation=30, ha="right")
    ax.set_ylabel("images")
    ax.legend(fontsize=8)
    return _save(fig, path)


def load_study(search_dir: Path, cfg: dict):
    """The search's Optuna study (``optuna.journal``, or the spec's RDB URL), or None when there is none."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if cfg.get("optuna_storage"):
        storage = cfg["optuna_storage"]
    else:
        journal = search_dir / "optuna.journal"
        if not journal.is_file():  # JournalFileBackend would create an empty one
            return None
        storage = JournalStorage(JournalFileBackend(str(journal)))
    names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
    if not names:
        return None
    name = cfg.get("name") if cfg.get("name") in names else names[-1]
    return optuna.load_study(study_name=name, storage=storage)


def optuna_figures(
    study, importance_path: Path, parallel_path: Path
) -> tuple[dict[str, float], list[Path], str]:
    """Optuna's PED-ANOVA importances (deterministic, and unlike fANOVA it needs no scikit-learn) and its
    importance and parallel-coordinate plots.

    Returns (importances, written PNGs, a note when something could not be drawn). Optuna's objective is
    the value Tune reported last for each trial (a trial ASHA stopped counts at its last epoch).
    """
    import optuna
    from optuna.importance import PedAnovaImportanceEvaluator
    from optuna.visualization import matplotlib as ovm

    plt = _plt()
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if len(complete) < 2:
        return {}, [], f"only {len(complete)} finished Optuna trial(s): no importance or parallel coordinates"
    multi = len(study.directions) > 1
    target = (lambda t: t.values[0]) if multi else None
    name = "PublicTest accuracy"
    written, notes, importances = [], [], {}
    with warnings.catch_warnings(), plt.rc_context():  # Optuna's plots switch the global style
        warnings.simplefilter("ignore")
        try:
            importances = optuna.importance.get_param_importances(
                study, evaluator=PedAnovaImportanceEvaluator(), target=target
            )
            ax = ovm.plot_param_importances(
                study, evaluator=PedAnovaImportanceEvaluator(), target=target, target_name=name
            )
            ax.figure.set_size_inches(7, 0.6 + 0.45 * max(2, len(importances)))
            written.append(_save(ax.figure, importance_path))
        except (RuntimeError, ValueError) as e:
            notes.append(f"importance: {e}")
        try:
            ax = ovm.plot_parallel_coordinate(study, target=target, target_name=name)
            ax.figure.set_size_inches(10, 4.5)
            written.append(_save(ax.figure, parallel_path))
        except (RuntimeError, ValueError) as e:
            notes.append(f"parallel coordinates: {e}")
    plt.close("all")
    return importances, written, "; ".join(notes)


# ----------------------------------------------------------------------------------------- the analysis


def best_trial_confusion(search_dir: Path) -> tuple[str, np.ndarray] | None:
    """(trial id, PublicTest confusion) of the best epoch of the best trial."""
    best: tuple[float, str, Path] | None = None
    for f in (search_dir / "tune").glob(f"trial_*/checkpoint_*/{TRIAL_FILE}"):
        if not (f.parent / CONFUSION_FILE).is_file():
            continue
        acc = float(TrialCheckpoint(f.parent).read().best_val_acc)
        tid = f.parent.parent.name.removeprefix("trial_")
        if best is None or (acc, tid) > (best[0], best[1]):
            best = (acc, tid, f.parent / CONFUSION_FILE)
    return None if best is None else (best[1], np.load(best[2]))


def stages(search_dir: Path, cfg: dict, epochs: dict[str, list[Epoch]], started: float | None) -> list[tuple]:
    """(stage, wall seconds, budget) rows: from the search directory's files, and ``started`` (when the
    ensemble stage began, ``time.time()``) for the last stage."""
    rows = []
    spec, table = search_dir / SPEC_FILE, search_dir / "trials.csv"
    budget = cfg.get("time_budget_s")
    trials_budget = (f"{budget / 60:.0f} min, " if budget else "no time limit, ") + (
        f"{cfg.get('num_samples', '?')} trials × ≤{cfg.get('max_epochs', '?')} epochs"
    )
    if spec.is_file() and table.is_file() and table.stat().st_mtime >= spec.stat().st_mtime:
        rows.append(("data + search", table.stat().st_mtime - spec.stat().st_mtime, ""))
    points = [e for es in epochs.values() for e in es]
    if points:
        span = max(e.end for e in points) - min(e.start for e in points)
        used = f" ({span / budget:.0%} used)" if budget else ""
        rows.append(("· trials (first start → last end)", span, trials_budget + used))
    merge_file = search_dir / MERGE_DIR / TRIAL_FILE
    merge_s, merge_new = None, False
    if merge_file.is_file():
        merge = TrialCheckpoint(merge_file.parent).read().merge or {}
        merge_s = sum(float(h.get("seconds", 0)) for h in merge.get("history", []))
        mb = (cfg.get("merge") or {}).get("time_budget_s")
        merge_new = started is not None and merge_file.stat().st_mtime >= started
        reused = "" if merge_new or started is None else " (trained earlier, reused)"
        rows.append(
            ("merge net (training epochs)", merge_s, (f"{mb / 60:.0f} min" if mb else "epochs only") + reused)
        )
    if started is not None:
        rest = time.time() - started - (merge_s if merge_new and merge_s else 0.0)
        rows.append(("ensembles, PrivateTest scoring, export, report", rest, ""))
    return rows


def state_of(row: dict, max_epochs: int | None) -> str:
    status, epochs = row.get("status", ""), int(_num(row.get("epochs")) or 0)
    if status == "error":
        return f"error: {row.get('error', '')}".strip()
    if status in ("pruned", "cut (budget)") and epochs:
        return f"{status} at epoch {epochs}" + (f"/{max_epochs}" if max_epochs else "")
    if status == "done":
        return "completed"
    return status or "?"


def warnings_for(
    rows: Sequence[Row], chosen: Row, n_public: int, matrix: np.ndarray, classes: Sequence[str]
) -> list[str]:
    """Plain-language warnings: the exported ensemble's PublicTest lead over the best single trial is
    within the noise of a PublicTest accuracy (±1.96·√(p(1−p)/n), the same images it was chosen on), or it
    did worse on PrivateTest; and classes the exported model never predicts."""
    out = []
    best = next((r for r in rows if r.strategy == "best single" and not r.tta), None)
    if best is not None and (chosen.strategy, chosen.tta) != (best.strategy, best.tta) and n_public:
        lead = chosen.public_acc - best.public_acc
        half = Z95 * math.sqrt(max(best.public_acc * (1 - best.public_acc), 1e-12) / n_public)
        ratio = chosen.ms_per_1000 / best.ms_per_1000 if best.ms_per_1000 > 0 else float("nan")
        cost = (
            f"It costs {ratio:.1f}× the inference time of the best single trial ({chosen.ms_per_1000:.0f} vs "
            f"{best.ms_per_1000:.0f} ms per 1000 images) and {len(chosen.members)} models instead of one."
        )
        private = (
            f"On PrivateTest it scored {chosen.private_acc:.4f} against {best.private_acc:.4f} for the best "
            f"single trial ({best.members[0]})."
        )
        if lead <= half:
            out.append(
                f"The exported ensemble's PublicTest lead over the best single trial is inside the noise: "
                f"{lead:+.4f} ({round(lead * n_public):+d} of {n_public} images) where the 95% interval of a "
                f"PublicTest accuracy is ±{half:.4f} (±{round(half * n_public)} images), on the very images "
                f"it was chosen on. {private} {cost} Prefer the best single trial unless the extra "
                f"latency is free."
            )
        elif chosen.private_acc < best.private_acc:
            out.append(
                f"The exported ensemble did worse than the best single trial on PrivateTest. {private} {cost}"
            )
    m = np.asarray(matrix)
    for j, c in enumerate(classes):
        if m[:, j].sum() == 0:
            out.append(
                f"{c} is never predicted by the exported model on PrivateTest: all {int(m[j].sum())} {c} "
                f"images go to other classes (recall 0); class weights or a balanced variant may help."
            )
    return out


# -------------------------------------------------------------------------------------------------- HTML

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1300px;
  padding:0 1.5em;color:#1d1d1f;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em} h2{margin-top:2em;border-bottom:2px solid #ddd;padding-bottom:.2em}
.sub{color:#555;margin-top:0}
table{border-collapse:collapse;margin:.6em 0;font-size:.88em}
td,th{border:1px solid #d0d0d0;padding:4px 8px;text-align:right;vertical-align:top}
th{background:#f2f2f2;position:sticky;top:0} td.l,th.l{text-align:left}
tr.exported td{background:#dff3e3;font-weight:600} tr.single td{background:#eef4fb}
tr.member td:first-child{border-left:4px solid #2e7d32}
td.bad{background:#fde2e1;color:#a40000;font-weight:600}
.warn{background:#fff4e0;border-left:6px solid #e67e00;padding:.7em 1em;margin:.8em 0}
.ok{background:#e9f6ec;border-left:6px solid #2e7d32;padding:.7em 1em;margin:.8em 0}
figure{display:inline-block;margin:.8em 1.2em .8em 0;vertical-align:top;max-width:100%}
figure img{max-width:100%;border:1px solid #e3e3e3} figcaption{font-size:.88em;color:#444;max-width:760px}
.kv td:first-child{text-align:left;color:#555} .kv td{text-align:left}
.note{color:#666;font-size:.88em}
"""


def trial_of(member: str) -> str:
    """The trial of an ensemble member's name (an epoch snapshot is named ``<trial>@<epoch>``)."""
    return member.split("@", 1)[0]


def _e(x) -> str:
    return html.escape(str(x))


def _figure(path: Path | None, caption: str, width: int | None = None) -> str:
    if path is None:
        return ""
    w = f" width='{width}'" if width else ""
    return (f"<figure><img src='{_e(path.name)}' alt='{_e(caption)}'{w}>"
            f"<figcaption>{_e(caption)}</figcaption></figure>")  # fmt: skip


def comparison_table(rows: Sequence[Row], chosen: Row) -> str:
    heads = ("strategy", "TTA", "PublicTest", "PrivateTest", "95% CI", "macro-F1", "ms / 1000 img", "members")
    body = []
    for r in rows:
        key = (r.strategy, r.tta)
        cls = (
            "exported"
            if key == (chosen.strategy, chosen.tta)
            else ("single" if key == ("best single", False) else "")
        )
        tag = (
            " ← exported"
            if cls == "exported"
            else " (exported on its own: student/)"
            if r.strategy == STUDENT
            else ""
        )
        members = ", ".join(f"{_e(m)}×{w:.2f}" for m, w in zip(r.members, r.weights, strict=True))
        body.append(
            f"<tr class='{cls}'><td class='l'>{_e(r.strategy)}{tag}</td><td>{'yes' if r.tta else 'no'}</td>"
            f"<td>{r.public_acc:.4f}</td><td>{r.private_acc:.4f}</td><td>{r.ci95[0]:.4f}–{r.ci95[1]:.4f}</td>"
            f"<td>{r.private_macro_f1:.4f}</td><td>{r.ms_per_1000:.0f}</td><td class='l'>{members}</td></tr>"
        )
    head = "".join(
        f"<th class='l'>{h}</th>" if h in ("strategy", "members") else f"<th>{h}</th>" for h in heads
    )
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def per_class_table(scores: Sequence[dict]) -> str:
    body = []
    for s in scores:
        never = s["predicted"] == 0
        bad = " class='bad'" if never else ""
        body.append(
            f"<tr><td class='l'>{_e(s['class'])}</td><td{bad}>{s['precision']:.3f}</td>"
            f"<td{bad}>{s['recall']:.3f}</td><td{bad}>{s['f1']:.3f}</td><td>{s['support']}</td>"
            f"<td{bad}>{s['predicted']}</td></tr>"
        )
    head = (
        "<tr><th class='l'>class</th>"
        + "".join(f"<th>{h}</th>" for h in ("precision", "recall", "F1", "images", "predicted"))
        + "</tr>"
    )
    return f"<table>{head}{''.join(body)}</table>"


def trials_table(trials: Sequence[dict], cfg: dict, members: set[str]) -> tuple[str, str]:
    """(the table: every trial, the hyperparameters that vary, state, epochs, PublicTest; the fixed ones)."""
    keys = [
        k for k in dict.fromkeys(k for r in trials for k in r) if k not in OUTCOMES and k not in RUN_SETTINGS
    ]
    varying = [k for k in keys if len({r.get(k, "") for r in trials}) > 1]
    fixed = {k: trials[0].get(k, "") for k in keys if k not in varying and trials[0].get(k, "") != ""}
    extra = [k for k in ("val_macro_f1", "params", "latency_ms") if any(_num(r.get(k)) for r in trials)]
    ranked = sorted(
        trials, key=lambda r: -(_num(r.get("val_acc")) if _num(r.get("val_acc")) is not None else -1)
    )
    max_epochs = cfg.get("max_epochs")
    head = ["#", "trial", *varying, "state", "epochs (best)", "PublicTest", *extra]
    body = []
    for i, r in enumerate(ranked, 1):
        acc = _num(r.get("val_acc"))
        cls = " class='member'" if r.get("trial_id") in members else ""
        cells = [str(i), _e(r.get("trial_id", "")) + (" ★" if cls else "")]
        cells += [_e(_fmt(r.get(k, ""))) for k in varying]
        cells += [_e(state_of(r, max_epochs)), f"{_e(r.get('epochs', ''))} ({_e(r.get('best_epoch', ''))})",
                  f"{acc:.4f}" if acc is not None and acc >= 0 else "–"]  # fmt: skip
        cells += [_e(_fmt(r.get(k, ""))) for k in extra]
        left = {1, *range(2, 2 + len(varying)), 2 + len(varying)}
        body.append(f"<tr{cls}>" + "".join(
            f"<td class='l'>{c}</td>" if j in left else f"<td>{c}</td>" for j, c in enumerate(cells)
        ) + "</tr>")  # fmt: skip
    heads = "".join(f"<th>{_e(h)}</th>" for h in head)
    fixed_text = ", ".join(f"{_e(k)} {_e(_fmt(v))}" for k, v in fixed.items())
    return f"<table><tr>{heads}</tr>{''.join(body)}</table>", fixed_text


def write_report(
    search_dir: Path,
    rows: Sequence[Row],
    chosen: Row,
    ensemble_confusion: np.ndarray,
    started: float | None = None,
) -> Path:
    """Write ``<search_dir>/report/report.html`` and its PNGs (all inside ``report/``); return its path.

    ``started``: ``time.time()`` when the ensemble stage began, for the wall-time-per-stage table.
    """
    search_dir = Path(search_dir)
    out = search_dir / REPORT_DIR
    out.mkdir(exist_ok=True)
    for stale in out.glob("*.png"):  # a figure this report no longer draws must not linger (or be uploaded)
        stale.unlink()
    spec = json.loads((search_dir / SPEC_FILE).read_text()) if (search_dir / SPEC_FILE).is_file() else {}
    cfg = spec.get("config", {})
    trials = read_trials(search_dir)
    data = DataManifest.read(search_dir / "data")
    classes = list(data.classes)
    epochs = read_epochs(search_dir)
    arch_of = {r["trial_id"]: r.get("arch", "?") for r in trials}
    n_public = sum(data.counts.get("PublicTest", {}).values())

    ranked = sorted(trials, key=lambda r: -(_num(r.get("val_acc")) or -1))
    curves = {
        r["trial_id"]: f"#{i} {r['trial_id']} {r.get('arch', '')} lr {_fmt(r.get('lr', ''))}"
        f" → {(_num(r.get('val_acc')) or 0):.3f}"
        for i, r in enumerate(ranked[:6], 1)
    }
    study = load_study(search_dir, cfg)
    importances, optuna_pngs, optuna_note = (
        optuna_figures(study, out / "importance.png", out / "parallel_coordinates.png")
        if study is not None
        else ({}, [], "no Optuna study found")
    )
    by_name = {p.name: p for p in optuna_pngs}
    best_conf = best_trial_confusion(search_dir)
    scores = per_class(ensemble_confusion, classes)
    alerts = warnings_for(rows, chosen, n_public, ensemble_confusion, classes)
    tta = f" with {tta_label()}" if chosen.tta else ""
    member_labels = [
        f"{m} ({arch_of.get(trial_of(m), 'merge net' if m == MERGE_DIR else '?')})" for m in chosen.members
    ]

    figs = {
        "best": best_so_far(epochs, cfg.get("time_budget_s"), out / "best_so_far.png"),
        "timeline": timeline(epochs, arch_of, out / "timeline.png"),
        "curves": learning_curves(epochs, curves, out / "learning_curves.png"),
        "size": accuracy_vs_size(trials, out / "accuracy_vs_size.png"),
        "weights": ensemble_weights(member_labels, chosen.weights, out / "weights.png"),
        "latency": accuracy_vs_latency(rows, chosen, out / "accuracy_vs_latency.png"),
        "conf": confusion(
            ensemble_confusion,
            classes,
            out / "confusion_exported.png",
            f"Exported: {chosen.strategy}{tta} — PrivateTest (final report)",
        ),  # fmt: skip
        "conf_best": confusion(
            best_conf[1],
            classes,
            out / "confusion_best_trial.png",
            f"Best single trial {best_conf[0]} — PublicTest (its best epoch)",
        )
        if best_conf
        else None,  # fmt: skip
        "dist": class_distribution(data, out / "class_distribution.png"),
    }

    data_path = spec.get("data", "?")
    synthetic = " (the embedded synthetic set)" if "synthetic" in Path(data_path).parts else ""
    sizes = ", ".join(f"{s} {sum(c.values()):,}" for s, c in data.counts.items())
    res = cfg.get("resources", {})
    counted = _count_states(trials, cfg.get("max_epochs"))
    state_counts = ", ".join(f"{n} {s}" for s, n in counted.items())
    header = [
        ("data", f"{_e(data_path)}{synthetic}<br><span class='note'>{_e(sizes)} images; "
                 f"{len(classes)} classes</span>"),  # fmt: skip
        ("preset / spec", _e(cfg.get("name", "?"))),
        ("objectives", _e(", ".join(cfg.get("objectives", ["val_acc"])))),
        ("search", "Ray Tune + Optuna TPE (NSGA-II when multi-objective) + ASHA; "
                   f"{_e(res.get('cpu', '?'))} CPU, {_e(res.get('gpu', 0))} GPU per trial"),  # fmt: skip
        ("trials", f"{len(trials)} of {_e(cfg.get('num_samples', '?'))} requested; {_e(state_counts)}"),
        ("exported", f"<b>{_e(chosen.strategy)}{tta}</b> ({len(chosen.members)} models): PublicTest "
                     f"{chosen.public_acc:.4f}, PrivateTest {chosen.private_acc:.4f} "
                     f"(95% CI {chosen.ci95[0]:.4f}–{chosen.ci95[1]:.4f}), "
                     f"{chosen.ms_per_1000:.0f} ms per 1000 images"),
    ]  # fmt: skip
    header_html = "".join(f"<tr><td>{k}</td><td>{v}</td></tr>" for k, v in header)
    stage_rows = stages(search_dir, cfg, epochs, started)
    stage_html = "".join(
        f"<tr><td class='l'>{_e(s)}</td><td>{_minutes(t)}</td><td class='l'>{_e(b)}</td></tr>"
        for s, t, b in stage_rows
    )
    warn_html = (
        "".join(f"<div class='warn'>⚠ {_e(w)}</div>" for w in alerts)
        if alerts
        else "<div class='ok'>No warnings: the exported ensemble's PublicTest lead is outside the noise and "
        "every class is predicted.</div>"
    )
    table, fixed = trials_table(trials, cfg, {trial_of(m) for m in chosen.members})
    top_imp = ", ".join(f"{_e(k)} {v:.0%}" for k, v in list(importances.items())[:4])
    imp_text = f"PED-ANOVA importance: {top_imp}. " if top_imp else ""
    members_text = "★ / green edge: a member of the exported ensemble. "

    page = f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<title>fersearch report: {_e(search_dir.name)}</title><style>{CSS}</style></head><body>
<h1>fersearch report: {_e(search_dir.name)}</h1>
<p class="sub">Every ensemble was chosen on PublicTest; PrivateTest was read afterwards, for this report
only.</p>
<h2>Summary</h2>
<table class="kv">{header_html}</table>
{warn_html}
<h3>Wall time per stage</h3>
<table><tr><th class='l'>stage</th><th>wall time</th><th class='l'>budget</th></tr>{stage_html}</table>
<h2>Ensembles compared</h2>
<p class="note">Green row: exported (best greedy PublicTest accuracy); blue row: the best single trial.
95% CI: bootstrap interval of PrivateTest accuracy. Latency: batches of 32 on this machine's CPU.</p>
{comparison_table(rows, chosen)}
{
        _figure(
            figs["latency"],
            "Accuracy against inference time: green star exported, light blue square best single "
            "trial, red diamond the distilled student (when asked for); bars: 95% CI",
        )
    }
{_figure(figs["weights"], "Weights of the exported ensemble's members")}
<h2>Exported model per class (PrivateTest)</h2>
<div style="display:flex;gap:2em;flex-wrap:wrap;align-items:flex-start">
<div>{per_class_table(scores)}<p class="note">Red: a class the model never predicts.</p></div>
{_figure(figs["conf"], "Confusion matrix of the exported model on PrivateTest, normalised per true class")}
</div>
<h2>Trials</h2>
<p class="note">{members_text}Fixed in every trial: {
        fixed or "–"
    }. State "stopped at epoch k/n": ASHA (or early
stopping) ended it. Epochs (best): epochs run (the epoch whose checkpoint is kept).</p>
{table}
<h2>The search</h2>
{
        _figure(
            figs["best"],
            "Best PublicTest accuracy so far over wall time; grey dots: every epoch of every trial",
        )
    }
{
        _figure(
            figs["timeline"],
            "Timeline of trials on the worker processes (a Ray actor is reused across trials)",
        )
    }
{
        _figure(
            by_name.get("importance.png"),
            imp_text + "Hyperparameter importance (Optuna PED-ANOVA on the study)",
        )
    }
{
        _figure(
            by_name.get("parallel_coordinates.png"),
            "Parallel coordinates of the trials' hyperparameters "
            "(Optuna); colour: the objective Optuna recorded",
        )
    }
{f"<p class='note'>{_e(optuna_note)}</p>" if optuna_note else ""}
{
        _figure(
            figs["curves"],
            "Learning curves of the top trials (rank, trial, architecture, lr → best PublicTest)",
        )
    }
{_figure(figs["size"], "PublicTest accuracy vs model size; red: the Pareto front")}
<h2>Data</h2>
{_figure(figs["dist"], "Images per class and split")}
{
        _figure(
            figs["conf_best"],
            "Confusion matrix of the best single trial on PublicTest, normalised per true class",
        )
    }
<p class="note">Generated {time.strftime("%Y-%m-%d %H:%M:%S %Z")} from {_e(search_dir)}.</p>
</body></html>
"""
    path = out / REPORT_FILE
    path.write_text(page)
    return path


def _count_states(trials: Sequence[dict], max_epochs: int | None) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in trials:
        s = state_of(r, max_epochs)
        key = "stopped early" if s.startswith("stopped") else ("error" if s.startswith("error") else s)
        counts[key] = counts.get(key, 0) + 1
    return counts
