"""``prepare``: source → *original* → the requested variant, each a cached directory of its own.

Layout under ``out_dir``: ``original/``, ``balanced/``, ``filtered/``, ``filtered-balanced/``,
``one-vs-rest/<Class>/``; each holds ``<split>.parquet``, ``manifest.json`` and ``quarantine.csv`` and is
reused when its manifest records the same spec (input hashes, options, seed, base, pipeline version).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from data_pipeline import ferplus
from data_pipeline.config import PrepareConfig, SourceConfig, as_dict
from data_pipeline.dataset import (
    BAD_KINDS,
    CLASSES8,
    PIPELINE_VERSION,
    BaseVariant,
    DataError,
    DataManifest,
    PreparedData,
    Quarantined,
    Rows,
    cached,
    read_rows,
    sha256_file,
    spec_hash,
    write_dataset,
)
from data_pipeline.fer2013 import CSV_PROBLEMS

FORMATS = {
    "fer2013": "fer2013-kaggle-csv",
    "ferplus": "ferplus-votes+fer2013-kaggle-csv",
    "ckplus": "ckplus-class-folders",
    "jaffe": "jaffe-tiff",
    "folder": "image-folder",
}


def _tree_sha256(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(f"{p.relative_to(root).as_posix()}\0{sha256_file(p)}\n".encode())
    return h.hexdigest()


def _source_spec(cfg: PrepareConfig) -> tuple[dict, str]:
    s = cfg.source
    if not s.path.exists():
        raise DataError(f"{s.path}: no such file")
    main = sha256_file(s.path) if s.path.is_file() else _tree_sha256(s.path)
    spec: dict = {"kind": s.kind, "sha256": main, "preprocess": as_dict(cfg.preprocess)}
    if s.kind == "ferplus":
        votes = s.votes_path()
        if votes is None or not votes.is_file():
            raise DataError(
                f"{s.path}: the ferplus source needs the FER+ votes: pass --ferplus fer2013new.csv "
                "or put fer2013new.csv next to the FER2013 CSV"
            )
        spec["votes_sha256"] = sha256_file(votes)
        spec["label_mode"] = s.label_mode
    if s.kind in ("ckplus", "jaffe", "folder"):
        spec["split_fractions"] = list(s.split_fractions)
        spec["seed"] = cfg.seed
        if s.kind != "jaffe":
            spec["contempt"] = s.contempt
    return spec, main


def _read_source(cfg: PrepareConfig, root: Path) -> Rows:
    s = cfg.source
    if s.kind in ("ckplus", "jaffe", "folder"):
        from data_pipeline.images import read_images

        return read_images(s, cfg.preprocess, cfg.seed, cfg.parallelism)
    from data_pipeline.fer2013 import read_fer2013

    root.mkdir(parents=True, exist_ok=True)
    rows, usage = read_fer2013(s.path, cfg.preprocess, scratch=root, parallelism=cfg.parallelism)
    if s.kind == "fer2013":
        return rows
    return _apply_ferplus(cfg, rows, usage.to_pylist())


def _apply_ferplus(cfg: PrepareConfig, rows: Rows, usage: list[str | None]) -> Rows:
    """FER2013 images with FER+ labels: 8 classes, majority or probability (soft) labels."""
    path = cfg.source.votes_path()
    assert path is not None
    votes = ferplus.read_votes(path)
    ferplus.check_aligned(votes, cfg.source.path, [u.strip() if u else u for u in usage])
    t = rows.table
    r = t["row"].to_numpy()
    if cfg.source.label_mode == "majority":
        labels, reasons = ferplus.majority_labels(votes.votes)
        soft = None
    else:
        soft, labels, reasons = ferplus.probability_labels(votes.votes)
    quarantine = list(rows.quarantine)
    keep = np.ones(len(t), dtype=bool)
    by_rule = 0
    for k, i in enumerate(r):
        if int(i) in votes.bad:
            quarantine.append(Quarantined(int(i), "bad", f"{path.name}: {votes.bad[int(i)]}"))
            keep[k] = False
        elif labels[i] < 0:
            origin = f"votes={votes.votes[i].tolist()}"
            quarantine.append(Quarantined(int(i), "label", reasons[i] or "", origin))
            keep[k] = False
            by_rule += 1
    t = t.set_column(t.schema.get_field_index("label"), "label", pa.array(labels[r], pa.int8()))
    if soft is not None:
        flat = pa.array(soft[r].ravel(), pa.float32())
        t = t.append_column("soft", pa.FixedSizeListArray.from_arrays(flat, soft.shape[1]))
    info = {"ferplus": votes.info() | {"label_mode": cfg.source.label_mode}}
    info["ferplus"]["dropped_by_label_rule"] = by_rule
    return Rows(t.filter(pa.array(keep)), quarantine, rows.rows_in, CLASSES8, rows.height, rows.width, info)


def _problem(reason: str) -> str:
    """The kind of a bad row, for the summary: a CSV line's ``<kind>: detail`` prefix, else the reason's
    words before any number or quoted value (``pixels has 3 values`` → ``pixels has``)."""
    head = reason.split(": ", 1)[0]
    if head in CSV_PROBLEMS:
        return head
    words = []
    for w in reason.split():
        if any(ch.isdigit() for ch in w) or w[:1] in "'\"(":
            break
        words.append(w)
    return " ".join(words) or reason


def _check_bad_fraction(rows: Rows, cfg: PrepareConfig) -> None:
    """Fail when too many rows are bad, naming how many of each kind and where the first ones are
    (CSV lines, or files for image sources)."""
    bad = sorted((q for q in rows.quarantine if q.kind in BAD_KINDS), key=lambda q: q.row)
    if len(bad) <= cfg.max_bad_fraction * rows.rows_in:
        return
    by_kind: dict[str, list[str]] = {}
    for q in bad:
        where = q.origin.split(": ", 1)[0] if q.origin.startswith("line ") else q.origin or f"row {q.row}"
        by_kind.setdefault(_problem(q.reason), []).append(where)
    kinds = ", ".join(
        f"{kind} {len(at)} ({', '.join(at[:3])}{', …' if len(at) > 3 else ''})"
        for kind, at in sorted(by_kind.items(), key=lambda kv: -len(kv[1]))
    )
    first = "; ".join(f"row {q.row}: {q.reason}{f' [{q.origin}]' if q.origin else ''}" for q in bad[:3])
    what = "malformed CSV: " if by_kind.keys() & CSV_PROBLEMS else ""
    raise DataError(
        f"{cfg.source.path}: {what}{len(bad)} of {rows.rows_in} rows are bad "
        f"(> {cfg.max_bad_fraction:.1%} allowed): {kinds}; first: {first}"
    )


@dataclass(frozen=True)
class _Built:
    """A dataset on disk and, when it was just built, its rows still in memory (saves re-reading the
    base of the next variant; rows are canonical either way, so both paths give the same bytes)."""

    prepared: PreparedData
    rows: Rows | None = None

    def load(self) -> Rows:
        return self.rows if self.rows is not None else read_rows(self.prepared)


def build_original(cfg: PrepareConfig, root: Path) -> PreparedData:
    """The source as it is (decoded, preprocessed, split), written to ``root``."""
    return _original(cfg, root).prepared


def _original(cfg: PrepareConfig, root: Path) -> _Built:
    spec, main_sha = _source_spec(cfg)
    spec["pipeline_version"] = PIPELINE_VERSION
    sha = spec_hash(spec)
    hit = cached(root, sha)
    if hit:
        return _Built(hit)
    made = [d for d in (root, *root.parents) if not d.exists()]  # what a refused prepare must not leave
    try:
        rows = _read_source(cfg, root)
        _check_bad_fraction(rows, cfg)
    except BaseException:
        for d in made:  # deepest first; a folder something else wrote into stays
            if d.is_dir() and not any(d.iterdir()):
                d.rmdir()
        raise
    s = cfg.source
    manifest = DataManifest(
        source=str(s.path.resolve()),
        source_sha256=main_sha,
        format=FORMATS[s.kind],
        variant="original",
        seed=cfg.seed,
        source_options={k: v for k, v in as_dict(s).items() if k not in ("kind", "path")},
        preprocess=as_dict(cfg.preprocess),
        spec=spec,
        spec_sha256=sha,
    )
    return _Built(write_dataset(root, rows, manifest), rows)


def _derived(
    cfg: PrepareConfig, base: _Built, root: Path, name: str, params: dict, make: Callable[[Rows], Rows]
) -> _Built:
    b, m = base.prepared, base.prepared.manifest
    spec = {
        "variant": name,
        "params": params,
        "seed": cfg.seed,
        "base_spec_sha256": m.spec_sha256,
        "pipeline_version": PIPELINE_VERSION,
    }
    sha = spec_hash(spec)
    hit = cached(root, sha)
    if hit:
        return _Built(hit)
    rows = make(base.load())
    manifest = DataManifest(
        source=m.source,
        source_sha256=m.source_sha256,
        format=m.format,
        variant=name,
        variant_params=params,
        seed=cfg.seed,
        source_options=m.source_options,
        preprocess=m.preprocess,
        base=BaseVariant(
            variant=m.variant or "", root=os.path.relpath(b.root, root), classes=m.classes, counts=m.counts
        ),
        spec=spec,
        spec_sha256=sha,
    )
    return _Built(write_dataset(root, rows, manifest), rows)


def _balanced(cfg: PrepareConfig, base: _Built, root: Path, name: str) -> _Built:
    from data_pipeline.variants import balance

    v = cfg.variant
    params = {"per_class": v.per_class, "augment": as_dict(v.augment)}

    def make(rows: Rows) -> Rows:
        return balance(rows, v.per_class, v.augment, cfg.seed, cfg.parallelism)

    return _derived(cfg, base, root, name, params, make)


def _filtered(cfg: PrepareConfig, original: _Built, root: Path) -> _Built:
    from data_pipeline.variants import filter_rows

    v, s = cfg.variant, cfg.source
    votes_path = s.votes_path() if s.kind in ("fer2013", "ferplus") else None
    mode = v.filter_by if v.filter_by != "auto" else ("votes" if votes_path else "faces")
    use_votes, use_faces = mode in ("votes", "both"), mode in ("faces", "both")
    if use_votes and (votes_path is None or not votes_path.is_file()):
        raise DataError(
            f"{s.path}: --filter-by {mode} needs FER+ votes (fer2013new.csv, row-aligned with a "
            "FER2013 CSV); pass --ferplus or use --filter-by faces"
        )
    params: dict = {"filter_by": mode}
    if use_votes:
        assert votes_path is not None
        params |= {
            "votes_sha256": sha256_file(votes_path),
            "relabel": v.relabel,
            "relabel_min_share": v.relabel_min_share,
            "relabel_max_original_votes": v.relabel_max_original_votes,
        }

    def make(rows: Rows) -> Rows:
        votes = ferplus.read_votes(votes_path) if use_votes and votes_path else None
        return filter_rows(
            rows,
            votes=votes,
            faces=use_faces,
            relabel=v.relabel,
            relabel_min_share=v.relabel_min_share,
            relabel_max_original_votes=v.relabel_max_original_votes,
            parallelism=cfg.parallelism,
        )

    return _derived(cfg, original, root, "filtered", params, make)


def _positive_index(classes: list[str] | tuple[str, ...], positive: str | None) -> int:
    names = [c.lower() for c in classes]
    if positive is None or positive.lower() not in names:
        raise DataError(f"one-vs-rest needs --positive, one of {', '.join(classes)} (got {positive!r})")
    return names.index(positive.lower())


def _one_vs_rest(cfg: PrepareConfig, base: _Built, out: Path, positive: str) -> _Built:
    from data_pipeline.variants import one_vs_rest

    v = cfg.variant
    p = _positive_index(base.prepared.classes, positive)
    name = base.prepared.classes[p]
    params = {
        "positive": name,
        "size": v.ovr_size,
        "base": base.prepared.manifest.variant,
        "leftover_to_validation": v.leftover_to_validation,
        "augment": as_dict(v.augment),
    }

    def make(rows: Rows) -> Rows:
        return one_vs_rest(
            rows, p, v.ovr_size, v.augment, cfg.seed, v.leftover_to_validation, cfg.parallelism
        )

    return _derived(cfg, base, out / "one-vs-rest" / name, "one-vs-rest", params, make)


def _ovr_base(cfg: PrepareConfig, out: Path) -> _Built:
    original = _original(cfg, out / "original")
    return _filtered(cfg, original, out / "filtered") if cfg.variant.ovr_base == "filtered" else original


def prepare(
    cfg: PrepareConfig, out_dir: str | Path, *, original_root: str | Path | None = None
) -> PreparedData:
    """Build (or reuse) ``cfg.variant`` of ``cfg.source`` under ``out_dir``; returns its directory.

    ``load_split(result.root, split)`` reads it. Bases are built on the way (``original`` always;
    ``filtered`` for filtered-balanced and one-vs-rest) and cached alongside. ``original_root``: where the
    *original* variant lives (or is built) if not ``out_dir/original`` -- a search keeps it in ``data/``.
    """
    out = Path(out_dir)
    name = cfg.variant.name
    if name == "one-vs-rest":
        base = _ovr_base(cfg, out)
        _positive_index(base.prepared.classes, cfg.variant.positive)
        return _one_vs_rest(cfg, base, out, cfg.variant.positive or "").prepared
    original = _original(cfg, Path(original_root) if original_root else out / "original")
    if name == "original":
        return original.prepared
    if name == "balanced":
        return _balanced(cfg, original, out / "balanced", "balanced").prepared
    filtered = _filtered(cfg, original, out / "filtered")
    if name == "filtered":
        return filtered.prepared
    return _balanced(cfg, filtered, out / "filtered-balanced", "filtered-balanced").prepared


def prepare_one_vs_rest(cfg: PrepareConfig, out_dir: str | Path) -> dict[str, PreparedData]:
    """One binary dataset per class that has training images (``cfg.variant.positive`` is ignored)."""
    out = Path(out_dir)
    base = _ovr_base(cfg, out)
    train = base.prepared.manifest.counts["Training"]
    return {c: _one_vs_rest(cfg, base, out, c).prepared for c in base.prepared.classes if train.get(c, 0) > 0}


def prepare_fer2013(
    csv_path: str | Path,
    out_dir: str | Path,
    *,
    max_bad_fraction: float = 0.01,
    parallelism: int | None = None,
) -> PreparedData:
    """Ingest a Kaggle-layout FER2013 CSV (plain or ``.gz``) into ``out_dir`` (the *original* variant).

    Writes ``<split>.parquet`` (row, label, image), ``quarantine.csv`` and ``manifest.json``. A directory
    already prepared from the same source bytes and options is reused as it is. Fails if more than
    ``max_bad_fraction`` of the rows are bad.
    """
    cfg = PrepareConfig(
        SourceConfig("fer2013", Path(csv_path)), max_bad_fraction=max_bad_fraction, parallelism=parallelism
    )
    return build_original(cfg, Path(out_dir))
