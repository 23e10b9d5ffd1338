"""``report.html`` + PNGs for a search directory: what a person looks at after a search and export."""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from search.compare import Row
from search.service import pareto_front, plot_confusion, read_trials


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def learning_curves(search_dir: Path, trial_ids: Sequence[str], path: Path) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    for tid in trial_ids:
        result = search_dir / "tune" / f"trial_{tid}" / "result.json"
        if not result.is_file():
            continue
        rows = [json.loads(line) for line in result.read_text().splitlines() if line.strip()]
        ax.plot([r["epoch"] for r in rows], [r["val_acc"] for r in rows], marker=".", label=tid)
    ax.set_xlabel("epoch")
    ax.set_ylabel("PublicTest accuracy")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def accuracy_vs_size(rows: Sequence[dict], path: Path) -> Path:
    """PublicTest accuracy against parameters (or latency when measured), Pareto front highlighted."""
    plt = _plt()
    x_key = "latency_ms" if any(r.get("latency_ms") for r in rows) else "params"
    pts = [
        {**r, "val_acc": float(r["val_acc"]), x_key: float(r[x_key])}
        for r in rows
        if r.get(x_key) and float(r.get("val_acc") or -1) >= 0
    ]
    front = sorted(pareto_front(pts, ("val_acc", x_key)), key=lambda r: r[x_key])
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.scatter([r[x_key] for r in pts], [r["val_acc"] for r in pts], c="0.6", label="trials")
    ax.plot([r[x_key] for r in front], [r["val_acc"] for r in front], "o-", c="C3", label="Pareto front")
    ax.set_xscale("log")
    ax.set_xlabel(x_key)
    ax.set_ylabel("PublicTest accuracy")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def ensemble_weights(members: Sequence[str], weights: Sequence[float], path: Path) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.bar(range(len(members)), weights, color="C0")
    ax.set_xticks(range(len(members)), members, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("weight")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def class_distribution(manifest: dict, path: Path) -> Path:
    plt = _plt()
    classes = manifest["classes"]
    counts = manifest["counts"]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    width = 0.8 / max(1, len(counts))
    for k, (split, per_class) in enumerate(counts.items()):
        ax.bar(
            np.arange(len(classes)) + k * width, [per_class.get(c, 0) for c in classes], width, label=split
        )
    ax.set_xticks(np.arange(len(classes)) + width * (len(counts) - 1) / 2, classes, rotation=30, ha="right")
    ax.set_ylabel("images")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _table(rows: Sequence[Row]) -> str:
    head = "<tr>" + "".join(
        f"<th>{h}</th>"
        for h in (
            "strategy",
            "TTA",
            "PublicTest",
            "PrivateTest",
            "95% CI",
            "macro-F1",
            "ms / 1000 img",
            "members",
        )
    )
    body = []
    for r in rows:
        members = ", ".join(f"{html.escape(m)}×{w:.2f}" for m, w in zip(r.members, r.weights, strict=True))
        body.append(
            f"<tr><td>{html.escape(r.strategy)}</td><td>{'yes' if r.tta else 'no'}</td>"
            f"<td>{r.public_acc:.4f}</td><td>{r.private_acc:.4f}</td>"
            f"<td>{r.ci95[0]:.4f}–{r.ci95[1]:.4f}</td><td>{r.private_macro_f1:.4f}</td>"
            f"<td>{r.ms_per_1000:.0f}</td><td>{members}</td></tr>"
        )
    return f"<table>{head}{''.join(body)}</table>"


def write_report(search_dir: Path, rows: Sequence[Row], chosen: Row, ensemble_confusion: np.ndarray) -> Path:
    """Write ``<search_dir>/report/report.html`` with its PNGs and return its path."""
    out = search_dir / "report"
    out.mkdir(exist_ok=True)
    trials = read_trials(search_dir)
    manifest = json.loads((search_dir / "data" / "manifest.json").read_text())
    top = [r["trial_id"] for r in sorted(trials, key=lambda r: -float(r.get("val_acc") or -1))[:5]]
    images = {
        "Learning curves of the top trials": learning_curves(search_dir, top, out / "learning_curves.png"),
        "Accuracy vs model size, Pareto front": accuracy_vs_size(trials, out / "accuracy_vs_size.png"),
        "Exported ensemble weights": ensemble_weights(chosen.members, chosen.weights, out / "weights.png"),
        "Confusion matrix of the exported ensemble (PrivateTest, final report)": plot_confusion(
            ensemble_confusion, manifest["classes"], out / "confusion_ensemble.png", split="PrivateTest"
        ),
        "Class distribution of the data": class_distribution(manifest, out / "class_distribution.png"),
    }
    best_trial = search_dir / "confusion_best_trial.png"
    if best_trial.is_file():
        images["Confusion matrix of the best trial (PublicTest)"] = best_trial
    figures = "".join(
        f"<figure><img src='{html.escape(str(Path('..') / p.relative_to(search_dir)))}'>"
        f"<figcaption>{html.escape(title)}</figcaption></figure>"
        for title, p in images.items()
    )
    tta = " with flip TTA" if chosen.tta else ""
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>fersearch report</title>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}
figure{{display:inline-block;margin:1em}}</style>
</head><body><h1>fersearch report: {html.escape(search_dir.name)}</h1>
<p>{len(trials)} trials. Every ensemble below was chosen on PublicTest; PrivateTest is reported only.
Exported: <b>{html.escape(chosen.strategy)}{tta}</b>, PrivateTest accuracy {chosen.private_acc:.4f}
(95% CI {chosen.ci95[0]:.4f}–{chosen.ci95[1]:.4f}).</p>
<h2>Ensembles</h2>{_table(rows)}<h2>Figures</h2>{figures}</body></html>
"""
    path = out / "report.html"
    path.write_text(page)
    return path
