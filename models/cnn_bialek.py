"""Five-layer and six-layer CNNs of paper 004 (Bialek et al. 2023), Tables 3-6.

Paper 004 (/work/shared/papers/004_*.txt), sections 4.1-4.2. Each conv layer is a Keras
``Conv2D(3x3, 'same', activation="relu")`` followed by BatchNormalization, 2x2 max-pooling and dropout
(25%). The five-layer net flattens and ends in FC 512-256-N with BatchNorm and 50% dropout (Table 3,
16,299,783 trainable parameters for 7 classes); the six-layer net adds a 2048-filter conv and replaces the
FC layers with global average pooling (Table 5, 34,535,175). Both counts are met exactly; the tables'
"non-trainable" parameters are the BN moving statistics (buffers in torch).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .layers import check_input_size, check_model_args, dropout_layer, init_weights, resolve_dropout
from .registry import register_model

__all__ = ["BialekCnn", "cnn5", "cnn6"]

CNN5_CHS = (128, 256, 512, 1024, 1024)
CNN6_CHS = (*CNN5_CHS, 2048)
CNN5_FC = (512, 256)
CONV_DROPOUT = 0.25
FC_DROPOUT = 0.5


class BialekCnn(nn.Module):
    """Stack of [conv3x3+ReLU, BN, maxpool 2x2, dropout] stages, then an FC head or GAP + dense.

    Max-pooling is Keras 'valid' (floor: 3x3 -> 1x1 after the fifth stage, as in the tables) except the
    six-layer net's last pool, whose input is already 1x1 (Table 5: 1x1 -> 1x1): a 'valid' 2x2 pool cannot
    run on it, so it is 'same' pooling (``last_pool_same``; ``ceil_mode`` is identical for 2x2/2 windows).
    """

    def __init__(
        self,
        channels: Sequence[int],
        fc_dims: Sequence[int] | None,
        num_classes: int = 7,
        in_chans: int = 1,
        dropout: Sequence[float] = (),
        input_size: int = 48,
        last_pool_same: bool = False,
    ) -> None:
        super().__init__()
        n_stages = len(channels)
        if len(dropout) != n_stages + len(fc_dims or ()):
            raise ValueError("one dropout rate per conv stage and per hidden FC layer")
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.input_size = input_size
        layers: list[nn.Module] = []
        prev, size = in_chans, input_size
        for i, chs in enumerate(channels):
            ceil = last_pool_same and i == n_stages - 1
            layers += [
                nn.Conv2d(prev, chs, 3, padding=1),
                nn.ReLU(inplace=True),
                nn.BatchNorm2d(chs),
                nn.MaxPool2d(2, ceil_mode=ceil),
                dropout_layer(dropout[i]),
            ]
            prev, size = chs, (size + 1) // 2 if ceil else size // 2
        self.features = nn.Sequential(*layers)
        self.global_pool = fc_dims is None
        if fc_dims is None:
            self.num_features = prev
            self.head = nn.Linear(prev, num_classes)
        else:
            self.num_features = prev * size * size
            head: list[nn.Module] = [nn.Flatten(1)]
            width = self.num_features
            for dim, p in zip(fc_dims, dropout[n_stages:], strict=True):
                head += [nn.Linear(width, dim), nn.ReLU(inplace=True), nn.BatchNorm1d(dim), dropout_layer(p)]
                width = dim
            head.append(nn.Linear(width, num_classes))
            self.head = nn.Sequential(*head)
        init_weights(self, mode="fan_in")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_features(x)
        if self.global_pool:
            x = x.mean(dim=(2, 3))
        return self.head(x)


@register_model
def cnn5(
    num_classes: int = 7,
    in_chans: int = 1,
    dropout: float | Sequence[float] | None = None,
    input_size: int = 48,
) -> BialekCnn:
    """Paper 004, Table 3 (five-layer model): convs 128-256-512-1024-1024, FC 512-256-N.

    16,299,783 trainable parameters for ``num_classes=7, in_chans=1``, as the table: convs 15,634,432 +
    conv BN 5,888 + dense 657,927 + dense BN 1,536 (each Dense is followed by BatchNormalization). A 48x48
    input is 1x1x1024 after the fifth pool; other sizes flatten ``1024 * (input_size // 32) ** 2`` features.

    kwargs: ``dropout`` (``None``: the paper's 25% after each conv stage and 50% after each hidden FC
    layer, Table 4; a number: that rate everywhere; a list of 7 rates), ``input_size`` (int, 48, >= 32).
    """
    check_model_args(num_classes, in_chans)
    check_input_size(input_size, 32)
    rates = resolve_dropout(dropout, (CONV_DROPOUT,) * len(CNN5_CHS) + (FC_DROPOUT,) * len(CNN5_FC))
    return BialekCnn(CNN5_CHS, CNN5_FC, num_classes, in_chans, rates, input_size)


@register_model
def cnn6(
    num_classes: int = 7,
    in_chans: int = 1,
    dropout: float | Sequence[float] | None = None,
    input_size: int = 48,
) -> BialekCnn:
    """Paper 004, Table 5 (six-layer model): convs 128-256-512-1024-1024-2048, GAP, dense.

    34,535,175 trainable parameters for ``num_classes=7, in_chans=1``, as the table: convs 34,510,848 +
    BN 9,984 + dense 14,343. Works for any input >= 32x32.

    kwargs: ``dropout`` (``None``: the paper's 25% after each of the 6 stages, Table 6; a number; or a list
    of 6 rates), ``input_size`` (int, 48, >= 32; informative only).
    """
    check_model_args(num_classes, in_chans)
    check_input_size(input_size, 32)
    rates = resolve_dropout(dropout, (CONV_DROPOUT,) * len(CNN6_CHS))
    return BialekCnn(CNN6_CHS, None, num_classes, in_chans, rates, input_size, last_pool_same=True)
