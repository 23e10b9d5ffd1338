"""One Tune trial: train a registered model, report PublicTest metrics per epoch, checkpoint every epoch.

Each checkpoint holds ``model.safetensors`` and ``trial.json`` (epoch, metrics, best so far), so a trial
on a lost node resumes from its latest epoch. The best epoch's checkpoint also holds the softmax outputs
``PublicTest_probs.npy`` / ``PrivateTest_probs.npy`` and ``PublicTest_confusion.npy``. Trials get
PrivateTest *images only*: no label of that split ever reaches a trial.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torchmetrics.functional.classification import (
    multiclass_accuracy,
    multiclass_confusion_matrix,
    multiclass_f1_score,
    multiclass_recall,
)

from models import create_model

NORM_MEAN = 0.5
NORM_STD = 0.5
VAL_FILE = "PublicTest_probs.npy"
TEST_FILE = "PrivateTest_probs.npy"
CONFUSION_FILE = "PublicTest_confusion.npy"
WEIGHTS_FILE = "model.safetensors"
TRIAL_FILE = "trial.json"
HPARAMS = (
    "arch", "lr", "dropout", "optimizer", "batch_size", "weight_decay", "label_smoothing", "class_weighted",
    "variant", "augment", "schedule",
)  # fmt: skip


@dataclass(frozen=True)
class TrialData:
    """What every trial reads; put in the object store once per search.

    ``train`` maps a data variant (``original``, ``balanced``, …) to its Training images and labels;
    PublicTest and PrivateTest are the same for every variant.
    """

    train: dict[str, tuple[np.ndarray, np.ndarray]]
    val_x: np.ndarray
    val_y: np.ndarray
    test_x: np.ndarray
    classes: tuple[str, ...] = field(
        default=("Angry", "Disgust", "Fear", "Happy", "Sad", "Surprise", "Neutral")
    )

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def to_tensor(images: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 (N, H, W) → normalised float (N, 1, H, W), channels_last."""
    x = torch.from_numpy(np.ascontiguousarray(images)).to(device).unsqueeze(1).float()
    x = x.mul_(1.0 / 255).sub_(NORM_MEAN).div_(NORM_STD)
    return x.contiguous(memory_format=torch.channels_last)


def augment(x: torch.Tensor, gen: torch.Generator, strength: float = 1.0) -> torch.Tensor:
    """Flip, rotation ±10°·s, scale, shift ±10%·s in one affine resample, then random erasing (p 0.25·s)."""
    if strength <= 0:
        return x
    n = x.shape[0]

    def u(*shape: int) -> torch.Tensor:
        return (torch.rand(*shape, generator=gen) * 2 - 1).to(x.device)

    angle = u(n) * math.radians(10) * strength
    scale = 1 + u(n) * 0.1 * strength
    flip = torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0).to(x.device)
    shift = u(n, 2) * 0.2 * strength
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [torch.stack([cos * flip, -sin, shift[:, 0]], 1), torch.stack([sin * flip, cos, shift[:, 1]], 1)], 1
    )
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    h, w = x.shape[-2:]
    erase = (torch.rand(n, generator=gen) < 0.25 * min(strength, 2.0)).to(x.device)
    if erase.any():
        eh, ew = h // 4, w // 4
        y0 = torch.randint(0, h - eh + 1, (n,), generator=gen).to(x.device)
        x0 = torch.randint(0, w - ew + 1, (n,), generator=gen).to(x.device)
        rows = torch.arange(h, device=x.device)[None, :, None]
        cols = torch.arange(w, device=x.device)[None, None, :]
        box = (rows >= y0[:, None, None]) & (rows < (y0 + eh)[:, None, None])
        box = box & (cols >= x0[:, None, None]) & (cols < (x0 + ew)[:, None, None]) & erase[:, None, None]
        x = x.masked_fill(box[:, None], 0.0)
    return x.contiguous(memory_format=torch.channels_last)


@torch.no_grad()
def predict_proba(model: torch.nn.Module, images: np.ndarray, batch_size: int = 512) -> np.ndarray:
    model.eval()
    device = next(model.parameters()).device
    out = [
        torch.softmax(model(to_tensor(images[i : i + batch_size], device)), dim=1).cpu()
        for i in range(0, len(images), batch_size)
    ]
    return torch.cat(out).numpy().astype(np.float32)


def train_one_epoch(
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    x: np.ndarray,
    y: np.ndarray,
    *,
    batch_size: int,
    gen: torch.Generator,
    rng: np.random.Generator | None,
    strength: float = 1.0,
    sched=None,
    weight: torch.Tensor | None = None,
    smoothing: float = 0.0,
    device: torch.device | str = "cpu",
    order: np.ndarray | None = None,
) -> float:
    """One shuffled pass with on-batch augmentation; ``sched`` (if any) steps per batch. Returns the mean
    loss; a non-finite loss raises FloatingPointError naming the step. ``order``: the sample indices to
    visit, in order (a data-parallel rank's shard), instead of a permutation of all of ``x``."""
    model.train()
    order = rng.permutation(len(x)) if order is None else order
    total = 0.0
    for i in range(0, len(order), batch_size):
        idx = np.sort(order[i : i + batch_size])
        xb = augment(to_tensor(x[idx], device), gen, strength)
        yb = torch.from_numpy(y[idx]).long().to(device)
        loss = F.cross_entropy(model(xb), yb, weight=weight, label_smoothing=smoothing)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"training diverged: loss is {loss.item()} at step {i // batch_size}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
        total += loss.item() * len(idx)
    return total / max(1, len(order))


def build_model(
    arch: str, num_classes: int, dropout: float, arch_kwargs: dict | None = None
) -> torch.nn.Module:
    kwargs = {"dropout": dropout, **(arch_kwargs or {})}  # a fixed arch kwarg (a merge net's) wins
    model = create_model(arch, num_classes=num_classes, **kwargs)
    return model.to(memory_format=torch.channels_last)


def arch_kwargs_of(config: dict) -> dict:
    """Conditional parameters arrive as ``<arch>.<kwarg>``; fixed ones under ``arch_kwargs``."""
    prefix = f"{config['arch']}."
    found = {k[len(prefix) :]: v for k, v in config.items() if k.startswith(prefix)}
    return {**(config.get("arch_kwargs") or {}), **found}


@torch.no_grad()
def latency_ms(model: torch.nn.Module, side: int = 48, batch: int = 32, repeats: int = 3) -> float:
    """Inference milliseconds per image at batch 32 (paper 004's protocol), best of a few runs."""
    model.eval()
    device = next(model.parameters()).device
    x = torch.zeros(batch, 1, side, side, device=device).contiguous(memory_format=torch.channels_last)
    model(x)
    best = math.inf
    for _ in range(repeats):
        t = time.perf_counter()
        model(x)
        best = min(best, time.perf_counter() - t)
    return 1000 * best / batch


def make_optimizer(name: str, params, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "nadam":
        return torch.optim.NAdam(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}")


def make_scheduler(opt: torch.optim.Optimizer, schedule: str, lr: float, total_steps: int):
    """One-cycle or cosine, stepped per batch; plateau (factor 0.4, patience 5: paper 004), per epoch."""
    if schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=total_steps, pct_start=0.15)
    if schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total_steps)
    return torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=0.4, patience=5)


def class_weights(labels: np.ndarray, num_classes: int) -> torch.Tensor:
    """Inverse-frequency weights, mean 1 (paper 002's class-weighted cross-entropy)."""
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    w = np.where(counts > 0, counts.sum() / (num_classes * np.maximum(counts, 1)), 0.0)
    return torch.tensor(w / w[w > 0].mean(), dtype=torch.float32)


@dataclass
class Recipe:
    """How a trial's config says to train: optimiser, LR schedule (stepped per batch, or per epoch on
    PublicTest accuracy for ``plateau``), loss options, augmentation strength, early stopping."""

    opt: torch.optim.Optimizer
    sched: Any
    plateau: bool
    weight: torch.Tensor | None
    smoothing: float
    strength: float
    patience: int | None

    @classmethod
    def from_config(
        cls, config: dict, params, train_y: np.ndarray, k: int, device, steps_per_epoch: int
    ) -> Recipe:
        lr = float(config["lr"])
        opt = make_optimizer(
            config.get("optimizer", "adam"), params, lr, float(config.get("weight_decay", 0))
        )
        schedule = config.get("schedule", "onecycle")
        return cls(
            opt=opt,
            sched=make_scheduler(opt, schedule, lr, int(config["max_epochs"]) * steps_per_epoch),
            plateau=schedule == "plateau",
            weight=class_weights(train_y, k).to(device) if config.get("class_weighted") else None,
            smoothing=float(config.get("label_smoothing", 0.0)),
            strength=float(config.get("augment", 1.0)),
            patience=config.get("early_stop_patience"),
        )

    @property
    def batch_sched(self):
        """The scheduler ``train_one_epoch`` steps per batch (None for plateau)."""
        return None if self.plateau else self.sched

    def epoch_kwargs(self) -> dict:
        return {"sched": self.batch_sched, "weight": self.weight, "smoothing": self.smoothing,
                "strength": self.strength}  # fmt: skip

    def end_epoch(self, val_acc: float) -> None:
        if self.plateau:
            self.sched.step(val_acc)

    def stop_early(self, epoch: int, best_epoch: int) -> bool:
        return bool(self.patience) and epoch - best_epoch >= int(self.patience)


def select_device(gpus: float) -> torch.device:
    if gpus > 0 and torch.cuda.is_available():
        return torch.device("cuda")
    if gpus > 0:
        print(f"trial asked for {gpus} GPU but CUDA is not available: training on CPU")
    return torch.device("cpu")


def train_fer(config: dict, data: TrialData) -> None:
    """Tune function trainable; hyperparameters as in ``HPARAMS`` plus the fixed keys of the search."""
    from ray import tune

    cpus = max(1, int(config.get("cpus_per_trial", 1)))
    torch.set_num_threads(cpus)
    device = select_device(float(config.get("gpus_per_trial", 0.0)))
    seed = int(config.get("seed", 0))
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    k = data.num_classes

    variant = config.get("variant", "original")
    if variant not in data.train:
        raise ValueError(f"data variant {variant!r} was not prepared; available: {sorted(data.train)}")
    train_x, train_y = data.train[variant]
    model = build_model(config["arch"], k, float(config.get("dropout", 0.0)), arch_kwargs_of(config)).to(
        device
    )
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    lat = latency_ms(model) if "latency_ms" in config.get("objectives", ()) else None

    max_epochs = int(config["max_epochs"])
    batch_size = int(config.get("batch_size", 64))
    steps_per_epoch = math.ceil(len(train_x) / batch_size)
    recipe = Recipe.from_config(config, model.parameters(), train_y, k, device, steps_per_epoch)
    start_epoch, best, best_epoch = restore(
        tune.get_checkpoint(), model, device, recipe.batch_sched, steps_per_epoch
    )
    if start_epoch > 1:
        print(f"resumed from epoch {start_epoch - 1} (best PublicTest accuracy {best:.4f})")

    val_y = torch.from_numpy(data.val_y)
    for epoch in range(start_epoch, max_epochs + 1):
        t0 = time.perf_counter()
        try:
            train_loss = train_one_epoch(
                model, recipe.opt, train_x, train_y, batch_size=batch_size, gen=gen, rng=rng, device=device,
                **recipe.epoch_kwargs(),
            )  # fmt: skip
        except FloatingPointError as e:
            raise FloatingPointError(
                f"{e} of epoch {epoch} (arch {config['arch']}, lr {float(config['lr']):.3g}, "
                f"optimizer {config.get('optimizer', 'adam')})"
            ) from None
        train_s = time.perf_counter() - t0

        t1 = time.perf_counter()
        val_probs = predict_proba(model, data.val_x)
        val_t = torch.from_numpy(val_probs)
        val_acc = float(multiclass_accuracy(val_t, val_y, num_classes=k, average="micro"))
        recall = multiclass_recall(val_t, val_y, num_classes=k, average="none")
        metrics = {
            "epoch": epoch,
            "val_acc": val_acc,
            "val_macro_f1": float(multiclass_f1_score(val_t, val_y, num_classes=k, average="macro")),
            "val_loss": float(F.nll_loss(torch.log(val_t.clamp_min(1e-8)), val_y)),
            "train_loss": train_loss,
            "lr": recipe.opt.param_groups[0]["lr"],
            "params": n_params,
            "train_images": len(train_x),
            "train_images_per_s": len(train_x) / train_s,
            "train_s": train_s,
            **{f"val_recall_{c}": float(r) for c, r in zip(data.classes, recall, strict=True)},
        }
        if lat is not None:
            metrics["latency_ms"] = lat
        recipe.end_epoch(val_acc)
        improved = val_acc > best
        if improved:
            best, best_epoch = val_acc, epoch
        metrics["best_val_acc"] = best
        with tempfile.TemporaryDirectory() as d:
            extra = None
            if improved:
                confusion = multiclass_confusion_matrix(val_t, val_y, num_classes=k).numpy()
                extra = (val_probs, predict_proba(model, data.test_x), confusion)
            metrics["eval_s"] = time.perf_counter() - t1
            save_checkpoint(Path(d), model, config, metrics, best, best_epoch, extra)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))
        if recipe.stop_early(epoch, best_epoch):
            break


def restore(
    ckpt, model: torch.nn.Module, device: torch.device | str, sched, steps_per_epoch: int
) -> tuple[int, float, int]:
    """Load a trial's last checkpoint (Tune's or Train's) into ``model`` and fast-forward a per-batch
    ``sched``; returns (next epoch, best PublicTest accuracy, its epoch) -- (1, -1, 0) without one."""
    if ckpt is None:
        return 1, -1.0, 0
    with ckpt.as_directory() as d:
        model.load_state_dict(load_file(str(Path(d) / WEIGHTS_FILE), device=str(device)))
        state = json.loads((Path(d) / TRIAL_FILE).read_text())
    start_epoch = int(state["metrics"]["epoch"]) + 1
    if sched is not None:
        for _ in range((start_epoch - 1) * steps_per_epoch):
            sched.step()
    return start_epoch, float(state["best_val_acc"]), int(state["best_epoch"])


def save_checkpoint(
    d: Path,
    model: torch.nn.Module,
    config: dict,
    metrics: dict,
    best: float,
    best_epoch: int,
    extra: tuple[np.ndarray, np.ndarray, np.ndarray] | None,
) -> None:
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(d / WEIGHTS_FILE))
    if extra is not None:
        val_probs, test_probs, confusion = extra
        np.save(d / VAL_FILE, val_probs)
        np.save(d / TEST_FILE, test_probs)
        np.save(d / CONFUSION_FILE, confusion)
    hparams = {k: config[k] for k in HPARAMS if k in config}
    trial = {
        "config": {**hparams, "arch_kwargs": arch_kwargs_of(config), "max_epochs": config.get("max_epochs")},
        "metrics": metrics,
        "best_val_acc": best,
        "best_epoch": best_epoch,
        "has_predictions": extra is not None,
    }
    (d / TRIAL_FILE).write_text(json.dumps(trial, indent=2))
