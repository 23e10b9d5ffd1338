"""``fersearch data describe``: counts per class and split, and a class-distribution plot (before/after)."""

from __future__ import annotations

from pathlib import Path

from data_pipeline.config import VARIANTS
from data_pipeline.dataset import SPLITS, DataError, DataManifest, PreparedData

PLOT_FILE = "class_distribution.png"


def find_prepared(root: Path) -> list[PreparedData]:
    """``root`` itself if it is a prepared dataset, else the datasets ``prepare --out root`` lays out:
    ``root/<variant>/`` and ``root/one-vs-rest/<class>/``.

    Only those known places are looked at, never a recursive walk: pointed at a parent folder (``/tmp``,
    a home directory) a describe must not find, and write into, every dataset below it.
    """
    root = Path(root)
    m = DataManifest.try_read(root)
    if m is not None:
        return [PreparedData(root, m)]
    places = [root / v for v in VARIANTS if v != "one-vs-rest"]
    ovr = root / "one-vs-rest"
    if ovr.is_dir():
        places += sorted(p for p in ovr.iterdir() if p.is_dir())
    found = []
    for place in places:
        m = DataManifest.try_read(place)
        if m is not None:
            found.append(PreparedData(place, m))
    if not found:
        raise DataError(
            f"{root}: no manifest.json here nor in {root}/<variant>/ ({', '.join(VARIANTS)}); "
            "point at a prepared dataset or a `fersearch data prepare --out` folder"
        )
    return found


def counts_table(manifest: DataManifest) -> str:
    classes = manifest.classes
    counts = manifest.counts
    base = manifest.base.counts.get("Training") if manifest.base else None
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


def summary(manifest: DataManifest) -> str:
    m = manifest
    parts = [
        f"variant {m.variant} of {m.format or '?'} {m.source or ''}",
        f"rows in {m.rows_in:,}, written {m.rows_written:,}, "
        f"quarantined {m.rows_quarantined:,} {m.quarantine_kinds}, augmented {m.rows_augmented:,}",
        "class weights (Training): " + ", ".join(f"{c} {w:.3f}" for c, w in m.class_weights.items()),
    ]
    return "\n".join(parts)


def plot_distribution(manifest: DataManifest, path: Path) -> Path:
    """Bars per class: Training before (the base) and after this variant, plus validation and test."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    classes = manifest.classes
    counts = manifest.counts
    series: list[tuple[str, list[int]]] = []
    base = manifest.base
    if base and base.classes == classes:
        before = [base.counts["Training"][c] for c in classes]
        series.append((f"Training before ({base.variant})", before))
    series.append((f"Training ({manifest.variant})", [counts["Training"][c] for c in classes]))
    series += [(s, [counts[s][c] for c in classes]) for s in SPLITS[1:]]
    x = np.arange(len(classes))
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(max(7, 1.1 * len(classes) + 4), 4))
    for k, (label, values) in enumerate(series):
        ax.bar(x + (k - (len(series) - 1) / 2) * width, values, width, label=label)
    ax.set_xticks(x, classes, rotation=30, ha="right")
    ax.set_ylabel("images")
    ax.set_title(f"Class distribution: {manifest.variant}")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def describe(root: Path, out: Path | None = None) -> list[tuple[PreparedData, str, Path]]:
    """For each prepared dataset at ``root`` (see :func:`find_prepared`): (dataset, text report, plot path).

    The plot goes into the dataset's own folder, or with ``out`` to ``out/<path relative to root>/``, so
    nothing is written outside the folder given.
    """
    root = Path(root)
    result = []
    for p in find_prepared(root):
        text = f"{p.root}\n{summary(p.manifest)}\n{counts_table(p.manifest)}"
        where = Path(out) / p.root.relative_to(root) if out is not None else p.root
        result.append((p, text, plot_distribution(p.manifest, where / PLOT_FILE)))
    return result
