"""Train or fine-tune one model on a prepared dataset, outside a search (paper 001's cross-dataset runs).

Pretrain on FER2013, then fine-tune *all* layers on CK+ at a lower learning rate, or train the same
architecture from scratch on CK+: :func:`fit` does either, picking the epoch on the dataset's validation
split (PublicTest); the caller scores the test split once, after. A pretrained model whose classes match
the target's by name keeps its classifier; otherwise the last linear layer is replaced.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from search.metrics import accuracy
from search.trial.trainable import (
    TrialCheckpoint,
    fit_splits,
    predict_proba,
    seeded,
    train_one_epoch,
)


@dataclass(frozen=True)
class FitConfig:
    epochs: int = 20
    lr: float = 1e-3
    batch_size: int = 32
    weight_decay: float = 1e-4
    augment: float = 1.0
    seed: int = 0


@dataclass(frozen=True)
class FitResult:
    model: torch.nn.Module
    val_acc: float
    best_epoch: int
    val_history: list[float]
    seconds: float


def load_checkpoint_model(checkpoint: str | Path, num_classes: int | None = None) -> torch.nn.Module:
    """A trial's best checkpoint (``model.safetensors`` + ``trial.json``) as a model, for fine-tuning."""
    ckpt = TrialCheckpoint(Path(checkpoint))
    model = ckpt.load_model()
    if num_classes is not None and num_classes != ckpt.num_classes():
        replace_head(model, num_classes)
    return model


def replace_head(model: torch.nn.Module, num_classes: int) -> None:
    """Swap the last ``nn.Linear`` (the classifier) for a fresh one with ``num_classes`` outputs."""
    parent, name, last = None, None, None
    for module in model.modules():
        for child_name, child in module.named_children():
            if isinstance(child, torch.nn.Linear):
                parent, name, last = module, child_name, child
    if last is None:
        raise ValueError(f"{type(model).__name__} has no nn.Linear classifier to replace")
    setattr(parent, name, torch.nn.Linear(last.in_features, num_classes))


def fit(model: torch.nn.Module, data_root: str | Path, cfg: FitConfig) -> FitResult:
    """Train every weight of ``model`` on Training; keep the best PublicTest epoch (PrivateTest unread)."""
    start = time.perf_counter()
    gen, rng = seeded(cfg.seed)
    train_x, train_y, val_x, val_y = fit_splits(data_root)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = cfg.epochs * -(-len(train_x) // cfg.batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    best, best_epoch, best_state, history = -1.0, 0, None, []
    for epoch in range(1, cfg.epochs + 1):
        train_one_epoch(
            model, opt, train_x, train_y, batch_size=cfg.batch_size, gen=gen, rng=rng, strength=cfg.augment,
            sched=sched,
        )  # fmt: skip
        acc = accuracy(predict_proba(model, val_x), val_y)
        history.append(acc)
        if acc > best:
            best, best_epoch, best_state = acc, epoch, copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    return FitResult(model.eval(), best, best_epoch, history, time.perf_counter() - start)
