"""Small building blocks shared by the model definitions."""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "AdaptiveAvgPool2dExportable",
    "ImageAdapter",
    "SeparableConv2d",
    "StridedPointwiseConv2d",
    "check_input_size",
    "check_model_args",
    "dropout_layer",
    "init_weights",
    "load_backbone_weights",
    "pointwise_conv",
    "resolve_dropout",
    "set_trainable",
]


def _check_rate(p: float) -> None:
    if isinstance(p, bool) or not isinstance(p, int | float) or not 0.0 <= p < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {p!r}")


def check_model_args(num_classes: int, in_chans: int, dropout: float | Sequence[float] = 0.0) -> None:
    """Validate the arguments every factory accepts (``dropout``: one rate or a list of rates)."""
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if in_chans < 1:
        raise ValueError(f"in_chans must be >= 1, got {in_chans}")
    for p in dropout if isinstance(dropout, list | tuple) else (dropout,):
        _check_rate(p)


def check_input_size(input_size: int, minimum: int) -> None:
    if isinstance(input_size, bool) or not isinstance(input_size, int) or input_size < minimum:
        raise ValueError(f"input_size must be an int >= {minimum}, got {input_size!r}")


def resolve_dropout(dropout: float | Sequence[float] | None, defaults: Sequence[float]) -> tuple[float, ...]:
    """Rates for a model with ``len(defaults)`` dropout layers (in forward order).

    ``None`` keeps the paper's ``defaults``; one number applies to every dropout layer (what the search
    passes); a list gives one rate per layer and must have ``len(defaults)`` entries.
    """
    if dropout is None:
        rates = tuple(float(p) for p in defaults)
    elif isinstance(dropout, list | tuple):
        if len(dropout) != len(defaults):
            raise ValueError(
                f"dropout list needs {len(defaults)} rates (one per dropout layer), got {dropout!r}"
            )
        rates = tuple(dropout)
    else:
        rates = (dropout,) * len(defaults)
    for p in rates:
        _check_rate(p)
    return tuple(float(p) for p in rates)


def dropout_layer(p: float) -> nn.Module:
    """``nn.Dropout(p)``, or ``nn.Identity`` for ``p == 0`` so disabled dropouts leave no node in exports."""
    return nn.Dropout(p) if p > 0 else nn.Identity()


def set_trainable(module: nn.Module, trainable: bool) -> None:
    """Set ``requires_grad`` on every parameter of ``module``."""
    for p in module.parameters():
        p.requires_grad_(trainable)


def init_weights(module: nn.Module, mode: str = "fan_out") -> None:
    """He-normal conv weights (``mode`` fan_out or fan_in), unit/zero BatchNorm, zero conv biases.

    Linear layers keep torch defaults.
    """
    for m in module.modules():
        if isinstance(m, nn.Conv1d | nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode=mode, nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class SeparableConv2d(nn.Sequential):
    """Keras-style ``SeparableConv2D``: depthwise ``k x k`` conv (depth multiplier 1) then 1x1 pointwise."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 3, bias: bool = False) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(
            in_chs, in_chs, kernel_size, padding=kernel_size // 2, groups=in_chs, bias=False
        )
        self.pointwise = nn.Conv2d(in_chs, out_chs, 1, bias=bias)


class StridedPointwiseConv2d(nn.Conv2d):
    """A 1x1 convolution with stride ``stride``, computed as subsampling + a stride-1 1x1 convolution.

    Same parameters (and state-dict keys) and the same function as ``nn.Conv2d(in, out, 1, stride=stride)``,
    but it avoids a oneDNN crash in torch 2.13 on CPU: the weight gradient of a strided 1x1 conv in
    channels_last (e.g. 3 or 8 -> 16 channels on a 46x46 or 48x48 map) corrupts the heap (segfault or
    "could not create a primitive descriptor for the reorder primitive").
    """

    def __init__(self, in_chs: int, out_chs: int, stride: int = 2, bias: bool = False) -> None:
        super().__init__(in_chs, out_chs, 1, bias=bias)
        self.step = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x[:, :, :: self.step, :: self.step], self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, subsample={self.step}"


def pointwise_conv(in_chs: int, out_chs: int, stride: int = 1, bias: bool = False) -> nn.Conv2d:
    """1x1 convolution; strided ones as :class:`StridedPointwiseConv2d` (see there why)."""
    if stride > 1:
        return StridedPointwiseConv2d(in_chs, out_chs, stride=stride, bias=bias)
    return nn.Conv2d(in_chs, out_chs, 1, bias=bias)


class AdaptiveAvgPool2dExportable(nn.Module):
    """``nn.AdaptiveAvgPool2d`` that also exports to ONNX when the output size does not divide the input.

    The TorchScript ONNX exporter rejects ``adaptive_avg_pool2d`` unless the input size is a multiple
    of the output size (e.g. 3x3 -> 2x2 fails). In eager mode this module calls the native op; while
    exporting it computes the same bins (``floor(i*H/oh)`` .. ``ceil((i+1)*H/oh)``) with slices and means,
    which exports for the (fixed) input size used at export time (the tracer warns that the spatial size
    becomes a constant; only the batch axis can be dynamic in such a graph).
    """

    def __init__(self, output_size: int | tuple[int, int]) -> None:
        super().__init__()
        self.output_size = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_scripting():
            return F.adaptive_avg_pool2d(x, self.output_size)
        return self._eager_forward(x)

    @torch.jit.unused
    def _eager_forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.onnx.is_in_onnx_export():
            return F.adaptive_avg_pool2d(x, self.output_size)
        in_h, in_w = int(x.shape[-2]), int(x.shape[-1])
        out_h, out_w = self.output_size
        if in_h % out_h == 0 and in_w % out_w == 0:
            return F.adaptive_avg_pool2d(x, self.output_size)
        rows = []
        for i in range(out_h):
            h0, h1 = (i * in_h) // out_h, -(-(i + 1) * in_h // out_h)
            cols = []
            for j in range(out_w):
                w0, w1 = (j * in_w) // out_w, -(-(j + 1) * in_w // out_w)
                cols.append(x[:, :, h0:h1, w0:w1].mean(dim=(2, 3), keepdim=True))
            rows.append(torch.cat(cols, dim=3))
        return torch.cat(rows, dim=2)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"


class ImageAdapter(nn.Module):
    """Brings FER images to what an ImageNet-shaped backbone expects: 3 channels at ``size`` x ``size``.

    One input channel is replicated to three (paper 004, section 4.3: "channel replication"); any other
    spatial size is bilinearly resized to ``size`` (so 48x48 FER crops can be fed directly). Three-channel
    inputs at the right size pass through unchanged.
    """

    def __init__(self, in_chans: int, size: int) -> None:
        super().__init__()
        if in_chans not in (1, 3):
            raise ValueError(f"in_chans must be 1 (replicated) or 3 for an RGB backbone, got {in_chans}")
        self.in_chans = in_chans
        self.size = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2] != self.size or x.shape[-1] != self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        if self.in_chans == 1:
            x = x.expand(-1, 3, -1, -1)
        return x

    def extra_repr(self) -> str:
        return f"in_chans={self.in_chans}, size={self.size}"


def load_backbone_weights(
    backbone: nn.Module, path: str | os.PathLike, prefixes: Sequence[str] = ("", "backbone.")
) -> list[str]:
    """Copy the tensors of a safetensors file into ``backbone``; returns the file keys that were not used.

    A backbone key ``k`` is looked up as ``prefix + k`` for each prefix in turn, so files saved from a full
    classifier (e.g. torchvision's ``features.0.weight`` or ``layer1.0.conv1.weight``) load directly; keys
    the backbone does not have (the original classifier) are ignored. Every backbone tensor must be present
    with the same shape (BatchNorm ``num_batches_tracked`` counters may be absent); nothing is downloaded
    and nothing is unpickled.
    """
    from safetensors.torch import load_file

    tensors = load_file(os.fspath(path), device="cpu")
    state = backbone.state_dict()
    loaded: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    missing, mismatched = [], []
    for key, target in state.items():
        src = next((p + key for p in prefixes if p + key in tensors), None)
        if src is None:
            if not key.endswith("num_batches_tracked"):
                missing.append(key)
            continue
        if tensors[src].shape != target.shape:
            mismatched.append(f"{src}: file {tuple(tensors[src].shape)} vs model {tuple(target.shape)}")
            continue
        loaded[key] = tensors[src]
        used.add(src)
    if missing or mismatched:
        raise ValueError(
            f"{os.fspath(path)} does not fit the backbone: {len(missing)} tensors missing {missing[:5]}, "
            f"{len(mismatched)} of another shape {mismatched[:5]}"
        )
    backbone.load_state_dict(loaded, strict=False)
    return sorted(set(tensors) - used)
