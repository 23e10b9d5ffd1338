"""``fersearch data describe``: counts per class and split, and a class-distribution plot (before/after)."""

from __future__ import annotations

from pathlib import Path

from data_pipeline.dataset import SPLITS, DataError, PreparedData, read_manifest

PLOT_FILE = "class_distribution.png"


def find_prepared(root: Path) -> list[PreparedData]:
    """``root`` itself if it is a prepared dataset, else every prepared dataset below it (sorted)."""
    root = Path(root)
    m = read_manifest(root)
    if m is not None and "counts" in m:
        return [PreparedData(root, m)]
    found = []
    for path in sorted(root.rglob("manifest.json")):
        m = read_manifest(path.parent)
        if m is not None and "counts" in m:
            found.append(PreparedData(path.parent, m))
    if not found:
        raise DataError(f"{root}: no manifest.json here or below; run `fersearch data prepare` first")
    return found


def counts_table(manifest: dict) -> str:
    classes = manifest["classes"]
    counts = manifest["counts"]
    base = manifest.get("base", {}).get("counts", {}).get("Training")
    head = ["class", *SPLITS, "total"] + (["Training before"] if base else [])
    lines = []
    for c in classes:
        vals = [counts[s].get(c, 0) for s in SPLITS]
        extra = [base.get(c, 0)] if base else []
        lines.append([c, *vals, sum(vals), *extra])
    totals = [sum(counts[s].values()) for s in SPLITS]
    lines.append(["total", *totals, sum(totals), *([sum(base.values())] if base else [])])
    width = max(len(str(x)) for row in [head, *lines] for x in row[:1]) + 2
    out = [f"{head[0]:<{width}}" + "".join(f"{h:>16}" for h in head[1:])]
    out += [f"{row[0]:<{width}}" + "".join(f"{v:>16,}" for v in row[1:]) for row in lines]
    return "\n".join(out)


def summary(manifest: dict) -> str:
    parts = [
        f"variant {manifest['variant']} of {manifest.get('format', '?')} {manifest.get('source', '')}",
        f"rows in {manifest['rows_in']:,}, written {manifest['rows_written']:,}, "
        f"quarantined {manifest['rows_quarantined']:,} {manifest.get('quarantine_kinds', {})}, "
        f"augmented {manifest.get('rows_augmented', 0):,}",
        "class weights (Training): "
        + ", ".join(f"{c} {w:.3f}" for c, w in manifest.get("class_weights", {}).items()),
    ]
    return "\n".join(parts)


def plot_distribution(manifest: dict, path: Path) -> Path:
    """Bars per class: Training before (the base) and after this variant, plus validation and test."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    classes = manifest["classes"]
    counts = manifest["counts"]
    series: list[tuple[str, list[int]]] = []
    base = manifest.get("base")
    if base and base.get("classes") == classes:
        before = [base["counts"]["Training"][c] for c in classes]
        series.append((f"Training before ({base['variant']})", before))
    series.append((f"Training ({manifest['variant']})", [counts["Training"][c] for c in classes]))
    series += [(s, [counts[s][c] for c in classes]) for s in SPLITS[1:]]
    x = np.arange(len(classes))
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(max(7, 1.1 * len(classes) + 4), 4))
    for k, (label, values) in enumerate(series):
        ax.bar(x + (k - (len(series) - 1) / 2) * width, values, width, label=label)
    ax.set_xticks(x, classes, rotation=30, ha="right")
    ax.set_ylabel("images")
    ax.set_title(f"Class distribution: {manifest['variant']}")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def describe(root: Path) -> list[tuple[PreparedData, str, Path]]:
    """For each prepared dataset at/below ``root``: (dataset, text report, plot path)."""
    out = []
    for p in find_prepared(root):
        text = f"{p.root}\n{summary(p.manifest)}\n{counts_table(p.manifest)}"
        out.append((p, text, plot_distribution(p.manifest, p.root / PLOT_FILE)))
    return out
