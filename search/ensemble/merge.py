"""The parallel-merge boosting net (paper 000, Model B) built from the search's best trials.

The top trials' trained models become the bases of one ``parallel_merge`` net, which trains in the paper's
two phases on Training: phase 1 with the bases frozen (only the merge layers learn), phase 2 all weights
at a lower learning rate. The epoch kept is the best on PublicTest; PrivateTest probabilities are written
for the final report only, never read here. The result is saved like a trial's best checkpoint
(``model.safetensors``, ``trial.json``, PublicTest/PrivateTest probabilities), so the ensemble selector
treats it as one more candidate.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from data_pipeline.fer2013 import load_split
from models import ParallelMerge
from search.metrics import accuracy
from search.spec import MergeConfig
from search.trial import (
    TEST_FILE,
    VAL_FILE,
    WEIGHTS_FILE,
    SavedTrial,
    TrialCheckpoint,
    fit_splits,
    seeded,
    to_tensor,
    train_one_epoch,
)

MERGE_DIR = "merge"


@dataclass(frozen=True)
class EpochLog:
    phase: int
    epoch: int
    val_acc: float
    base_val_accs: list[float]
    train_loss: float
    seconds: float


@dataclass(frozen=True)
class MergeResult:
    """The saved checkpoint dir, the bases used, and each base's PublicTest accuracy per phase."""

    checkpoint: Path
    base_names: list[str]
    val_acc: float
    best_phase: int
    best_epoch: int
    bases_before: list[float]
    bases_after_phase2: list[float]
    history: list[EpochLog]


@torch.no_grad()
def _evaluate(
    model: ParallelMerge, images: np.ndarray, batch_size: int = 512
) -> tuple[np.ndarray, np.ndarray]:
    """Merged probabilities (N, C) and each base's probabilities (K, N, C)."""
    model.eval()
    merged, bases = [], []
    for i in range(0, len(images), batch_size):
        x = to_tensor(images[i : i + batch_size])
        z = model.base_logits(x)
        bases.append(torch.softmax(z, dim=-1))
        merged.append(torch.softmax(model.merge(model.merge_input(z)), dim=1))
    return torch.cat(merged).numpy(), torch.cat(bases).transpose(0, 1).numpy()


def build_merge(candidates: Sequence, num_classes: int, dropout: float) -> ParallelMerge:
    """Wrap the candidates' trained models (:class:`~search.ensemble.weighted.Candidate`) as the bases of
    one net."""
    bases = [c.load(num_classes) for c in candidates]
    specs = [{"arch": c.arch, "kwargs": {**c.arch_kwargs, "dropout": c.dropout}} for c in candidates]
    model = ParallelMerge.from_trained(bases, base_specs=specs, dropout=dropout)
    return model.to(memory_format=torch.channels_last)


def train_merge(
    candidates: Sequence, data_root: Path, out: Path, cfg: MergeConfig | None = None
) -> MergeResult:
    """Build the merge net from ``candidates`` (best first; the first ``cfg.bases`` are used), train it in
    two phases on Training, keep the best PublicTest epoch and save it under ``out``."""
    cfg = cfg or MergeConfig()
    chosen = list(candidates)[: cfg.bases]
    if len(chosen) < 2:
        raise ValueError(f"a merge net needs at least 2 trained bases, got {len(chosen)}")
    start = time.perf_counter()
    gen, rng = seeded(cfg.seed)
    train_x, train_y, val_x, val_y = fit_splits(data_root)
    test_x, _ = load_split(data_root, "PrivateTest", with_labels=False)
    num_classes = int(np.load(chosen[0].checkpoint / VAL_FILE).shape[1])

    model = build_merge(chosen, num_classes, cfg.dropout)
    merged_p, base_p = _evaluate(model, val_x)
    bases_before = [accuracy(p, val_y) for p in base_p]
    print(
        "merge net bases (PublicTest): "
        + ", ".join(f"{c.name} {a:.4f}" for c, a in zip(chosen, bases_before, strict=True))
    )

    history: list[EpochLog] = []
    best = (-1.0, 0, 0, None)  # val_acc, phase, epoch, state
    budget_hit = False
    for phase, epochs, lr in ((1, cfg.phase1_epochs, cfg.lr), (2, cfg.phase2_epochs, cfg.phase2_lr)):
        if epochs == 0 or budget_hit:
            continue
        model.set_phase(phase)
        params = model.merge_parameters() if phase == 1 else model.parameters()
        opt = torch.optim.Adam(params, lr=lr)
        steps = epochs * math.ceil(len(train_x) / cfg.batch_size)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
        for epoch in range(1, epochs + 1):
            t0 = time.perf_counter()
            try:
                loss = train_one_epoch(
                    model, opt, train_x, train_y, batch_size=cfg.batch_size, gen=gen, rng=rng,
                    strength=cfg.augment, sched=sched,
                )  # fmt: skip
            except FloatingPointError as e:
                raise FloatingPointError(f"merge net, phase {phase} epoch {epoch}: {e}") from None
            merged_p, base_p = _evaluate(model, val_x)
            acc = accuracy(merged_p, val_y)
            log = EpochLog(
                phase,
                epoch,
                acc,
                [accuracy(p, val_y) for p in base_p],
                loss,
                time.perf_counter() - t0,
            )
            history.append(log)
            print(
                f"merge net phase {phase} epoch {epoch}: PublicTest {acc:.4f}, bases "
                + ", ".join(f"{a:.4f}" for a in log.base_val_accs)
                + f" ({log.seconds:.0f} s)"
            )
            if acc > best[0]:
                best = (acc, phase, epoch, copy.deepcopy(model.state_dict()))
            if cfg.time_budget_s is not None and time.perf_counter() - start > cfg.time_budget_s:
                budget_hit = True
                print(
                    f"merge net: time budget {cfg.time_budget_s:.0f} s reached (phase {phase} epoch {epoch})"
                )
                break

    bases_after = history[-1].base_val_accs if any(h.phase == 2 for h in history) else bases_before
    val_acc, best_phase, best_epoch, state = best
    model.load_state_dict(state)
    merged_val, _ = _evaluate(model, val_x)
    merged_test, _ = _evaluate(model, test_x)

    out.mkdir(parents=True, exist_ok=True)
    save_file(
        {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(out / WEIGHTS_FILE)
    )
    np.save(out / VAL_FILE, merged_val.astype(np.float32))
    np.save(out / TEST_FILE, merged_test.astype(np.float32))
    result = MergeResult(
        out, [c.name for c in chosen], val_acc, best_phase, best_epoch, bases_before, bases_after, history
    )
    TrialCheckpoint(out).write(
        SavedTrial(
            config={"arch": "parallel_merge", "arch_kwargs": model.arch_kwargs(), "dropout": cfg.dropout},
            best_val_acc=val_acc,
            best_epoch=best_epoch,
            has_predictions=True,
            merge={**{k: v for k, v in asdict(result).items() if k != "checkpoint"}, "config": asdict(cfg)},
        )
    )
    return result
