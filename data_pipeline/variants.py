"""Derived datasets: balanced (paper 004 §3.2), filtered (§3.3), one-vs-rest (§3.5).

Each takes the rows of its base dataset and returns new rows. Which source image is copied how (angle,
zoom, mirror) is drawn in the driver from the seed; Ray Data applies the transforms, so the result does
not depend on how many workers there are or how blocks are cut.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from data_pipeline import ferplus
from data_pipeline import preprocess as pp
from data_pipeline.config import AugmentConfig
from data_pipeline.dataset import CLASSES, SPLITS, DataError, Quarantined, Rows, image_array, images_of
from data_pipeline.engine import batches, default_blocks, ensure_ray, slices


@dataclass(frozen=True)
class CopyPlan:
    """Augmented copies: ``row`` of the source image, copy number ``aug`` (1, 2, ...) and transform."""

    row: np.ndarray
    aug: np.ndarray
    angle: np.ndarray
    zoom: np.ndarray
    mirror: np.ndarray

    @staticmethod
    def concat(plans: list[CopyPlan]) -> CopyPlan:
        if not any(len(p) for p in plans):
            e = np.zeros(0)
            return CopyPlan(e.astype(np.int64), e.astype(np.int16), e.astype(np.float32), e, e.astype(bool))
        keys = ("row", "aug", "angle", "zoom", "mirror")
        cat = {k: np.concatenate([getattr(p, k) for p in plans]) for k in keys}
        order = np.lexsort((cat["aug"], cat["row"]))
        return CopyPlan(**{k: v[order] for k, v in cat.items()})

    def __len__(self) -> int:
        return len(self.row)


def plan_copies(rows: np.ndarray, n_copies: int, aug: AugmentConfig, rng: np.random.Generator) -> CopyPlan:
    """``n_copies`` augmented images from ``rows``, spread evenly: source rows are taken round-robin in
    a seeded order, so every image is copied ``n_copies // len(rows)`` or one more times."""
    order = rng.permutation(np.sort(rows))
    k = np.arange(n_copies)
    angle = rng.uniform(-aug.rotation, aug.rotation, n_copies).astype(np.float32)
    zoom = rng.uniform(aug.zoom[0], aug.zoom[1], n_copies).astype(np.float32)
    mirror = rng.random(n_copies) < 0.5 if aug.mirror else np.zeros(n_copies, dtype=bool)
    plan = CopyPlan(order[k % len(order)], (k // len(order) + 1).astype(np.int16), angle, zoom, mirror)
    return CopyPlan.concat([plan])


def augment_batch(
    batch: pa.Table, *, plan_row: np.ndarray, plan: dict[str, np.ndarray], height: int, width: int
) -> pa.Table:
    """Ray Data UDF: every planned copy of the source images in ``batch``."""
    import cv2

    cv2.setNumThreads(1)
    rows = batch["row"].to_numpy()
    lo = np.searchsorted(plan_row, rows, "left")
    cnt = np.searchsorted(plan_row, rows, "right") - lo
    src = np.repeat(np.arange(len(rows)), cnt)
    pidx = np.repeat(lo, cnt) + np.arange(cnt.sum()) - np.repeat(np.cumsum(cnt) - cnt, cnt)
    images = images_of(batch["image"], height, width)
    out = np.empty((len(src), height, width), dtype=np.uint8)
    for j, (s, p) in enumerate(zip(src, pidx, strict=True)):
        out[j] = pp.augment(images[s], plan["angle"][p], plan["zoom"][p], bool(plan["mirror"][p]))
    return pa.table(
        {
            "row": pa.array(rows[src], pa.int64()),
            "aug": pa.array(plan["aug"][pidx], pa.int16()),
            "image": image_array(out),
        }
    )


def run_copies(
    source: pa.Table, plan: CopyPlan, height: int, width: int, parallelism: int | None
) -> pa.Table:
    """Apply ``plan`` to the images of ``source`` (columns row, image) on Ray Data → row, aug, image."""
    import ray.data

    empty = pa.schema([("row", pa.int64()), ("aug", pa.int16()), ("image", pa.binary(height * width))])
    if len(plan) == 0:
        return empty.empty_table()
    ensure_ray()
    need = np.unique(plan.row)
    src = source.select(["row", "image"]).filter(pc.is_in(source["row"], pa.array(need)))
    src = src.sort_by("row")
    per_row = np.bincount(np.searchsorted(need, plan.row), minlength=len(need))
    n_blocks = parallelism or default_blocks()
    ds = ray.data.from_arrow(slices(src, n_blocks, per_row))
    kwargs = {
        "plan_row": plan.row,
        "plan": {"aug": plan.aug, "angle": plan.angle, "zoom": plan.zoom, "mirror": plan.mirror},
        "height": height,
        "width": width,
    }
    ds = ds.map_batches(augment_batch, batch_format="pyarrow", batch_size=None, fn_kwargs=kwargs)
    parts = list(batches(ds))
    return pa.concat_tables(parts).cast(empty) if parts else empty.empty_table()


def _with_copies(base: pa.Table, copies: pa.Table, split: int) -> pa.Table:
    """Copies inherit every column of their source row (label, soft label, subject, path)."""
    if "aug" not in base.column_names:
        base = base.append_column("aug", pa.array(np.zeros(len(base), dtype=np.int16)))
    if len(copies) == 0:
        return base
    rows = base["row"].to_numpy()
    order = np.argsort(rows, kind="stable")
    idx = order[np.searchsorted(rows[order], copies["row"].to_numpy())]
    extra = base.take(pa.array(idx))
    extra = extra.set_column(extra.schema.get_field_index("image"), "image", copies["image"])
    extra = extra.set_column(extra.schema.get_field_index("aug"), "aug", copies["aug"])
    extra = extra.set_column(
        extra.schema.get_field_index("split"), "split", pa.array(np.full(len(extra), split, np.int8))
    )
    return pa.concat_tables([base, extra.cast(base.schema)])


def _split(table: pa.Table, i: int) -> pa.Table:
    return table.filter(pc.equal(table["split"], i))


def balance(base: Rows, per_class: int, aug: AugmentConfig, seed: int, parallelism: int | None) -> Rows:
    """Every class of Training to exactly ``per_class`` images: augmented copies for small classes, a
    seeded sample for large ones (the rest is reported as ``undersampled``). Validation/test untouched."""
    train = _split(base.table, 0)
    labels = train["label"].to_numpy()
    rows = train["row"].to_numpy()
    keep = np.ones(len(train), dtype=bool)
    plans, quarantine = [], list(base.quarantine)
    info: dict = {"per_class": per_class, "augmented": {}, "undersampled": {}, "empty_classes": []}
    for c, name in enumerate(base.classes):
        idx = np.flatnonzero(labels == c)
        rng = np.random.default_rng([seed, c])
        if len(idx) == 0:
            info["empty_classes"].append(name)
        elif len(idx) > per_class:
            drop = np.setdiff1d(idx, rng.choice(idx, per_class, replace=False))
            keep[drop] = False
            why = f"balanced: {name} has {len(idx)} > {per_class} training images; a seeded sample is kept"
            quarantine += [Quarantined(int(rows[i]), "undersampled", why) for i in drop]
            info["undersampled"][name] = len(drop)
        elif len(idx) < per_class:
            plans.append(plan_copies(rows[idx], per_class - len(idx), aug, rng))
            info["augmented"][name] = per_class - len(idx)
    plan = CopyPlan.concat(plans)
    copies = run_copies(train, plan, base.height, base.width, parallelism)
    new_train = _with_copies(train.filter(pa.array(keep)), copies, 0)
    rest = [_with_aug(_split(base.table, i)) for i in (1, 2)]
    table = pa.concat_tables([new_train, *rest])
    return Rows(table, quarantine, base.rows_in, base.classes, base.height, base.width, {"balance": info})


def _with_aug(t: pa.Table) -> pa.Table:
    if "aug" in t.column_names:
        return t
    return t.append_column("aug", pa.array(np.zeros(len(t), dtype=np.int16)))


def face_flags_batch(batch: pa.Table, *, height: int, width: int) -> pa.Table:
    """Ray Data UDF: does the Viola–Jones detector find a face in each image?"""
    import cv2

    cv2.setNumThreads(1)
    images = images_of(batch["image"], height, width)
    found = [pp.detect_face(img) is not None for img in images]
    return pa.table({"row": batch["row"], "face": pa.array(found, pa.bool_())})


def detect_faces(table: pa.Table, height: int, width: int, parallelism: int | None) -> np.ndarray:
    """Face found? for every row of ``table``, on Ray Data."""
    import ray.data

    if len(table) == 0:
        return np.zeros(0, dtype=bool)
    ensure_ray()
    src = table.select(["row", "image"])
    n_blocks = parallelism or default_blocks()
    ds = ray.data.from_arrow(slices(src, n_blocks))
    kwargs = {"height": height, "width": width}
    ds = ds.map_batches(face_flags_batch, batch_format="pyarrow", batch_size=256, fn_kwargs=kwargs)
    got = pa.concat_tables(list(batches(ds)))
    found = dict(zip(got["row"].to_pylist(), got["face"].to_pylist(), strict=True))
    return np.array([found[r] for r in table["row"].to_pylist()], dtype=bool)


def filter_rows(
    base: Rows,
    *,
    votes: ferplus.Votes | None,
    faces: bool,
    relabel: bool,
    relabel_min_share: float,
    relabel_max_original_votes: int,
    parallelism: int | None,
) -> Rows:
    """Drop non-faces (FER+ NF majority and/or no Viola–Jones face) and, with FER+ votes on the
    7-class FER2013 labels, relabel rows where FER+ clearly disagrees: another FER2013 class has at least
    ``relabel_min_share`` of the votes and the original label at most ``relabel_max_original_votes``."""
    t = base.table
    rows = t["row"].to_numpy()
    labels = t["label"].to_numpy().astype(np.int64)
    keep = np.ones(len(t), dtype=bool)
    quarantine = list(base.quarantine)
    info: dict = {"filter_by": [], "dropped_nonface_votes": 0, "dropped_no_face": 0, "relabelled": 0}
    if votes is not None:
        info["filter_by"].append("votes")
        if len(votes.votes) != base.rows_in:
            raise DataError(
                f"{votes.path}: {len(votes.votes)} data rows but the source has {base.rows_in}; "
                "the FER+ votes must be row-aligned with the FER2013 CSV"
            )
        split_names = np.array(SPLITS)[t["split"].to_numpy()]
        mismatch = np.flatnonzero(np.array(votes.usage, dtype=object)[rows] != split_names)
        if len(mismatch):
            i = int(rows[mismatch[0]])
            raise DataError(
                f"{votes.path}: row {i}: Usage {votes.usage[i]!r} but the source row {i} is in "
                f"{split_names[mismatch[0]]} ({len(mismatch)} rows differ); the files are not row-aligned"
            )
        vv = votes.votes[rows]
        top, _ = ferplus.majority(vv)
        nonface = top == ferplus.NF
        for i in np.flatnonzero(nonface):
            why = f"FER+ votes: not a face (NF {vv[i, ferplus.NF]} of {vv[i].sum()} votes)"
            quarantine.append(Quarantined(int(rows[i]), "filtered", why))
        keep &= ~nonface
        info["dropped_nonface_votes"] = int(nonface.sum())
        if relabel and base.classes == CLASSES:
            winner = vv.argmax(1)
            share = vv.max(1) / np.maximum(vv.sum(1), 1)
            orig_votes = vv[np.arange(len(vv)), labels]
            change = keep & (winner < len(CLASSES)) & (winner != labels) & (share >= relabel_min_share)
            change &= orig_votes <= relabel_max_original_votes
            top = winner
            pairs: dict[str, int] = {}
            for i in np.flatnonzero(change):
                key = f"{CLASSES[labels[i]]}->{CLASSES[top[i]]}"
                pairs[key] = pairs.get(key, 0) + 1
            labels = np.where(change, top, labels)
            info["relabelled"] = int(change.sum())
            info["relabelled_pairs"] = dict(sorted(pairs.items()))
            contempt = keep & (winner == 7) & (share >= relabel_min_share)
            info["contempt_winner_not_relabelled"] = int(contempt.sum())
    if faces:
        info["filter_by"].append("faces")
        found = detect_faces(t.filter(pa.array(keep)), base.height, base.width, parallelism)
        idx = np.flatnonzero(keep)
        lost = idx[~found]
        why = "no face found by the Viola-Jones detector"
        quarantine += [Quarantined(int(rows[i]), "filtered", why) for i in lost]
        keep[lost] = False
        info["dropped_no_face"] = len(lost)
    out = t.set_column(t.schema.get_field_index("label"), "label", pa.array(labels.astype(np.int8)))
    out = out.filter(pa.array(keep))
    return Rows(out, quarantine, base.rows_in, base.classes, base.height, base.width, {"filter": info})


def _water_fill(avail: dict[int, int], total: int) -> dict[int, int]:
    """Split ``total`` as evenly as possible over classes, none taking more than it has."""
    take = dict.fromkeys(avail, 0)
    left = total
    order = sorted(avail, key=lambda c: (avail[c], c))
    for i, c in enumerate(order):
        take[c] = min(avail[c], left // (len(order) - i))
        left -= take[c]
    for c in sorted(avail, key=lambda c: (-avail[c], c)):
        extra = min(left, avail[c] - take[c])
        take[c] += extra
        left -= extra
    return take


def one_vs_rest(
    base: Rows,
    positive: int,
    size: int,
    aug: AugmentConfig,
    seed: int,
    leftover_to_validation: bool,
    parallelism: int | None,
) -> Rows:
    """Paper 004 §3.5: a binary set, label 1 = ``positive``, 0 = other. Training: the positive class
    augmented (or sampled) to ``size``; ``size`` others spread evenly over the other classes. Positive
    images left over by sampling go to validation (as in the paper). Validation/test are relabelled."""
    name = base.classes[positive]
    train = _split(base.table, 0)
    labels = train["label"].to_numpy()
    rows = train["row"].to_numpy()
    rng = np.random.default_rng([seed, positive, 1])
    pos = np.flatnonzero(labels == positive)
    if len(pos) == 0:
        raise DataError(f"one-vs-rest: class {name} has no training images")
    keep = np.zeros(len(train), dtype=bool)
    moved = np.zeros(len(train), dtype=bool)
    quarantine = list(base.quarantine)
    plan = CopyPlan.concat([])
    if len(pos) >= size:
        chosen = rng.choice(pos, size, replace=False)
        keep[chosen] = True
        rest = np.setdiff1d(pos, chosen)
        if leftover_to_validation:
            moved[rest] = True
        else:
            why = f"one-vs-rest: {name} sampled to {size}"
            quarantine += [Quarantined(int(rows[i]), "undersampled", why) for i in rest]
    else:
        keep[pos] = True
        plan = plan_copies(rows[pos], size - len(pos), aug, rng)
    avail = {c: int((labels == c).sum()) for c in range(len(base.classes)) if c != positive}
    take = _water_fill(avail, size)
    for c, k in take.items():
        idx = np.flatnonzero(labels == c)
        chosen = np.random.default_rng([seed, positive, 2, c]).choice(idx, k, replace=False)
        keep[chosen] = True
        drop = np.setdiff1d(idx, chosen)
        why = f"one-vs-rest {name}: other class {base.classes[c]} sampled to {k}"
        quarantine += [Quarantined(int(rows[i]), "undersampled", why) for i in drop]
    copies = run_copies(train, plan, base.height, base.width, parallelism)
    new_train = _with_copies(train.filter(pa.array(keep)), copies, 0)
    leftovers = _with_aug(train.filter(pa.array(moved)))
    leftovers = leftovers.set_column(
        leftovers.schema.get_field_index("split"), "split", pa.array(np.ones(len(leftovers), np.int8))
    )
    parts = [new_train, leftovers, _with_aug(_split(base.table, 1)), _with_aug(_split(base.table, 2))]
    table = pa.concat_tables([p.cast(new_train.schema) for p in parts])
    binary = pc.cast(pc.equal(table["label"], positive), pa.int8())
    table = table.set_column(table.schema.get_field_index("label"), "label", binary)
    if "soft" in table.column_names:
        table = table.drop(["soft"])
    info = {
        "positive": name,
        "size": size,
        "positive_augmented": len(plan),
        "positive_moved_to_validation": int(moved.sum()),
        "other_taken": {base.classes[c]: k for c, k in take.items()},
    }
    classes = ("Other", name)
    return Rows(table, quarantine, base.rows_in, classes, base.height, base.width, {"one_vs_rest": info})
