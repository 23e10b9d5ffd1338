"""VGG16 for FER: paper 000's Model (C) and paper 004's VGG16 transfer-learning model.

- ``vgg16``: paper 000 (/work/shared/papers/000_*.txt), section 3.2, Model (C): the 13 3x3 convs of VGG16 in
  five groups (64..512 filters, 2x2/2 max-pool after each), "batch normalization [...] after each layer",
  then FC 4096-4096-N. On 48x48 faces the last pool leaves 1x1x512, so the first FC has 512 inputs (not
  VGG16's 7x7x512): 33.6M parameters instead of ImageNet VGG16's 138M.
- ``vgg16_tl``: paper 004 (/work/shared/papers/004_*.txt), section 4.3, Table 7: the VGGFace VGG16
  convolutional base cut after ``block5_conv1`` (14x14x512 at 224x224), then four added conv blocks
  (conv 128/256/512/1024 with ReLU, BN, max-pool, dropout 25%), GAP and dense N.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from torch import nn

from .layers import (
    ImageAdapter,
    check_input_size,
    check_model_args,
    dropout_layer,
    init_weights,
    load_backbone_weights,
    resolve_dropout,
    set_trainable,
)
from .registry import register_model

__all__ = ["Vgg16", "Vgg16Transfer", "vgg16", "vgg16_tl"]

# VGG16 configuration "D": conv widths, "M" = 2x2/2 max-pool.
VGG16_CFG: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M",
)  # fmt: skip
# Table 7 keeps VGG16 up to block5_conv1: the first 11 convs, 4 pools (torchvision ``features[:26]``).
TL_BASE_CFG = VGG16_CFG[:15]
TL_ADDED_CHS = (128, 256, 512, 1024)
TL_DROPOUT = 0.25


def make_vgg_features(cfg: Sequence[int | str], in_chans: int, batch_norm: bool) -> nn.Sequential:
    """VGG conv stack; without BN the module indices match torchvision's ``vgg16().features``."""
    layers: list[nn.Module] = []
    prev = in_chans
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(2, stride=2))
            continue
        assert isinstance(v, int)
        if batch_norm:
            layers += [nn.Conv2d(prev, v, 3, padding=1, bias=False), nn.BatchNorm2d(v), nn.ReLU(inplace=True)]
        else:
            layers += [nn.Conv2d(prev, v, 3, padding=1), nn.ReLU(inplace=True)]
        prev = v
    return nn.Sequential(*layers)


class Vgg16(nn.Module):
    """Paper 000 Model (C): VGG16 convs with BN, flatten, FC 4096 -> ReLU -> dropout -> FC 4096 -> ReLU ->
    dropout -> FC N; returns logits. ``input_size`` sizes the first FC: ``512 * (input_size // 32) ** 2``.
    """

    def __init__(
        self, num_classes: int = 7, in_chans: int = 1, dropout: float = 0.5, input_size: int = 48
    ) -> None:
        super().__init__()
        check_model_args(num_classes, in_chans, dropout)
        check_input_size(input_size, 32)
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.input_size = input_size
        self.features = make_vgg_features(VGG16_CFG, in_chans, batch_norm=True)
        side = input_size // 32
        self.num_features = 512 * side * side
        self.classifier = nn.Sequential(
            nn.Linear(self.num_features, 4096),
            nn.ReLU(inplace=True),
            dropout_layer(dropout),
            nn.Linear(4096, 4096),
            nn.ReLU(inplace=True),
            dropout_layer(dropout),
            nn.Linear(4096, num_classes),
        )
        init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.forward_features(x), 1))


class Vgg16Transfer(nn.Module):
    """Paper 004 Table 7: adapter (1->3 channels, resize to ``input_size``) -> VGG16 base up to block5_conv1
    (``features``, torchvision layout, no BN) -> 4 added [conv3x3+ReLU, BN, max-pool, dropout] blocks ->
    GAP -> dense N; returns logits.

    The added blocks' last pool sees a 1x1 map (Table 7: 1x1 -> 1x1) and is therefore 'same' pooling
    (``ceil_mode``). With ``freeze_base`` the base's weights do not train and it stays in eval mode.
    """

    def __init__(
        self,
        num_classes: int = 7,
        in_chans: int = 1,
        dropout: float | Sequence[float] | None = None,
        input_size: int = 224,
        weights: str | os.PathLike | None = None,
        freeze_base: bool | None = None,
    ) -> None:
        super().__init__()
        check_model_args(num_classes, in_chans)
        check_input_size(input_size, 128)
        p = resolve_dropout(dropout, (TL_DROPOUT,) * len(TL_ADDED_CHS))
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.input_size = input_size
        self.adapter = ImageAdapter(in_chans, input_size)
        self.features = make_vgg_features(TL_BASE_CFG, 3, batch_norm=False)
        layers: list[nn.Module] = []
        prev = 512
        for i, (chs, rate) in enumerate(zip(TL_ADDED_CHS, p, strict=True)):
            layers += [
                nn.Conv2d(prev, chs, 3, padding=1),
                nn.ReLU(inplace=True),
                nn.BatchNorm2d(chs),
                nn.MaxPool2d(2, ceil_mode=i == len(TL_ADDED_CHS) - 1),
                dropout_layer(rate),
            ]
            prev = chs
        self.added = nn.Sequential(*layers)
        self.num_features = prev
        self.head = nn.Linear(prev, num_classes)
        init_weights(self, mode="fan_in")
        if weights is not None:
            load_backbone_weights(self.features, weights, prefixes=("features.", "backbone.", ""))
        self.base_frozen = weights is not None if freeze_base is None else freeze_base
        set_trainable(self.features, not self.base_frozen)

    def train(self, mode: bool = True) -> Vgg16Transfer:
        super().train(mode)
        if self.base_frozen:
            self.features.eval()
        return self

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.added(self.features(self.adapter(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x).mean(dim=(2, 3)))


@register_model
def vgg16(num_classes: int = 7, in_chans: int = 1, **kwargs) -> Vgg16:
    """Paper 000, section 3.2, Model (C): VGG16 (13 conv + FC 4096-4096-N) with BN after each conv.

    33,628,999 trainable parameters for ``num_classes=7, in_chans=1`` at 48x48 (conv biases dropped: they are
    redundant before BN, as in ``vgg_fer11``). The paper gives no count for this model.

    kwargs: ``dropout`` (float, 0.5; after each of the two 4096 layers), ``input_size`` (int, 48, >= 32).
    """
    return Vgg16(num_classes=num_classes, in_chans=in_chans, **kwargs)


@register_model
def vgg16_tl(num_classes: int = 7, in_chans: int = 1, **kwargs) -> Vgg16Transfer:
    """Paper 004, section 4.3, Table 7: VGG16 base (to block5_conv1) + 4 added conv blocks + GAP + dense.

    16,790,983 parameters for 7 classes; with the base frozen (the paper's setting) 6,795,911 are
    trainable, exactly Table 7's count. Table 7's 9,998,912 "non-trainable" are the frozen base
    (9,995,072 = VGG16's 13 convs minus block5_conv2/3) plus the added BN moving statistics (3,840,
    buffers in torch), so the base is VGG16 through block5_conv1, 14x14x512 at 224x224.

    kwargs: ``weights`` (path to a safetensors file with the base's weights in torchvision ``vgg16``
    layout, ``features.<i>.weight``/``bias``, i < 26, e.g. converted VGGFace weights; other keys ignored;
    ``None``: random init, nothing is ever downloaded), ``freeze_base`` (``None``: frozen iff ``weights``
    are given), ``dropout`` (``None``: 25% after each added block; a number; or a list of 4),
    ``input_size`` (int, 224; inputs of any other size, e.g. 48x48 faces, are resized to it and a single
    channel is replicated to three). Inputs are used as given: normalise them the way the weights expect.
    """
    return Vgg16Transfer(num_classes=num_classes, in_chans=in_chans, **kwargs)
