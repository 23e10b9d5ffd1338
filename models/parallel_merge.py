"""Parallel-merge "boosting" net of paper 000, Model (B), with its two-phase training.

Paper 000 (/work/shared/papers/000_*.txt), sections 2-3.2: K trained ConvNets (there: Models A, C, D) run in
parallel on the same face; their N-way outputs are "concatenated to a three channels layer", followed by two
convolutional layers and two fully connected layers with 64 and N nodes. Training has two phases: first the
base nets are frozen and only the four added layers learn ("boosting" the ensemble), then all weights are
fine-tuned together, which the paper reports also improves the base nets themselves by ~2-3%.

Here K is free and the bases are any registered models. The stacked outputs form a (K, N) signal -- K
channels along the class axis -- so the two added convs are 1-D convs over classes (each + BN + ReLU).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .layers import check_input_size, check_model_args, dropout_layer, init_weights, set_trainable
from .registry import create_model, register_model

__all__ = ["PAPER_BASES", "ParallelMerge", "parallel_merge"]

# Paper 000's three bases: Model A (mini-Xception, ~600k), Model C (VGG16), Model D (VGG-style, ~1.46M).
PAPER_BASES: tuple[dict[str, Any], ...] = (
    {"arch": "mini_xception_a", "kwargs": {}},
    {"arch": "vgg16", "kwargs": {}},
    {"arch": "vgg_fer11", "kwargs": {}},
)
BASE_OUTPUTS = ("probs", "log_probs", "logits")


def _check_spec(spec: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    if not isinstance(spec, Mapping) or not isinstance(spec.get("arch"), str):
        raise ValueError(f"a base spec is {{'arch': name, 'kwargs': {{...}}}}, got {spec!r}")
    kwargs = dict(spec.get("kwargs") or {})
    clash = {"num_classes", "in_chans"} & set(kwargs)
    if clash:
        raise ValueError(f"base {spec['arch']!r}: {sorted(clash)} are set by parallel_merge for all bases")
    return spec["arch"], kwargs


class ParallelMerge(nn.Module):
    """K base models -> stacked (K, N) outputs -> conv1d-BN-ReLU x2 -> FC 64 -> ReLU -> dropout -> FC N.

    Phases (:meth:`set_phase`): in phase 1 the bases are frozen -- no gradients, and kept in eval mode even
    under ``model.train()`` so their BatchNorm statistics and dropout stay fixed -- and only the merge layers
    train; in phase 2 everything trains (use a lower learning rate). Built from specs (``create_model``) the
    model starts in phase 2; :meth:`from_trained` wraps already-trained modules and starts in phase 1.
    """

    def __init__(
        self,
        bases: Sequence[nn.Module],
        num_classes: int = 7,
        in_chans: int = 1,
        merge_channels: Sequence[int] = (32, 64),
        merge_kernel: int = 3,
        hidden: int = 64,
        dropout: float = 0.25,
        base_output: str = "probs",
        base_specs: Sequence[Mapping[str, Any]] | None = None,
        input_size: int = 48,
    ) -> None:
        super().__init__()
        check_model_args(num_classes, in_chans, dropout)
        if len(bases) < 1:
            raise ValueError("parallel_merge needs at least one base model")
        if base_output not in BASE_OUTPUTS:
            raise ValueError(f"base_output must be one of {BASE_OUTPUTS}, got {base_output!r}")
        if len(merge_channels) != 2 or min(merge_channels) < 1 or hidden < 1 or merge_kernel % 2 == 0:
            raise ValueError("merge_channels needs two widths >= 1, hidden >= 1, merge_kernel odd")
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.input_size = input_size
        self.base_output = base_output
        self.base_specs = [dict(s) for s in base_specs] if base_specs is not None else None
        self.bases = nn.ModuleList(bases)
        c1, c2 = merge_channels
        pad = merge_kernel // 2
        self.merge = nn.Sequential(
            nn.Conv1d(len(bases), c1, merge_kernel, padding=pad, bias=False),
            nn.BatchNorm1d(c1),
            nn.ReLU(inplace=True),
            nn.Conv1d(c1, c2, merge_kernel, padding=pad, bias=False),
            nn.BatchNorm1d(c2),
            nn.ReLU(inplace=True),
            nn.Flatten(1),
            nn.Linear(c2 * num_classes, hidden),
            nn.ReLU(inplace=True),
            dropout_layer(dropout),
            nn.Linear(hidden, num_classes),
        )
        init_weights(self.merge)
        self._config = {
            "merge_channels": [c1, c2],
            "merge_kernel": merge_kernel,
            "hidden": hidden,
            "dropout": dropout,
            "base_output": base_output,
        }
        self.bases_frozen = False

    @classmethod
    def from_specs(
        cls,
        specs: Sequence[Mapping[str, Any]] = PAPER_BASES,
        num_classes: int = 7,
        in_chans: int = 1,
        input_size: int | None = None,
        **kwargs: Any,
    ) -> ParallelMerge:
        """Build fresh bases with ``create_model(spec["arch"], num_classes, in_chans, **spec["kwargs"])``."""
        bases = []
        for spec in specs:
            arch, base_kwargs = _check_spec(spec)
            bases.append(create_model(arch, num_classes=num_classes, in_chans=in_chans, **base_kwargs))
        size = input_size if input_size is not None else getattr(bases[0], "input_size", 48)
        return cls(bases, num_classes, in_chans, base_specs=specs, input_size=size, **kwargs)

    @classmethod
    def from_trained(
        cls,
        bases: Sequence[nn.Module],
        base_specs: Sequence[Mapping[str, Any]] | None = None,
        **kwargs: Any,
    ) -> ParallelMerge:
        """Wrap already-trained base modules (used as they are, not copied); starts in phase 1.

        ``num_classes`` / ``in_chans`` default to the bases' attributes. Pass the ``base_specs`` the bases
        were built from (``{"arch", "kwargs"}`` each) to make :meth:`arch_kwargs` usable for export.
        """
        for key in ("num_classes", "in_chans", "input_size"):
            values = {getattr(b, key) for b in bases if hasattr(b, key)}
            if key not in kwargs and len(values) == 1:
                kwargs[key] = values.pop()
        n = kwargs.get("num_classes", 7)
        probe = [getattr(b, "num_classes", n) for b in bases]
        if any(c != n for c in probe):
            raise ValueError(f"all bases must output num_classes={n} logits, got {probe}")
        model = cls(bases, base_specs=base_specs, **kwargs)
        model.set_phase(1)
        return model

    def arch_kwargs(self) -> dict[str, Any]:
        """JSON-serialisable kwargs with which ``create_model("parallel_merge", num_classes, in_chans, ...)``
        rebuilds this architecture (its ``state_dict`` then loads into it)."""
        if self.base_specs is None:
            raise ValueError("built from modules without base_specs: pass them to from_trained()")
        return {"bases": [dict(s) for s in self.base_specs], **self._config}

    # -- training phases -------------------------------------------------------------------------------
    def freeze_bases(self) -> None:
        """Phase 1: bases get no gradients and stay in eval mode; only the merge layers train."""
        set_trainable(self.bases, False)
        self.bases_frozen = True
        self.bases.eval()

    def unfreeze_all(self) -> None:
        """Phase 2: every weight trains; the bases follow the model's train/eval mode again."""
        set_trainable(self, True)
        self.bases_frozen = False
        self.bases.train(self.training)

    def set_phase(self, phase: int) -> None:
        if phase == 1:
            self.freeze_bases()
        elif phase == 2:
            self.unfreeze_all()
        else:
            raise ValueError(f"phase must be 1 or 2, got {phase!r}")

    @property
    def phase(self) -> int:
        return 1 if self.bases_frozen else 2

    def train(self, mode: bool = True) -> ParallelMerge:
        super().train(mode)
        if self.bases_frozen:
            self.bases.eval()
        return self

    def merge_parameters(self) -> Iterator[nn.Parameter]:
        return self.merge.parameters()

    def base_parameters(self) -> Iterator[nn.Parameter]:
        return self.bases.parameters()

    # -- forward ---------------------------------------------------------------------------------------
    def base_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Each base's logits, ``(N, K, num_classes)`` -- e.g. to report base accuracies per phase."""
        return torch.stack([base(x) for base in self.bases], dim=1)

    def merge_input(self, z: torch.Tensor) -> torch.Tensor:
        """Stacked base logits ``(N, K, C)`` → what the merge layers see (``base_output``)."""
        if self.base_output == "probs":
            return F.softmax(z, dim=-1)
        if self.base_output == "log_probs":
            return F.log_softmax(z, dim=-1)
        return z

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.merge(self.merge_input(self.base_logits(x)))


@register_model
def parallel_merge(
    num_classes: int = 7,
    in_chans: int = 1,
    bases: Sequence[Mapping[str, Any]] | None = None,
    input_size: int | None = None,
    **kwargs: Any,
) -> ParallelMerge:
    """Paper 000, section 3.2, Model (B): K bases in parallel + 2 convs + FC 64 + FC N.

    ``bases``: list of ``{"arch": name, "kwargs": {...}}`` (default: the paper's Models A, C, D =
    ``mini_xception_a``, ``vgg16``, ``vgg_fer11``; 35.7M parameters); each base is built with this model's
    ``num_classes`` and ``in_chans``. ``input_size``, when given, is passed to every base.

    kwargs: ``merge_channels`` ([32, 64]; widths of the two added convs), ``merge_kernel`` (3), ``hidden``
    (64), ``dropout`` (float, 0.25; before the last FC -- base dropouts are set in their specs),
    ``base_output`` ("probs": the bases' softmax outputs, as the paper; or "log_probs" / "logits").
    To wrap trained modules instead, use :meth:`ParallelMerge.from_trained`.
    """
    check_model_args(num_classes, in_chans, kwargs.get("dropout", 0.0))
    specs = [dict(s) for s in (PAPER_BASES if bases is None else bases)]
    if not specs:
        raise ValueError("parallel_merge needs at least one base spec")
    if input_size is not None:
        check_input_size(input_size, 1)
        specs = [{"arch": s.get("arch"), "kwargs": {**(s.get("kwargs") or {}), "input_size": input_size}}
                 for s in specs]  # fmt: skip
    return ParallelMerge.from_specs(specs, num_classes, in_chans, input_size, **kwargs)
