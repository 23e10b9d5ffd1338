"""Four-layer ConvNet of paper 003 (Debnath et al. 2021).

Paper 003 (/work/shared/papers/003_*.txt), "Pipeline for Proposed CNN": "four convolution and additional
pooling layers and two fully connected layers [...] A ReLU layer, batch normalization, and a dropout layer
is used for any convolution and a fully connected layer". The widths are those of the paper's public code
(github.com/Tanoy004/Emotion-recognition-through-CNN, ``new.py``), which the paper links: conv 3x3 'same'
128-256-512-512, each conv -> BN -> ReLU -> max-pool 2x2 -> dropout 0.25, flatten (3x3x512 for 48x48),
dense 256 and 512, each dense -> BN -> ReLU -> dropout 0.25, dense N.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .layers import check_input_size, check_model_args, dropout_layer, init_weights, resolve_dropout
from .registry import register_model

__all__ = ["ConvNet4", "convnet4"]

CONV_CHS = (128, 256, 512, 512)
FC_DIMS = (256, 512)
PAPER_DROPOUT = 0.25


class ConvNet4(nn.Module):
    """Four [conv-BN-ReLU-pool-dropout] stages, two [dense-BN-ReLU-dropout] layers, dense; returns logits."""

    def __init__(
        self,
        num_classes: int = 7,
        in_chans: int = 1,
        dropout: float | Sequence[float] = PAPER_DROPOUT,
        input_size: int = 48,
    ) -> None:
        super().__init__()
        check_model_args(num_classes, in_chans)
        check_input_size(input_size, 16)
        p = resolve_dropout(dropout, (PAPER_DROPOUT,) * (len(CONV_CHS) + len(FC_DIMS)))
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.input_size = input_size
        layers: list[nn.Module] = []
        prev = in_chans
        for chs, rate in zip(CONV_CHS, p, strict=False):
            layers += [
                nn.Conv2d(prev, chs, 3, padding=1),
                nn.BatchNorm2d(chs),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
                dropout_layer(rate),
            ]
            prev = chs
        self.features = nn.Sequential(*layers)
        side = input_size // 2 ** len(CONV_CHS)
        self.num_features = prev * side * side
        head: list[nn.Module] = []
        width = self.num_features
        for dim, rate in zip(FC_DIMS, p[len(CONV_CHS) :], strict=True):
            head += [nn.Linear(width, dim), nn.BatchNorm1d(dim), nn.ReLU(inplace=True), dropout_layer(rate)]
            width = dim
        head.append(nn.Linear(width, num_classes))
        self.classifier = nn.Sequential(*head)
        init_weights(self, mode="fan_in")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.forward_features(x), 1))


@register_model
def convnet4(num_classes: int = 7, in_chans: int = 1, **kwargs) -> ConvNet4:
    """Paper 003 (Debnath et al. 2021): 4 conv + 2 FC, each with ReLU, batch norm and dropout.

    5,155,847 trainable parameters for ``num_classes=7, in_chans=1`` (convs keep their bias, as in the
    Keras original).

    kwargs: ``dropout`` (0.25 everywhere as in the paper's code; a number, or a list of 6 rates: 4 conv
    stages then 2 dense layers), ``input_size`` (int, 48, >= 16; sizes the first dense layer).
    """
    return ConvNet4(num_classes=num_classes, in_chans=in_chans, **kwargs)
