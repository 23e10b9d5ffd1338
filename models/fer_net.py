"""``fer_net``: the searchable family of small FER ConvNets.

One parametric definition spanning the design choices the papers' small nets differ in -- depth (stages,
convs per stage), width, kernel size, plain vs residual stages, plain vs depthwise-separable convs, GAP vs
conv vs FC head, batch norm, per-stage dropout -- so the search can move between them. Its space contains
``mini_xception`` / ``mini_xception_a`` (paper 000 Model A), ``vgg_fer11`` (paper 000 Model D),
``convnet4`` (paper 003) and ``cnn_simple`` (paper 001 Model 1) exactly: :data:`FER_NET_PRESETS` gives the
kwargs that rebuild each of them with the same parameter tensors in the same order and the same function
(tests copy the weights across and compare outputs).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from .layers import (
    AdaptiveAvgPool2dExportable,
    SeparableConv2d,
    StridedPointwiseConv2d,
    check_input_size,
    check_model_args,
    dropout_layer,
    init_weights,
    resolve_dropout,
)
from .registry import register_model

__all__ = ["FER_NET_PRESETS", "SEARCH_SPACE", "FerNet", "FerStage", "fer_net"]

HEADS = ("gap", "conv", "fc")

# Choices a search over the family can sample from (JSON-serialisable); any other valid values work too.
SEARCH_SPACE: dict[str, list[Any]] = {
    "stages": [3, 4, 5],
    "width": [16, 32, 48, 64],
    "convs_per_stage": [1, 2, 3],
    "kernel_size": [3, 5],
    "residual": [False, True],
    "separable": [False, True],
    "head": ["gap", "conv", "fc"],
    "stage_dropout": [0.0, 0.1, 0.25],
}

FER_NET_PRESETS: dict[str, dict[str, Any]] = {
    "mini_xception": {
        "widths": [16, 32, 64, 128], "stem_width": 8, "residual": True, "separable": True,
        "conv_bias": False, "head": "conv",
    },
    "mini_xception_a": {
        "widths": [56, 112, 224, 448], "stem_width": 28, "residual": True, "separable": True,
        "conv_bias": False, "head": "conv",
    },
    "vgg_fer11": {
        "widths": [32, 64, 128, 256], "residual": False, "conv_bias": False, "head": "fc",
        "fc_dims": [256, 128], "head_pool": 2, "dropout": 0.5,
    },
    "convnet4": {
        "widths": [128, 256, 512, 512], "convs_per_stage": 1, "residual": False, "conv_bias": True,
        "head": "fc", "fc_dims": [256, 512], "fc_norm": True, "head_pool": None, "dropout": 0.25,
        "stage_dropout": [0.25, 0.25, 0.25, 0.0],  # stage 4's dropout is the head's first (same function)
    },
    "cnn_simple": {
        "widths": [32, 64], "convs_per_stage": 1, "residual": False, "padding": "valid", "batch_norm": False,
        "head": "fc", "fc_dims": [128, 64], "head_pool": None,
    },
}  # fmt: skip


class FerStage(nn.Module):
    """``num_convs`` convs (plain or separable), each + BN + ReLU, then max-pool and dropout.

    Residual stages follow Xception / mini-Xception: no ReLU after the last conv's BN, a 3x3/2 max-pool
    (padding 1) and a 1x1/2 conv + BN shortcut added after the pool. Plain stages pool 2x2/2.
    """

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        num_convs: int = 2,
        kernel_size: int = 3,
        separable: bool = False,
        residual: bool = False,
        batch_norm: bool = True,
        conv_bias: bool = False,
        padding: str = "same",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        pad = kernel_size // 2 if padding == "same" else 0
        self.shortcut: nn.Module | None = None
        if residual:
            self.shortcut = nn.Sequential(
                StridedPointwiseConv2d(in_chs, out_chs, stride=2, bias=not batch_norm),
                nn.BatchNorm2d(out_chs) if batch_norm else nn.Identity(),
            )
        layers: list[nn.Module] = []
        prev = in_chs
        for i in range(num_convs):
            if separable:
                layers.append(SeparableConv2d(prev, out_chs, kernel_size, bias=conv_bias))
            else:
                layers.append(nn.Conv2d(prev, out_chs, kernel_size, padding=pad, bias=conv_bias))
            if batch_norm:
                layers.append(nn.BatchNorm2d(out_chs))
            if not (residual and i == num_convs - 1):
                layers.append(nn.ReLU(inplace=True))
            prev = out_chs
        layers.append(nn.MaxPool2d(3, stride=2, padding=1) if residual else nn.MaxPool2d(2))
        self.main = nn.Sequential(*layers)
        self.drop = dropout_layer(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.main(x)
        if self.shortcut is not None:
            y = y + self.shortcut(x)
        return self.drop(y)


class FerNet(nn.Module):
    """Optional stem (two 'valid' 3x3 conv-BN-ReLU), stages (:class:`FerStage`) and one of three heads:

    - ``"gap"``: global average pool -> dropout -> dense N;
    - ``"conv"``: Dropout2d -> 3x3 conv to N maps -> global average pool (mini-Xception, no dense layer);
    - ``"fc"``: [adaptive average pool to ``head_pool`` x ``head_pool``] -> flatten -> per ``fc_dims``:
      dropout -> dense [-> BN] -> ReLU; then dropout -> dense N. ``head_pool=None`` flattens the feature
      map as is, sized from ``input_size``.

    Returns logits ``(N, num_classes)``.
    """

    def __init__(
        self,
        num_classes: int = 7,
        in_chans: int = 1,
        stages: int = 4,
        width: int = 32,
        widths: Sequence[int] | None = None,
        convs_per_stage: int = 2,
        kernel_size: int = 3,
        residual: bool = True,
        separable: bool = False,
        batch_norm: bool = True,
        conv_bias: bool | None = None,
        padding: str = "same",
        stem_width: int = 0,
        head: str = "gap",
        fc_dims: Sequence[int] = (256, 128),
        fc_norm: bool = False,
        head_pool: int | None = 2,
        dropout: float = 0.0,
        stage_dropout: float | Sequence[float] = 0.0,
        input_size: int = 48,
    ) -> None:
        super().__init__()
        check_model_args(num_classes, in_chans, dropout)
        check_input_size(input_size, 8)
        widths = [int(width * 2**i) for i in range(stages)] if widths is None else list(widths)
        if not widths or min(widths) < 1 or convs_per_stage < 1 or stem_width < 0:
            raise ValueError("need >= 1 stage, widths >= 1, convs_per_stage >= 1 and stem_width >= 0")
        if kernel_size not in (1, 3, 5, 7):
            raise ValueError(f"kernel_size must be 1, 3, 5 or 7, got {kernel_size}")
        if padding not in ("same", "valid") or (padding == "valid" and (residual or separable)):
            raise ValueError("padding must be 'same' or 'valid'; residual and separable stages need 'same'")
        if head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {head!r}")
        stage_p = resolve_dropout(stage_dropout, (0.0,) * len(widths))
        conv_bias = not batch_norm if conv_bias is None else conv_bias
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.input_size = input_size

        side, prev = input_size, in_chans
        self.stem: nn.Module = nn.Identity()
        if stem_width:
            self.stem = nn.Sequential(
                *self._conv_bn_relu(in_chans, stem_width, batch_norm, conv_bias),
                *self._conv_bn_relu(stem_width, stem_width, batch_norm, conv_bias),
            )
            side, prev = side - 4, stem_width
        blocks = []
        for out_chs, p in zip(widths, stage_p, strict=True):
            stage = FerStage(
                prev,
                out_chs,
                convs_per_stage,
                kernel_size,
                separable,
                residual,
                batch_norm,
                conv_bias,
                padding,
                p,
            )
            blocks.append(stage)
            if padding == "valid":
                side -= (kernel_size - 1) * convs_per_stage
            side = (side + 1) // 2 if residual else side // 2
            prev = out_chs
        if side < 1:
            raise ValueError(f"{len(widths)} stages shrink a {input_size}x{input_size} input to nothing")
        self.blocks = nn.Sequential(*blocks)
        self.num_features = prev
        self.head_type = head
        if head == "conv":
            self.head_drop: nn.Module = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
            self.head = nn.Conv2d(prev, num_classes, 3, padding=1)
        elif head == "gap":
            self.head_drop = dropout_layer(dropout)
            self.head = nn.Linear(prev, num_classes)
        else:
            layers: list[nn.Module] = []
            if head_pool:
                layers.append(AdaptiveAvgPool2dExportable(head_pool))
                side = head_pool
            layers.append(nn.Flatten(1))
            features = prev * side * side
            for dim in fc_dims:
                layers += [dropout_layer(dropout), nn.Linear(features, dim)]
                layers += [nn.BatchNorm1d(dim)] if fc_norm else []
                layers.append(nn.ReLU(inplace=True))
                features = dim
            layers += [dropout_layer(dropout), nn.Linear(features, num_classes)]
            self.head_drop = nn.Identity()
            self.head = nn.Sequential(*layers)
        init_weights(self)
        if head == "conv":
            self.head.reset_parameters()  # as mini_xception: He init here gives very large initial logits

    @staticmethod
    def _conv_bn_relu(in_chs: int, out_chs: int, batch_norm: bool, bias: bool) -> list[nn.Module]:
        layers: list[nn.Module] = [nn.Conv2d(in_chs, out_chs, 3, bias=bias)]
        return layers + ([nn.BatchNorm2d(out_chs)] if batch_norm else []) + [nn.ReLU(inplace=True)]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.stem(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_features(x)
        if self.head_type == "conv":
            return self.head(self.head_drop(x)).mean(dim=(2, 3))
        if self.head_type == "gap":
            return self.head(self.head_drop(x.mean(dim=(2, 3))))
        return self.head(x)


@register_model
def fer_net(num_classes: int = 7, in_chans: int = 1, **kwargs: Any) -> FerNet:
    """Searchable FER ConvNet family (not from one paper; spans paper 000 Models A/D, 001 Model 1, 003).

    kwargs (all JSON-serialisable): ``stages`` (4) and ``width`` (32; doubled every stage) or an explicit
    ``widths`` list; ``convs_per_stage`` (2); ``kernel_size`` (3); ``residual`` (True); ``separable``
    (False); ``batch_norm`` (True); ``conv_bias`` (default: not ``batch_norm``); ``padding`` ("same" or
    "valid", plain stages only); ``stem_width`` (0 = no stem); ``head`` ("gap" | "conv" | "fc");
    ``fc_dims`` ([256, 128]), ``fc_norm`` (False) and ``head_pool`` (2; ``None`` flattens) for the FC head;
    ``dropout`` (float, 0.0; the head's dropout); ``stage_dropout`` (a rate or one per stage, 0.0);
    ``input_size`` (48). Defaults: a 4-stage residual net, 32-256 filters, GAP head, 1.2M parameters.
    :data:`FER_NET_PRESETS` rebuilds the papers' small nets; :data:`SEARCH_SPACE` suggests value ranges.
    """
    return FerNet(num_classes=num_classes, in_chans=in_chans, **kwargs)
