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
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
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

from data_pipeline.dataset import CLASSES, load_split
from data_pipeline.dataset import class_weights as dataset_class_weights
from models import create_model
from search.spec import HPARAMS, trial_hparams
from search.trial.plan import PROGRESS, CosineCycles, TrialPlan, progress
from search.trial.tta import tta_proba

NORM_MEAN = 0.5
NORM_STD = 0.5
VAL_FILE = "PublicTest_probs.npy"
TEST_FILE = "PrivateTest_probs.npy"
CONFUSION_FILE = "PublicTest_confusion.npy"
WEIGHTS_FILE = "model.safetensors"
TRIAL_FILE = "trial.json"
STATE_FILE = "state.safetensors"
#: A data-parallel rank's own RNG states (each rank augments its shard with its own generator).
RANK_RNG_FILE = "rng_rank{rank}.safetensors"


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
    classes: tuple[str, ...] = CLASSES

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def to_tensor(images: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 (N, H, W) → normalised float (N, 1, H, W), channels_last."""
    x = torch.from_numpy(np.ascontiguousarray(images)).to(device).unsqueeze(1).float()
    x = x.mul_(1.0 / 255).sub_(NORM_MEAN).div_(NORM_STD)
    return x.contiguous(memory_format=torch.channels_last)


def shift_flip(x: torch.Tensor, gen: torch.Generator, pad: int = 4) -> torch.Tensor:
    """The hand-written script's augmentation: a random mirror per image and one random shift of up to
    ``pad`` pixels per batch (edge pixels repeated)."""
    n, _, h, w = x.shape
    flip = (torch.rand(n, generator=gen) < 0.5).to(x.device)
    x = torch.where(flip[:, None, None, None], x.flip(3), x)
    if pad <= 0:
        return x.contiguous(memory_format=torch.channels_last)
    padded = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    dx, dy = torch.randint(0, 2 * pad + 1, (2,), generator=gen).tolist()
    return padded[:, :, dy : dy + h, dx : dx + w].contiguous(memory_format=torch.channels_last)


def augment(
    x: torch.Tensor, gen: torch.Generator, strength: float = 1.0, kind: str = "affine"
) -> torch.Tensor:
    """``affine``: flip, rotation ±10°·s, scale, shift ±10%·s in one affine resample, then random erasing
    (p 0.25·s). ``shift``: flip and a shift of up to 4·s pixels (:func:`shift_flip`, the hand-written
    loop's; lighter, and measured ahead of ``affine`` at about 12 epochs: benchmarks/recipe_race.py)."""
    if strength <= 0:
        return x
    if kind == "shift":
        return shift_flip(x, gen, round(4 * strength))
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
def predict_proba(
    model: torch.nn.Module, images: np.ndarray, batch_size: int = 512, tta: Sequence[float] | None = None
) -> np.ndarray:
    """Softmax outputs for uint8 (N, H, W) images; ``tta``: the zooms to average over, each also mirrored
    (:mod:`search.trial.tta`), as an export with TTA computes them in its graph."""
    model.eval()
    device = next(model.parameters()).device
    step = batch_size if tta is None else max(1, batch_size // (2 * len(tta)))
    out = []
    for i in range(0, len(images), step):
        x = to_tensor(images[i : i + step], device)
        out.append((torch.softmax(model(x), dim=1) if tta is None else tta_proba(model, x, tta)).cpu())
    return torch.cat(out).numpy().astype(np.float32)


def seeded(seed: int) -> tuple[torch.Generator, np.random.Generator]:
    """Seed torch (initialisation, dropout) and return the generators an epoch loop draws from: one for
    augmentation, one for the shuffle. Every loop here starts this way, so equal seeds train alike."""
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed), np.random.default_rng(seed)


def fit_splits(root: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Training and PublicTest images and labels of a prepared directory: what a loop outside a search
    fits and chooses on (PrivateTest stays unread)."""
    return (*load_split(root, "Training"), *load_split(root, "PublicTest"))


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
    precision: str = "fp32",
    augment_kind: str = "affine",
    soft: np.ndarray | None = None,
    soft_weight: float = 0.0,
    temperature: float = 1.0,
) -> float:
    """One shuffled pass with on-batch augmentation (``augment_kind`` at ``strength``, :func:`augment`);
    ``sched`` (if any) steps per batch. Returns the mean loss; a non-finite loss raises FloatingPointError
    naming the step. ``order``: the sample indices to visit, in order (a data-parallel rank's shard),
    instead of a permutation of all of ``x``. ``precision`` ``bf16`` runs the forward pass under bfloat16
    autocast; weights, loss and evaluation stay float32. Its speed is the CPU's: +20% images/s for
    mini_xception on one thread of a CPU with bfloat16 instructions, 17x slower on an AVX2-only EPYC
    (measured) -- hence ``precision: auto`` (:func:`choose_precision`). ``soft``: a teacher's probabilities
    per image, already tempered at ``temperature`` (``fersearch distill``): the loss is then
    ``soft_weight`` × T² × KL(teacher ‖ student at T) + (1 − ``soft_weight``) × the hard labels' (Hinton et
    al. 2015); a mirror-invariant teacher (TTA with the mirror) fits the flipped images as well."""
    model.train()
    order = rng.permutation(len(x)) if order is None else order
    total = 0.0
    for i in range(0, len(order), batch_size):
        idx = np.sort(order[i : i + batch_size])
        xb = augment(to_tensor(x[idx], device), gen, strength, augment_kind)
        yb = torch.from_numpy(y[idx]).long().to(device)
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            logits = model(xb)
        loss = F.cross_entropy(logits.float(), yb, weight=weight, label_smoothing=smoothing)
        if soft is not None and soft_weight > 0:
            student = F.log_softmax(logits.float() / temperature, dim=1)
            kd = F.kl_div(student, torch.from_numpy(soft[idx]).to(device), reduction="batchmean")
            loss = (1 - soft_weight) * loss + soft_weight * temperature**2 * kd
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


def make_scheduler(
    opt: torch.optim.Optimizer, schedule: str, lr: float, plan: TrialPlan, steps_per_epoch: int
):
    """Stepped per batch over the trial's plan: one-cycle, or cosine to zero in each of the plan's cycles
    (one cycle unless the plan aligns several with ASHA's rungs); plateau (factor 0.4, patience 5: paper
    004), per epoch."""
    if schedule == "onecycle":
        total = max(2, plan.epochs * steps_per_epoch)
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=total, pct_start=0.15)
    if schedule == "cosine":
        ends = [e * steps_per_epoch for e in plan.ends]
        return torch.optim.lr_scheduler.LambdaLR(opt, CosineCycles(ends))
    return torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=0.4, patience=5)


def class_weights(labels: np.ndarray, num_classes: int) -> torch.Tensor:
    """The manifest's inverse-frequency weights (paper 002's class-weighted cross-entropy,
    :func:`data_pipeline.dataset.class_weights`), scaled to mean 1 so the loss keeps its LR scale."""
    counts = np.bincount(labels, minlength=num_classes)
    w = np.array(list(dataset_class_weights({i: int(n) for i, n in enumerate(counts)}).values()))
    return torch.tensor(w / w[w > 0].mean(), dtype=torch.float32)


@dataclass
class Recipe:
    """How a trial's config says to train: optimiser, LR schedule over the trial's plan (stepped per batch,
    or per epoch on PublicTest accuracy for ``plateau``), loss options, augmentation strength, early
    stopping."""

    opt: torch.optim.Optimizer
    sched: Any
    plateau: bool
    weight: torch.Tensor | None
    smoothing: float
    strength: float
    augment_kind: str
    patience: int | None
    schedule: str
    lr: float
    steps_per_epoch: int
    plan: TrialPlan
    precision: str = "fp32"

    @classmethod
    def from_config(
        cls, config: dict, params, train_y: np.ndarray, k: int, device, steps_per_epoch: int,
        plan: TrialPlan | None = None,
    ) -> Recipe:  # fmt: skip
        hp = trial_hparams(config)
        lr = float(hp["lr"])
        opt = make_optimizer(hp["optimizer"], params, lr, float(hp["weight_decay"]))
        schedule = hp["schedule"]
        plan = plan or fixed_plan(config)
        return cls(
            opt=opt,
            sched=make_scheduler(opt, schedule, lr, plan, steps_per_epoch),
            plateau=schedule == "plateau",
            weight=class_weights(train_y, k).to(device) if hp["class_weighted"] else None,
            smoothing=float(hp["label_smoothing"]),
            strength=float(hp["augment"]),
            augment_kind=str(hp["augment_kind"]),
            patience=config.get("early_stop_patience"),
            schedule=schedule,
            lr=lr,
            steps_per_epoch=steps_per_epoch,
            plan=plan,
            precision=str(config.get("precision", "fp32")),
        )

    @property
    def batch_sched(self):
        """The scheduler ``train_one_epoch`` steps per batch (None for plateau)."""
        return None if self.plateau else self.sched

    def replan(self, plan: TrialPlan, epochs_done: int) -> None:
        """Adopt a new plan (fixed after the first epoch of a budgeted trial): the per-batch schedule is
        rebuilt over it and brought to where the trial is."""
        if plan == self.plan:
            return
        self.plan = plan
        if self.plateau:
            return
        self.sched = make_scheduler(self.opt, self.schedule, self.lr, plan, self.steps_per_epoch)
        for _ in range(epochs_done * self.steps_per_epoch):
            self.sched.step()

    def last_step_lr(self) -> float:
        """The learning rate of the last optimiser step taken (a per-batch scheduler has already set the
        optimiser's to the next step's, which after a cycle end is the restart's)."""
        s = self.batch_sched
        if isinstance(s, torch.optim.lr_scheduler.LambdaLR) and s.last_epoch > 0:
            return float(s.base_lrs[0] * s.lr_lambdas[0](s.last_epoch - 1))
        return float(self.opt.param_groups[0]["lr"])

    def epoch_kwargs(self) -> dict:
        return {"sched": self.batch_sched, "weight": self.weight, "smoothing": self.smoothing,
                "strength": self.strength, "augment_kind": self.augment_kind,
                "precision": self.precision}  # fmt: skip

    def end_epoch(self, val_acc: float) -> None:
        if self.plateau:
            self.sched.step(val_acc)

    def stop_early(self, epoch: int, best_epoch: int) -> bool:
        return bool(self.patience) and epoch - best_epoch >= int(self.patience)


def fixed_plan(config: dict) -> TrialPlan:
    """The plan of a trial without a time budget: ``max_epochs`` epochs, ``cycles`` cosine cycles."""
    return TrialPlan.fixed(
        int(config["max_epochs"]), int(config.get("cycles", 1)), float(config.get("cycle_ratio", 3))
    )


#: A budgeted trial's first epoch runs at the peak LR (a cycle that never ends), then the plan is fixed
#: from its pace, fixed again after REPLAN_EPOCH from the steady pace (start-up costs excluded), and once
#: more in the middle of its last cycle (:meth:`TrialPlan.last_cycle_mid`).
PROVISIONAL_END = 10**6
REPLAN_EPOCH = 3
#: Reported True on a trial's last epoch when it ends by itself (its plan done, or early stopping), so a
#: trial the scheduler or the budget stopped can be told apart (Tune marks every last result ``done``).
FINISHED = "finished"
#: Plans aim this far inside the deadline: a trial cut by the budget before its last epoch is not annealed.
PACE_MARGIN = 0.985


def select_device(gpus: float) -> torch.device:
    if gpus > 0 and torch.cuda.is_available():
        return torch.device("cuda")
    if gpus > 0:
        print(f"trial asked for {gpus} GPU but CUDA is not available: training on CPU")
    return torch.device("cpu")


@dataclass
class TrialState:
    """Everything a trial needs to go on exactly where it stopped; :class:`TrialCheckpoint` stores it."""

    epoch: int = 0
    best: float = -1.0
    best_epoch: int = 0
    plan: TrialPlan | None = None
    deadline: float | None = None


@dataclass(frozen=True)
class SavedTrial:
    """``trial.json``: what a checkpoint records about its trial, typed; written and parsed only by
    :class:`TrialCheckpoint`. Optional parts are left out of the file when absent (the merge net's has no
    per-epoch metrics, plan or optimiser; it has ``merge``)."""

    config: dict
    metrics: dict = field(default_factory=dict)
    best_val_acc: float = -1.0
    best_epoch: int = 0
    has_predictions: bool = False
    plan: dict | None = None
    deadline: float | None = None
    optimizer: dict | None = None
    scheduler: dict | None = None
    numpy_rng: dict | None = None
    merge: dict | None = None

    @property
    def arch(self) -> str:
        return self.config["arch"]

    @property
    def epoch(self) -> int:
        return int(self.metrics.get("epoch", 0))

    @property
    def val_acc(self) -> float:
        """This checkpoint's PublicTest accuracy (the best so far where no epoch was recorded)."""
        return float(self.metrics.get("val_acc", self.best_val_acc))

    @property
    def val_loss(self) -> float | None:
        return self.metrics.get("val_loss")

    def to_json(self) -> str:
        return json.dumps({k: v for k, v in asdict(self).items() if v is not None}, indent=2)

    @classmethod
    def from_json(cls, text: str, path: Path) -> SavedTrial:
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as e:
            damaged = f"not valid JSON ({e.msg}, line {e.lineno}); the checkpoint is damaged"
            raise ValueError(f"{path}: {damaged}") from None
        if not isinstance(raw, dict) or "config" not in raw:
            raise ValueError(f"{path}: missing key 'config'; the checkpoint is damaged")
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known})


class TrialCheckpoint:
    """The only reader and writer of a trial checkpoint directory.

    ``model.safetensors`` (weights), ``state.safetensors`` (optimiser tensors and the torch RNG states) and
    ``trial.json`` (epoch, metrics, best so far, plan, schedule, optimiser scalars, NumPy RNG state): no
    pickle anywhere, and a trial resumed from it trains bit-identically to one never interrupted (CPU).
    Candidate epochs also hold ``PublicTest_probs.npy`` / ``PrivateTest_probs.npy`` / the confusion.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def save(
        self,
        model: torch.nn.Module,
        config: dict,
        metrics: dict,
        state: TrialState,
        extra: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
        *,
        recipe: Recipe | None = None,
        gen: torch.Generator | None = None,
        rng: np.random.Generator | None = None,
    ) -> None:
        d = self.path
        weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(weights, str(d / WEIGHTS_FILE))
        if extra is not None:
            val_probs, test_probs, confusion = extra
            np.save(d / VAL_FILE, val_probs)
            np.save(d / TEST_FILE, test_probs)
            if confusion is not None:  # a None would be saved as a pickled object array
                np.save(d / CONFUSION_FILE, confusion)
        hparams = {k: config[k] for k in HPARAMS if k in config}
        tensors: dict[str, torch.Tensor] = {}
        optimizer = scheduler = None
        if recipe is not None:
            opt_state = recipe.opt.state_dict()
            scalars: dict[str, dict] = {}
            for idx, entry in opt_state["state"].items():
                for name, value in entry.items():
                    if isinstance(value, torch.Tensor):
                        tensors[f"opt.{idx}.{name}"] = value.detach().cpu().contiguous()
                    else:
                        scalars.setdefault(str(idx), {})[name] = value
            optimizer = {"param_groups": opt_state["param_groups"], "scalars": scalars}
            scheduler = _jsonable(recipe.sched.state_dict())
        if gen is not None:
            tensors["rng.generator"] = gen.get_state()
            tensors["rng.torch"] = torch.get_rng_state()
        if tensors:
            save_file(tensors, str(d / STATE_FILE))
        self.write(
            SavedTrial(
                config={
                    **hparams,
                    "arch_kwargs": arch_kwargs_of(config),
                    "max_epochs": config.get("max_epochs"),
                },
                metrics=metrics,
                best_val_acc=state.best,
                best_epoch=state.best_epoch,
                has_predictions=extra is not None,
                plan=None if state.plan is None else state.plan.to_dict(),
                deadline=state.deadline,
                optimizer=optimizer,
                scheduler=scheduler,
                numpy_rng=None if rng is None else rng.bit_generator.state,
            )
        )

    def write(self, saved: SavedTrial) -> None:
        (self.path / TRIAL_FILE).write_text(saved.to_json())

    def save_rank_rng(self, rank: int, gen: torch.Generator) -> None:
        """A data-parallel rank's generator and torch RNG states (rank 0 writes the rest)."""
        states = {"rng.generator": gen.get_state(), "rng.torch": torch.get_rng_state()}
        save_file(states, str(self.path / RANK_RNG_FILE.format(rank=rank)))

    def read(self) -> SavedTrial:
        return SavedTrial.from_json((self.path / TRIAL_FILE).read_text(), self.path / TRIAL_FILE)

    def num_classes(self) -> int:
        """The width of the saved PublicTest probabilities (7, FER2013's, without them)."""
        val = self.path / VAL_FILE
        return int(np.load(val, mmap_mode="r").shape[1]) if val.is_file() else 7

    def load_model(self, num_classes: int | None = None) -> torch.nn.Module:
        """The trained model, rebuilt from ``trial.json``'s architecture, in eval mode."""
        cfg = self.read().config
        state = load_file(str(self.path / WEIGHTS_FILE))
        num_classes = self.num_classes() if num_classes is None else num_classes
        model = build_model(cfg["arch"], num_classes, float(cfg.get("dropout", 0.0)), cfg.get("arch_kwargs"))
        model.load_state_dict(state)
        return model.eval()

    def restore(
        self,
        model: torch.nn.Module,
        device: torch.device | str,
        *,
        recipe: Recipe | None = None,
        gen: torch.Generator | None = None,
        rng: np.random.Generator | None = None,
        rank: int | None = None,
    ) -> TrialState:
        """Load the weights (and, when given, optimiser, schedule and RNG states) into the live objects;
        with ``rank``, the RNG states are that data-parallel rank's own."""
        d = self.path
        model.load_state_dict(load_file(str(d / WEIGHTS_FILE), device=str(device)))
        trial = self.read()
        state = TrialState(
            epoch=trial.epoch,
            best=float(trial.best_val_acc),
            best_epoch=int(trial.best_epoch),
            plan=None if trial.plan is None else TrialPlan.from_dict(trial.plan),
            deadline=trial.deadline,
        )
        tensors = load_file(str(d / STATE_FILE)) if (d / STATE_FILE).is_file() else {}
        if recipe is not None:
            if state.plan is not None:
                recipe.replan(state.plan, 0)
            if trial.optimizer is not None:
                opt_state: dict[str, Any] = {"state": {}, "param_groups": trial.optimizer["param_groups"]}
                for key, value in tensors.items():
                    if key.startswith("opt."):
                        _, idx, name = key.split(".", 2)
                        opt_state["state"].setdefault(int(idx), {})[name] = value.to(device)
                for idx, scalars in trial.optimizer["scalars"].items():
                    opt_state["state"].setdefault(int(idx), {}).update(scalars)
                recipe.opt.load_state_dict(opt_state)
            if trial.scheduler is not None:
                recipe.sched.load_state_dict(trial.scheduler)
            elif recipe.batch_sched is not None:  # an older checkpoint: replay the per-batch schedule
                for _ in range(state.epoch * recipe.steps_per_epoch):
                    recipe.sched.step()
        rank_file = d / RANK_RNG_FILE.format(rank=rank)
        rngs = load_file(str(rank_file)) if rank is not None and rank_file.is_file() else tensors
        if gen is not None and "rng.generator" in rngs:
            gen.set_state(rngs["rng.generator"])
            torch.set_rng_state(rngs["rng.torch"])
        if rng is not None and trial.numpy_rng is not None:
            rng.bit_generator.state = trial.numpy_rng
        return state


def _jsonable(value: Any) -> Any:
    """A scheduler's state dict as JSON: tensors become lists, tuples lists (load_state_dict accepts both)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return value.tolist()
    return value


def candidate_epoch(epoch: int, improved: bool, plan: TrialPlan, budgeted: bool) -> bool:
    """Whether this epoch's predictions are kept as an ensemble candidate: every cycle end (annealed), and
    each new best -- for a budgeted trial only in the last fifth of its plan, where the schedule has
    annealed enough for the model to be a member worth its PrivateTest pass."""
    if plan.is_cycle_end(epoch):
        return True
    return improved and (not budgeted or plan.late(epoch))


def keep_score(val_acc: float, epoch: int, plan: TrialPlan, has_predictions: bool) -> float:
    """Tune keeps the checkpoints scoring highest: cycle ends first, then other candidates, then the rest."""
    if not has_predictions:
        return val_acc - 2.0
    return val_acc + (1.0 if plan.is_cycle_end(epoch) else 0.0)


def train_fer(config: dict, data: TrialData) -> None:
    """Tune function trainable; hyperparameters as in ``HPARAMS`` plus the fixed keys of the search.

    With ``trial_budget_s`` the trial measures its first epoch and plans as many epochs as fit before
    ``min(start + trial_budget_s, search_deadline)``, so its schedule ends annealed when its time does.
    """
    from ray import tune

    cpus = max(1, int(config.get("cpus_per_trial", 1)))
    torch.set_num_threads(cpus)
    device = select_device(float(config.get("gpus_per_trial", 0.0)))
    seed = int(config.get("seed", 0))
    gen, rng = seeded(seed)
    k = data.num_classes
    start = time.time()

    hp = trial_hparams(config)
    variant = hp["variant"]
    if variant not in data.train:
        raise ValueError(f"data variant {variant!r} was not prepared; available: {sorted(data.train)}")
    train_x, train_y = data.train[variant]
    model = build_model(hp["arch"], k, float(hp["dropout"]), arch_kwargs_of(config)).to(device)
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    lat = latency_ms(model) if "latency_ms" in config.get("objectives", ()) else None

    max_epochs = int(config["max_epochs"])
    cycles, ratio = int(config.get("cycles", 1)), float(config.get("cycle_ratio", 3))
    budget_s = config.get("trial_budget_s")
    batch_size = int(hp["batch_size"])
    steps_per_epoch = math.ceil(len(train_x) / batch_size)
    plan = TrialPlan(max_epochs, (PROVISIONAL_END,)) if budget_s else fixed_plan(config)
    recipe = Recipe.from_config(config, model.parameters(), train_y, k, device, steps_per_epoch, plan)
    state = TrialState(plan=None if budget_s else plan)
    ckpt = tune.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            state = TrialCheckpoint(Path(d)).restore(model, device, recipe=recipe, gen=gen, rng=rng)
        print(f"resumed from epoch {state.epoch} (best PublicTest accuracy {state.best:.4f})")
    if budget_s and state.deadline is None:
        deadline = start + float(budget_s)
        if config.get("search_deadline"):
            deadline = min(deadline, float(config["search_deadline"]))
        state.deadline = deadline

    val_y = torch.from_numpy(np.array(data.val_y))  # the object store's arrays are read-only

    def score_public() -> tuple[np.ndarray, torch.Tensor, dict[str, float]]:
        probs = predict_proba(model, data.val_x)
        t = torch.from_numpy(probs)
        recall = multiclass_recall(t, val_y, num_classes=k, average="none")
        return (
            probs,
            t,
            {
                "val_acc": float(multiclass_accuracy(t, val_y, num_classes=k, average="micro")),
                "val_macro_f1": float(multiclass_f1_score(t, val_y, num_classes=k, average="macro")),
                "val_loss": float(F.nll_loss(torch.log(t.clamp_min(1e-8)), val_y)),
                **{f"val_recall_{c}": float(r) for c, r in zip(data.classes, recall, strict=True)},
            },
        )

    marks: list[tuple[float, float]] = []  # per epoch: wall time at its end, seconds spent scoring
    scores: dict[str, float] = {}
    eval_s = 0.0
    for epoch in range(state.epoch + 1, max_epochs + 1):
        if state.plan is not None and epoch > state.plan.epochs:
            break
        t0 = time.perf_counter()
        try:
            train_loss = train_one_epoch(
                model, recipe.opt, train_x, train_y, batch_size=batch_size, gen=gen, rng=rng, device=device,
                **recipe.epoch_kwargs(),
            )  # fmt: skip
        except FloatingPointError as e:
            raise FloatingPointError(
                f"{e} of epoch {epoch} (arch {hp['arch']}, lr {float(hp['lr']):.3g}, "
                f"optimizer {hp['optimizer']})"
            ) from None
        train_s = time.perf_counter() - t0

        # a budgeted trial scores PublicTest only where a score is used (TrialPlan.scored): the rest of its
        # epochs go to training
        evaluate = not budget_s or state.plan is None or state.plan.scored(epoch) or not scores
        t1 = time.perf_counter()
        if evaluate:
            val_probs, val_t, scores = score_public()
            eval_s = time.perf_counter() - t1
        marks.append((time.time(), time.perf_counter() - t1))
        replan_mid = (
            budget_s and state.plan is not None and len(marks) > 1 and REPLAN_EPOCH < epoch
            and epoch == state.plan.last_cycle_mid()
        )  # fmt: skip
        if budget_s and (state.plan is None or (epoch == REPLAN_EPOCH and len(marks) > 1) or replan_mid):
            # plan the rest from the measured pace: after the first epoch (its start-up included), once more
            # from the steady epochs 2..REPLAN_EPOCH while the cosine is still near its peak, and in the
            # middle of the last cycle, which then ends where the time does (earlier cycle ends stay put)
            if len(marks) == 1:
                pace = marks[0][0] - start - marks[0][1]
            else:
                pace = (marks[-1][0] - marks[0][0] - sum(e for _, e in marks[1:])) / (len(marks) - 1)
            fitted = TrialPlan.from_pace(
                epoch_s=pace, eval_s=eval_s, remaining_s=PACE_MARGIN * (state.deadline - time.time()),
                max_epochs=max_epochs, cycles=cycles, ratio=ratio, done=epoch,
            )  # fmt: skip
            state.plan = state.plan.with_last_cycle_to(fitted.epochs) if replan_mid else fitted
            recipe.replan(state.plan, epoch)
            print(f"epoch {epoch}: planned {state.plan.epochs} epochs, cycles end at {list(state.plan.ends)}")
            if not evaluate and state.plan.scored(epoch):  # the new plan ends a cycle here, or starts later
                evaluate = True
                val_probs, val_t, scores = score_public()
        val_acc = scores["val_acc"]
        metrics = {
            "epoch": epoch,
            PROGRESS: progress(epoch, state.plan.epochs),
            "planned_epochs": state.plan.epochs,
            **scores,
            "evaluated": evaluate,
            "train_loss": train_loss,
            "lr": recipe.opt.param_groups[0]["lr"],
            "lr_last_step": recipe.last_step_lr(),
            "params": n_params,
            "train_images": len(train_x),
            "train_images_per_s": len(train_x) / train_s,
            "train_s": train_s,
        }
        if lat is not None:
            metrics["latency_ms"] = lat
        if evaluate:
            recipe.end_epoch(val_acc)
        improved = evaluate and val_acc > state.best
        if improved:
            state.best, state.best_epoch = val_acc, epoch
        state.epoch = epoch
        metrics["best_val_acc"] = state.best
        keep = candidate_epoch(epoch, improved, state.plan, bool(budget_s))
        stop = recipe.stop_early(epoch, state.best_epoch)
        with tempfile.TemporaryDirectory() as d:
            extra = None
            if keep:
                confusion = multiclass_confusion_matrix(val_t, val_y, num_classes=k).numpy()
                extra = (val_probs, predict_proba(model, data.test_x), confusion)
            metrics["eval_s"] = time.perf_counter() - t1
            metrics["keep_score"] = keep_score(val_acc, epoch, state.plan, keep)
            metrics[FINISHED] = epoch >= min(state.plan.epochs, max_epochs) or stop
            TrialCheckpoint(Path(d)).save(
                model, config, metrics, state, extra, recipe=recipe, gen=gen, rng=rng
            )
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))
        if stop:
            break


def choose_precision(arch: str, arch_kwargs: dict, threads: int, batch_size: int) -> tuple[str, float]:
    """The faster of float32 and bfloat16 autocast for ``arch`` on this machine, and its images/s. A CPU
    below AVX-512 has no bfloat16 instructions (measured on an AVX2 EPYC: bf16 17x slower), so it is not
    timed there; elsewhere bf16 is timed with one warm-up step and a short window."""
    fp32 = measure_images_per_s(arch, arch_kwargs, threads, batch_size)
    if "AVX512" not in torch.backends.cpu.get_cpu_capability():
        return "fp32", fp32
    bf16 = measure_images_per_s(
        arch, arch_kwargs, threads, batch_size, seconds=min(2.0, 8 * batch_size / fp32), precision="bf16",
        warmup=1, min_steps=1,
    )  # fmt: skip
    return ("bf16", bf16) if bf16 > 1.05 * fp32 else ("fp32", fp32)


def measure_images_per_s(
    arch: str, arch_kwargs: dict, threads: int, batch_size: int, seconds: float = 4.0, side: int = 48,
    precision: str = "fp32", warmup: int = 3, min_steps: int = 3,
    images: tuple[np.ndarray, np.ndarray] | None = None,
) -> float:  # fmt: skip
    """Training images per second of one trial of ``arch`` on ``threads`` threads of this machine: a short
    timed burst of :func:`train_one_epoch` steps (augmentation, forward under ``precision``, backward,
    optimiser) after a few warm-up steps, on random pixels or, given ``images`` (uint8 images, labels),
    on a shuffled pass through them as a real epoch reads them (a new batch each step, indexing included)."""
    prev = torch.get_num_threads()
    torch.set_num_threads(max(1, threads))
    try:
        model = build_model(arch, 7, 0.0, arch_kwargs)
        opt = torch.optim.Adam(model.parameters(), 1e-3)
        gen = torch.Generator().manual_seed(0)
        rng = np.random.default_rng(0)
        if images is None:
            x = rng.integers(0, 256, (batch_size, side, side), dtype=np.uint8)
            y = rng.integers(0, 7, batch_size)
        else:
            x, y = images
        order = rng.permutation(len(x))
        at = [0]

        def step() -> None:
            if at[0] + batch_size > len(order):
                at[0] = 0
            batch = order[at[0] : at[0] + batch_size]
            at[0] += batch_size
            train_one_epoch(
                model, opt, x, y, batch_size=batch_size, gen=gen, rng=None, order=batch, precision=precision
            )

        for _ in range(warmup):
            step()
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds or n < min_steps:
            step()
            n += 1
        return n * batch_size / (time.perf_counter() - t0)
    finally:
        torch.set_num_threads(prev)
