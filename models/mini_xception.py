"""mini-Xception (Arriaga et al. 2017) and the paper-000 "Model A" preset.

Arriaga, Valdenegro-Toro, Ploeger, "Real-time Convolutional Neural Networks for Emotion and Gender
Classification" (arXiv:1710.07557, 2017), reference implementation ``mini_XCEPTION`` in
oarriaga/face_classification (``src/models/cnn.py``). Paper 000 (/work/shared/papers/000_*.txt), section 3.2
"Convolutional Neural Network Architectures and Pre-Trained Models", uses it as its Model (A) (Figure 2).
"""

from __future__ import annotations

import torch
from torch import nn

from .layers import SeparableConv2d, StridedPointwiseConv2d, check_input_size, check_model_args, init_weights
from .registry import register_model

__all__ = ["MiniXception", "mini_xception", "mini_xception_a"]

_STEM_CHS = 8
_MODULE_CHS = (16, 32, 64, 128)

# Width multiplier of the paper-000 Model A preset: 585,151 trainable parameters for num_classes=7,
# in_chans=1 (stem 28, modules 56 / 112 / 224 / 448), paper: "approximately 600,000". 3.55 would give
# 600,593 but odd channel counts (57, 114, 227, 454), which suit vectorised conv kernels less well.
MODEL_A_WIDTH = 3.5


def _scale(chs: int, width: float) -> int:
    return max(1, int(round(chs * width)))


class XceptionModule(nn.Module):
    """Residual depthwise-separable module; halves the spatial size.

    main: SepConv3x3 -> BN -> ReLU -> SepConv3x3 -> BN -> MaxPool 3x3/2 (pad 1);
    shortcut: Conv1x1/2 -> BN; output = main + shortcut (no activation after the add, as in the reference).
    """

    def __init__(self, in_chs: int, out_chs: int) -> None:
        super().__init__()
        self.shortcut = nn.Sequential(
            StridedPointwiseConv2d(in_chs, out_chs, stride=2),
            nn.BatchNorm2d(out_chs),
        )
        self.main = nn.Sequential(
            SeparableConv2d(in_chs, out_chs, 3),
            nn.BatchNorm2d(out_chs),
            nn.ReLU(inplace=True),
            SeparableConv2d(out_chs, out_chs, 3),
            nn.BatchNorm2d(out_chs),
            nn.MaxPool2d(3, stride=2, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x) + self.shortcut(x)


class MiniXception(nn.Module):
    """Fully convolutional mini-Xception; returns logits of shape ``(N, num_classes)``.

    Stem: two valid (unpadded) 3x3 conv, 8 filters, no bias, each + BN + ReLU (48x48 -> 44x44); four
    :class:`XceptionModule` with 16, 32, 64, 128 filters (44 -> 22 -> 11 -> 6 -> 3); optional dropout;
    3x3 conv to ``num_classes`` (with bias); global average pooling. The softmax of the reference model is
    left to the loss / caller. Works for any input of at least 5x5 pixels.
    """

    def __init__(
        self,
        num_classes: int = 7,
        in_chans: int = 1,
        width: float = 1.0,
        dropout: float = 0.0,
        input_size: int = 48,
    ) -> None:
        super().__init__()
        check_model_args(num_classes, in_chans, dropout)
        check_input_size(input_size, 5)
        if width <= 0:
            raise ValueError(f"width must be > 0, got {width}")
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.input_size = input_size
        stem_chs = _scale(_STEM_CHS, width)
        chs = [_scale(c, width) for c in _MODULE_CHS]
        self.num_features = chs[-1]

        self.stem = nn.Sequential(
            nn.Conv2d(in_chans, stem_chs, 3, bias=False),
            nn.BatchNorm2d(stem_chs),
            nn.ReLU(inplace=True),
            nn.Conv2d(stem_chs, stem_chs, 3, bias=False),
            nn.BatchNorm2d(stem_chs),
            nn.ReLU(inplace=True),
        )
        self.blocks = nn.Sequential(
            *(XceptionModule(i, o) for i, o in zip([stem_chs, *chs[:-1]], chs, strict=True))
        )
        self.head_drop = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.head = nn.Conv2d(self.num_features, num_classes, 3, padding=1)
        init_weights(self)
        self.head.reset_parameters()  # He init here gives logits of std ~8 and a wasted first epoch

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.stem(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.head_drop(self.forward_features(x)))
        return x.mean(dim=(2, 3))  # global average pooling -> logits


@register_model
def mini_xception(num_classes: int = 7, in_chans: int = 1, **kwargs) -> MiniXception:
    """mini-Xception of Arriaga et al. 2017 (arXiv:1710.07557, section 3; oarriaga/face_classification).

    Also paper 000, section 3.2, Model (A). 56,951 trainable parameters for ``num_classes=7, in_chans=1``
    (the reference Keras model reports 58,423 including the 1,472 non-trainable BN moving statistics).

    kwargs: ``width`` (float, 1.0; multiplies every channel count), ``dropout`` (float, 0.0; Dropout2d
    before the head conv), ``input_size`` (int, 48; informative only, any input >= 5x5 works).
    """
    return MiniXception(num_classes=num_classes, in_chans=in_chans, **kwargs)


@register_model
def mini_xception_a(num_classes: int = 7, in_chans: int = 1, **kwargs) -> MiniXception:
    """Paper 000, section 3.2, Model (A): mini-Xception scaled to "approximately 600,000 parameters".

    Paper 000 describes Model A as the depthwise-separable + residual architecture of Arriaga et al. [27]
    with ~600k parameters, but the reference mini-Xception has ~57k (in Arriaga et al. ~600k is the size of
    their *first* model, a plain fully-convolutional net of 9 conv layers, whose description paper 000 mixes
    in). This preset keeps the mini-Xception topology and uses ``width=3.5`` (stem 28, modules
    56/112/224/448 filters): 585,151 trainable parameters for ``num_classes=7, in_chans=1`` (589,184 for
    8 classes).

    kwargs: as :func:`mini_xception` (``width`` defaults to 3.5, ``dropout`` to 0.0).
    """
    kwargs.setdefault("width", MODEL_A_WIDTH)
    return MiniXception(num_classes=num_classes, in_chans=in_chans, **kwargs)
