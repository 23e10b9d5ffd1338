"""One-vs-rest (OvR) binary models combined into one multi-class prediction, with calibration.

Paper 004 (/work/shared/papers/004_*.txt), section 4.4 and Table 20: one binary model per class (the
multi-class architecture with a single sigmoid output), each trained on its own balanced "class vs other"
dataset, then "concatenated without any voting"; that lost 2-5 points against the multi-class models.
Heads trained on different balanced datasets produce scores on different scales and with the wrong priors,
so picking the largest raw score is poorly founded. Here each head's logit gets a Platt / temperature
calibration fitted on validation data (binary NLL of head k on "label == k"), the calibrated probabilities
are normalised across classes, and one multi-class temperature is fitted on top (multi-class NLL).

:func:`fit_ovr_calibration` and :func:`ovr_probabilities` are pure functions of arrays (numpy or torch);
:class:`OneVsRest` holds K binary models plus the fitted calibration as buffers, so the calibrated model
exports (safetensors, ONNX, TorchScript) like any other.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .layers import check_model_args
from .registry import create_model, register_model

__all__ = [
    "OneVsRest",
    "OvrCalibration",
    "fit_ovr_calibration",
    "one_vs_rest",
    "ovr_log_scores",
    "ovr_probabilities",
]

ArrayLike = np.ndarray | torch.Tensor | Sequence[Sequence[float]]


@dataclass(frozen=True)
class OvrCalibration:
    """Per-head ``scale`` (1 / temperature) and ``bias`` for the binary logits, and a multi-class
    ``temperature`` applied to the combined log-scores. The identity calibration reproduces the paper's
    uncalibrated combination (argmax of the raw scores)."""

    scale: np.ndarray
    bias: np.ndarray
    temperature: float = 1.0

    @classmethod
    def identity(cls, num_classes: int) -> OvrCalibration:
        return cls(np.ones(num_classes), np.zeros(num_classes), 1.0)

    def to_dict(self) -> dict[str, Any]:
        return {"scale": self.scale.tolist(), "bias": self.bias.tolist(), "temperature": self.temperature}


def _as_tensor(x: ArrayLike) -> torch.Tensor:
    return torch.as_tensor(
        np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x), dtype=torch.float64
    )


def ovr_log_scores(
    binary_logits: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor, temperature: torch.Tensor
) -> torch.Tensor:
    """Multi-class logits from K binary logits: ``log sigmoid(scale * z + bias) / temperature``.

    Their softmax is the calibrated sigmoid probabilities normalised across classes (sharpened or softened
    by the temperature); their argmax is the most confident calibrated head.
    """
    return F.logsigmoid(binary_logits * scale + bias) / temperature


def _minimise(params: list[torch.Tensor], loss_fn: Any, max_iter: int) -> None:
    opt = torch.optim.LBFGS(params, lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        return loss

    opt.step(closure)


def fit_ovr_calibration(
    binary_logits: ArrayLike,
    labels: ArrayLike,
    fit_bias: bool = True,
    fit_temperature: bool = True,
    max_iter: int = 200,
) -> OvrCalibration:
    """Fit the calibration of K one-vs-rest heads on validation data (e.g. FER2013 PublicTest).

    Args:
        binary_logits: ``(n, K)`` pre-sigmoid outputs, column k from the "class k vs rest" model.
        labels: ``(n,)`` integer class labels in ``[0, K)``.
        fit_bias: fit a per-head offset too (Platt scaling: corrects the balanced-training priors);
            ``False`` fits a per-head temperature only.
        fit_temperature: then fit one multi-class temperature on the normalised calibrated scores.
        max_iter: L-BFGS iterations per fit.
    """
    z = _as_tensor(binary_logits)
    y = _as_tensor(labels).long()
    if z.ndim != 2 or y.shape != (z.shape[0],):
        raise ValueError(
            f"need binary_logits (n, K) and labels (n,), got {tuple(z.shape)} and {tuple(y.shape)}"
        )
    n, k = z.shape
    if n == 0 or int(y.min()) < 0 or int(y.max()) >= k:
        raise ValueError(f"labels must be in [0, {k}) and n > 0")
    targets = F.one_hot(y, k).double()
    log_scale = torch.zeros(k, dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(k, dtype=torch.float64, requires_grad=fit_bias)
    params = [log_scale, bias] if fit_bias else [log_scale]
    # Mean binary NLL of every head, each on its own "class k vs rest" problem (one joint, separable fit).
    _minimise(
        params,
        lambda: F.binary_cross_entropy_with_logits(z * log_scale.exp() + bias, targets, reduction="sum") / n,
        max_iter,
    )
    scale = log_scale.detach().exp()
    bias = bias.detach()
    temperature = 1.0
    if fit_temperature:
        scores = F.logsigmoid(z * scale + bias)
        log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
        _minimise([log_t], lambda: F.cross_entropy(scores / log_t.exp(), y), max_iter)
        temperature = float(log_t.detach().exp())
    return OvrCalibration(scale.numpy(), bias.numpy(), temperature)


def ovr_probabilities(binary_logits: ArrayLike, calibration: OvrCalibration | None = None) -> np.ndarray:
    """``(n, K)`` class probabilities (rows sum to 1) from one-vs-rest logits; ``None``: uncalibrated."""
    z = _as_tensor(binary_logits)
    cal = calibration or OvrCalibration.identity(z.shape[1])
    logits = ovr_log_scores(
        z,
        torch.as_tensor(cal.scale, dtype=torch.float64),
        torch.as_tensor(cal.bias, dtype=torch.float64),
        torch.tensor(cal.temperature, dtype=torch.float64),
    )
    return F.softmax(logits, dim=1).numpy()


class OneVsRest(nn.Module):
    """K binary models (each ``(N, 1)`` logits) -> ``(N, K)`` calibrated multi-class logits.

    ``binary_logits(x)`` gives the raw per-class logits (to train head k with BCE on "label == k", or to fit
    :func:`fit_ovr_calibration`); ``forward`` applies the stored calibration (identity until
    :meth:`set_calibration`), so ``softmax(model(x))`` are the combined class probabilities.
    """

    def __init__(
        self,
        heads: Sequence[nn.Module],
        in_chans: int = 1,
        input_size: int = 48,
        head_spec: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if len(heads) < 2:
            raise ValueError("one-vs-rest needs at least 2 binary models")
        self.num_classes = len(heads)
        self.in_chans = in_chans
        self.input_size = input_size
        self.head_spec = dict(head_spec) if head_spec is not None else None
        self.heads = nn.ModuleList(heads)
        self.register_buffer("scale", torch.ones(self.num_classes))
        self.register_buffer("bias", torch.zeros(self.num_classes))
        self.register_buffer("temperature", torch.ones(()))

    def set_calibration(self, calibration: OvrCalibration) -> None:
        self.scale.copy_(torch.as_tensor(calibration.scale, dtype=self.scale.dtype))
        self.bias.copy_(torch.as_tensor(calibration.bias, dtype=self.bias.dtype))
        self.temperature.fill_(float(calibration.temperature))

    def calibration(self) -> OvrCalibration:
        return OvrCalibration(
            self.scale.detach().cpu().double().numpy(),
            self.bias.detach().cpu().double().numpy(),
            float(self.temperature),
        )

    def binary_logits(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([head(x) for head in self.heads], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ovr_log_scores(self.binary_logits(x), self.scale, self.bias, self.temperature)


@register_model
def one_vs_rest(
    num_classes: int = 7,
    in_chans: int = 1,
    base: Mapping[str, Any] | None = None,
    dropout: float | None = None,
    input_size: int | None = None,
) -> OneVsRest:
    """Paper 004, section 4.4: ``num_classes`` binary models of one architecture, combined (calibrated).

    ``base``: ``{"arch": name, "kwargs": {...}}`` for every binary model (built with ``num_classes=1``;
    default ``mini_xception`` -- the paper used its 5-layer, 6-layer and ResNet50 nets, 7 copies each).
    ``dropout`` / ``input_size``, when given, are passed to every binary model. The calibration buffers
    start as identity (the paper's plain concatenation); fit them with :func:`fit_ovr_calibration`.
    """
    check_model_args(num_classes, in_chans, 0.0 if dropout is None else dropout)
    if num_classes < 2:
        raise ValueError(f"one_vs_rest needs num_classes >= 2, got {num_classes}")
    spec = dict(base) if base is not None else {"arch": "mini_xception", "kwargs": {}}
    if not isinstance(spec.get("arch"), str):
        raise ValueError(f"base is {{'arch': name, 'kwargs': {{...}}}}, got {base!r}")
    kwargs = dict(spec.get("kwargs") or {})
    if {"num_classes", "in_chans"} & set(kwargs):
        raise ValueError("base kwargs must not set num_classes or in_chans")
    if dropout is not None:
        kwargs["dropout"] = dropout
    if input_size is not None:
        kwargs["input_size"] = input_size
    heads = [
        create_model(spec["arch"], num_classes=1, in_chans=in_chans, **kwargs) for _ in range(num_classes)
    ]
    size = getattr(heads[0], "input_size", 48)
    return OneVsRest(
        heads, in_chans=in_chans, input_size=size, head_spec={"arch": spec["arch"], "kwargs": kwargs}
    )
