"""Small building blocks shared by the model definitions."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["AdaptiveAvgPool2dExportable", "SeparableConv2d", "check_model_args", "init_weights"]


def check_model_args(num_classes: int, in_chans: int, dropout: float) -> None:
    """Validate the arguments every factory accepts."""
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if in_chans < 1:
        raise ValueError(f"in_chans must be >= 1, got {in_chans}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")


def init_weights(module: nn.Module) -> None:
    """He-normal (fan_out) conv weights, unit/zero BatchNorm, zero biases; Linear keeps torch defaults."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
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
