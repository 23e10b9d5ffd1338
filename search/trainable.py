"""One Tune trial: train a registered model, report PublicTest accuracy per epoch, keep the best epoch.

The best epoch's checkpoint directory holds ``model.safetensors``, ``trial.json`` and the softmax outputs
``PublicTest_probs.npy`` / ``PrivateTest_probs.npy``. Trials get PrivateTest *images only*: no label of
that split ever reaches a trial.
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torchmetrics.functional.classification import multiclass_accuracy

from models import create_model

NORM_MEAN = 0.5
NORM_STD = 0.5
VAL_FILE = "PublicTest_probs.npy"
TEST_FILE = "PrivateTest_probs.npy"
WEIGHTS_FILE = "model.safetensors"
TRIAL_FILE = "trial.json"


@dataclass(frozen=True)
class TrialData:
    """What every trial reads; put in the object store once per search."""

    train_x: np.ndarray
    train_y: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray
    test_x: np.ndarray
    num_classes: int = 7


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W) → normalised float (N, 1, H, W), channels_last."""
    x = torch.from_numpy(np.ascontiguousarray(images)).unsqueeze(1).float()
    x = x.mul_(1.0 / 255).sub_(NORM_MEAN).div_(NORM_STD)
    return x.contiguous(memory_format=torch.channels_last)


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random flip, rotation ±10°, scale 0.9–1.1 and shift ±10% as one affine resample per batch."""
    n = x.shape[0]
    angle = (torch.rand(n, generator=gen) * 2 - 1) * math.radians(10)
    scale = 1 + (torch.rand(n, generator=gen) * 2 - 1) * 0.1
    flip = torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0)
    shift = (torch.rand(n, 2, generator=gen) * 2 - 1) * 0.2
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [torch.stack([cos * flip, -sin, shift[:, 0]], 1), torch.stack([sin * flip, cos, shift[:, 1]], 1)], 1
    )
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


@torch.no_grad()
def predict_proba(model: torch.nn.Module, images: np.ndarray, batch_size: int = 512) -> np.ndarray:
    model.eval()
    out = [
        torch.softmax(model(to_tensor(images[i : i + batch_size])), dim=1)
        for i in range(0, len(images), batch_size)
    ]
    return torch.cat(out).numpy().astype(np.float32)


def build_model(
    arch: str, num_classes: int, dropout: float, arch_kwargs: dict | None = None
) -> torch.nn.Module:
    model = create_model(arch, num_classes=num_classes, dropout=dropout, **(arch_kwargs or {}))
    return model.to(memory_format=torch.channels_last)


def train_fer(config: dict, data: TrialData) -> None:
    """Tune function trainable; ``config`` holds arch, lr, dropout, max_epochs, batch_size, seed, ..."""
    from ray import tune

    cpus = max(1, int(config.get("cpus_per_trial", 1)))
    torch.set_num_threads(cpus)
    seed = int(config.get("seed", 0))
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)

    arch_kwargs = config.get("arch_kwargs", {}) or {}
    model = build_model(config["arch"], data.num_classes, float(config["dropout"]), arch_kwargs)
    max_epochs = int(config["max_epochs"])
    batch_size = int(config.get("batch_size", 64))
    steps_per_epoch = math.ceil(len(data.train_x) / batch_size)
    opt = torch.optim.Adam(model.parameters(), lr=float(config["lr"]))
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=float(config["lr"]), total_steps=max_epochs * steps_per_epoch, pct_start=0.15
    )
    val_y = torch.from_numpy(data.val_y)
    best = -1.0
    for epoch in range(1, max_epochs + 1):
        model.train()
        order = rng.permutation(len(data.train_x))
        total_loss = 0.0
        for i in range(0, len(order), batch_size):
            idx = np.sort(order[i : i + batch_size])
            x = to_tensor(data.train_x[idx])
            if config.get("augment", True):
                x = augment(x, gen)
            y = torch.from_numpy(data.train_y[idx])
            loss = F.cross_entropy(model(x), y)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss is {loss.item()} at epoch {epoch}, step {i // batch_size}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total_loss += loss.item() * len(idx)

        val_probs = predict_proba(model, data.val_x)
        val_t = torch.from_numpy(val_probs)
        val_acc = float(multiclass_accuracy(val_t, val_y, num_classes=data.num_classes, average="micro"))
        val_loss = float(F.nll_loss(torch.log(val_t.clamp_min(1e-8)), val_y))
        metrics = {
            "epoch": epoch,
            "val_acc": val_acc,
            "val_loss": val_loss,
            "train_loss": total_loss / len(order),
            "best_val_acc": max(best, val_acc),
        }
        if val_acc > best:
            best = val_acc
            with tempfile.TemporaryDirectory() as d:
                save_best(Path(d), model, config, metrics, val_probs, predict_proba(model, data.test_x))
                tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))
        else:
            tune.report(metrics)


def save_best(
    d: Path,
    model: torch.nn.Module,
    config: dict,
    metrics: dict,
    val_probs: np.ndarray,
    test_probs: np.ndarray,
) -> None:
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(d / WEIGHTS_FILE))
    np.save(d / VAL_FILE, val_probs)
    np.save(d / TEST_FILE, test_probs)
    keep = ("arch", "lr", "dropout", "arch_kwargs", "max_epochs", "batch_size", "seed")
    trial = {"config": {k: config[k] for k in keep if k in config}, "metrics": metrics}
    (d / TRIAL_FILE).write_text(json.dumps(trial, indent=2))
