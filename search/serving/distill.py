"""``fersearch distill``: the exported ensemble compressed into one fast student (Hinton et al., 2015).

The teacher is the export as it serves (every member, its TTA): its probabilities on the Training images
are computed once, in batches, and kept. With the mirror among its TTA views the teacher is mirror-invariant,
so the student's flipped images share their original's targets. The student (any registry architecture;
default the architecture of the export's best single member, started from that member's weights) trains
through the one epoch loop of ``search/trial`` on a mix of the tempered soft targets and the hard labels,
each temperature under its share of the budget with a cosine schedule fitted to the epochs that share
affords. PublicTest chooses the temperature and the epoch; the final report's split is never read here.
The student is written as an ordinary export of one member and no TTA (one forward pass per face), whose
manifest records ``distilled: true`` and its teacher, so ``predict`` and ``serve`` take it as they are.
"""

from __future__ import annotations

import copy
import hashlib
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from data_pipeline import DataManifest
from data_pipeline.dataset import load_split
from models import list_models
from search.ensemble import Candidate, WeightedEnsemble
from search.serving.export import MANIFEST_FILE, ExportManifest, Predictor, export_ensemble
from search.trial import WEIGHTS_FILE, build_model, choose_precision, predict_proba, seeded, train_one_epoch


class DistillError(ValueError):
    """A distillation that cannot start: the message names the flag, file or value and what is wrong."""


@dataclass(frozen=True)
class DistillOptions:
    """``arch``: the student's architecture (default: the best single member's); ``budget_s``: training
    time for all temperatures together; ``temperatures``: PublicTest picks one; ``soft_weight``: the soft
    targets' share of the loss. ``warm_start``: a student of the best member's architecture starts from that
    member's weights at ``lr * WARM_LR_SCALE`` (the budget then refines a net that already scores what the
    single member scores, instead of training one again from scratch); otherwise from random weights at
    ``lr``."""

    arch: str | None = None
    budget_s: float = 600.0
    temperatures: tuple[float, ...] = (2.0, 4.0)
    soft_weight: float = 0.7
    batch_size: int = 64
    lr: float = 2e-3
    seed: int = 0
    precision: str = "auto"
    threads: int | None = None
    warm_start: bool = True

    def check(self) -> None:
        if self.arch is not None and self.arch not in list_models():
            raise DistillError(f"--arch {self.arch!r} is not a registered model: {', '.join(list_models())}")
        if not self.temperatures or any(not (t > 0 and math.isfinite(t)) for t in self.temperatures):
            raise DistillError(f"--temperature must be > 0, got {', '.join(map(str, self.temperatures))}")
        if not self.budget_s > 0:
            raise DistillError(f"--budget-min must be > 0, got {self.budget_s / 60:g}")
        if not 0 <= self.soft_weight <= 1:
            raise DistillError(f"the soft targets' weight must be in 0..1, got {self.soft_weight}")


@dataclass(frozen=True)
class DistillResult:
    export_dir: Path
    arch: str
    temperature: float
    epoch: int
    public_acc: float
    teacher_public_acc: float
    tried: list[dict] = field(default_factory=list)
    model: torch.nn.Module | None = field(default=None, repr=False, compare=False)  # the student, in memory


def locate(source: str | Path, data: str | Path | None = None) -> tuple[Path, Path]:
    """(export directory, prepared data directory) of a run directory (``export/`` and ``data/`` inside)
    or of an export directory with ``data`` (a prepared directory) given."""
    root = Path(source)
    export = root if (root / MANIFEST_FILE).is_file() else root / "export"
    if not (export / MANIFEST_FILE).is_file():
        raise DistillError(
            f"{root}: neither an export nor a run directory with one (no {export / MANIFEST_FILE})"
        )
    prepared = Path(data) if data else (root / "data" if export != root else export.parent / "data")
    if DataManifest.try_read(prepared) is None:
        raise DistillError(
            f"{prepared}: no prepared dataset (the teacher's Training and PublicTest images); pass --data DIR"
        )
    return export, prepared


def tempered(probs: np.ndarray, temperature: float) -> np.ndarray:
    """Probabilities softened as softmax(log p / T) (the teacher's logits are an ensemble's, not at hand)."""
    logits = np.log(np.clip(probs, 1e-8, 1.0)) / temperature
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


#: A warm-started student's learning rate against a fresh one's: it starts converged, and Adam at the full
#: rate first undoes much of what the member learned.
WARM_LR_SCALE = 0.25


def student_of(manifest: ExportManifest, arch: str | None) -> tuple[str, dict]:
    """The student's architecture and kwargs: ``arch`` as registered, else the best single member's (its
    PublicTest accuracy, then its weight)."""
    if arch:
        return arch, {}
    best = manifest.best_member()
    return best.arch, dict(best.arch_kwargs)


def _accuracy(model: torch.nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(predict_proba(model, x).argmax(1) == y))


def _train(
    arch: str, kwargs: dict, soft: np.ndarray, data: tuple, t: float, budget_s: float, opts: DistillOptions,
    precision: str, init: dict | None = None,
) -> tuple[torch.nn.Module, int, float, list[float]]:  # fmt: skip
    """One student at temperature ``t`` within ``budget_s``: the first epoch at the base rate times its
    pace, then a cosine to zero over the epochs the rest affords; the PublicTest-best epoch is kept. With
    ``init`` (the best member's weights) the student starts from them, as epoch 0, at a lower rate."""
    x, y, vx, vy = data
    gen, rng = seeded(opts.seed)
    model = build_model(arch, soft.shape[1], 0.0, kwargs)
    lr = opts.lr
    best, best_acc, best_epoch, epoch, planned = None, -1.0, 0, 0, 1
    if init is not None:
        model.load_state_dict(init)
        lr *= WARM_LR_SCALE
        best, best_acc = copy.deepcopy(model.state_dict()), _accuracy(model, vx, vy)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    steps = -(-len(x) // opts.batch_size)
    start, sched, curve = time.time(), None, []
    while epoch < planned:
        train_one_epoch(
            model, opt, x, y, batch_size=opts.batch_size, gen=gen, rng=rng, sched=sched, precision=precision,
            augment_kind="shift", soft=soft, soft_weight=opts.soft_weight, temperature=t,
        )  # fmt: skip
        epoch += 1
        acc = _accuracy(model, vx, vy)
        curve.append(acc)
        if acc > best_acc:
            best, best_acc, best_epoch = copy.deepcopy(model.state_dict()), acc, epoch
        if epoch == 1:  # the pace is known: plan the rest as one cosine cycle
            epoch_s = time.time() - start
            planned = max(1, int(budget_s // max(epoch_s, 1e-6)))
            if planned > 1:
                sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=(planned - 1) * steps)
    model.load_state_dict(best)
    return model.eval(), best_epoch, best_acc, curve


EXPORT_RESERVE_S = 20.0  # writing the student's export (ONNX trace and check) after its last epoch


def distill(
    source: str | Path,
    options: DistillOptions,
    out: str | Path | None = None,
    data: str | Path | None = None,
    deadline: float | None = None,
) -> DistillResult:
    """Train the student and export it (default ``<run>/student`` beside the teacher's ``export``).

    ``deadline`` (``time.time()``): the export must be written by then, as inside ``fersearch run``'s budget;
    the training budget is what the soft labels leave of it, at most ``options.budget_s`` (each temperature
    still gets one epoch)."""
    options.check()
    export_dir, prepared = locate(source, data)
    teacher = Predictor.from_dir(export_dir)
    manifest = teacher.manifest
    arch, kwargs = student_of(manifest, options.arch)
    best_member = manifest.best_member()
    init = None
    if options.warm_start and (arch, kwargs) == (best_member.arch, dict(best_member.arch_kwargs)):
        init = load_file(str(export_dir / best_member.file))
    x, y = load_split(prepared, "Training")
    vx, vy = load_split(prepared, "PublicTest")
    if options.threads:
        torch.set_num_threads(options.threads)
    probs = teacher.predict_proba(x)  # once, every member with the export's TTA
    teacher_acc = float(np.mean(teacher.predict_proba(vx).argmax(1) == vy))
    precision = options.precision
    if precision == "auto":
        precision, _ = choose_precision(arch, kwargs, torch.get_num_threads(), options.batch_size)
    budget_s = options.budget_s
    if deadline is not None:
        budget_s = max(0.0, min(budget_s, deadline - time.time() - EXPORT_RESERVE_S))
    share = budget_s / len(options.temperatures)
    tried, best = [], None
    for t in options.temperatures:
        model, epoch, acc, curve = _train(arch, kwargs, tempered(probs, t), (x, y, vx, vy), t, share, options,
                                          precision, init)  # fmt: skip
        tried.append({"temperature": t, "epoch": epoch, "epochs": len(curve), "public_acc": acc})
        if best is None or acc > best[2]:
            best = (model, t, acc, epoch)
    model, t, acc, epoch = best
    target = Path(out) if out else export_dir.parent / "student"
    ckpt = target.parent / f".{target.name}-weights"
    ckpt.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(ckpt / WEIGHTS_FILE))
    student = Candidate(f"student-T{t:g}@{epoch}", arch, kwargs, ckpt, acc)
    metrics = {
        "PublicTest": {"acc": acc},
        "teacher": {"PublicTest": {"acc": teacher_acc}, "members": len(manifest.members),
                    "tta": manifest.tta_flip},
        "distill": {"temperature": t, "epoch": epoch, "soft_weight": options.soft_weight, "tried": tried,
                    "budget_s": round(budget_s, 1), "precision": precision,
                    "warm_start": best_member.file if init is not None else None},
    }  # fmt: skip
    export_ensemble(
        [student], WeightedEnsemble({0: 1.0}, "distilled", False), target, classes=manifest.classes,
        metrics=metrics, data_manifest=DataManifest.read(prepared), preprocessing=manifest.preprocessing,
        teacher=hashlib.sha256((export_dir / MANIFEST_FILE).read_bytes()).hexdigest(),
    )  # fmt: skip
    shutil.rmtree(ckpt, ignore_errors=True)
    return DistillResult(target, arch, t, epoch, acc, teacher_acc, tried, model)


__all__ = ["DistillError", "DistillOptions", "DistillResult", "distill", "locate", "student_of", "tempered"]
