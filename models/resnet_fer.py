"""CNN with residual blocks of paper 002 (Bah et al. 2022), Table 1 "Architecture detail".

Paper 002 (/work/shared/papers/002_*.txt), section 2.1: twelve plain convolutions (ReLU inside the conv, then
BatchNorm: "BN after the activation in the simple Convolutional Blocks"), a residual block after every four
of them (conv-BN-ReLU-conv-BN, identity shortcut "added to the previous convolution and activated"; no 1x1
projection), 2x2/2 max-pooling, dropout 0.3 in the early layers and 0.4 in the last convolutional block,
global average pooling and one dense layer. 9,766,391 trainable parameters for 7 classes, exactly as the
table (its 6,720 "non-trainable" are the BN moving statistics, buffers in torch).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .layers import check_input_size, check_model_args, dropout_layer, init_weights, resolve_dropout
from .registry import register_model

__all__ = ["ResNetFer", "resnet_fer"]

# Table 1: dropout_1..dropout_4 sit in the first two convolutional blocks (0.3), dropout_5 and dropout_6
# in the last one (conv13-conv16, 0.4).
PAPER_DROPOUT = (0.3, 0.3, 0.3, 0.3, 0.4, 0.4)


class ConvReluBn(nn.Sequential):
    """Keras ``Conv2D(activation="relu")`` followed by ``BatchNormalization``, 'same' padding, with bias."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 3) -> None:
        super().__init__(
            nn.Conv2d(in_chs, out_chs, kernel_size, padding=kernel_size // 2),
            nn.ReLU(inplace=True),
            nn.BatchNorm2d(out_chs),
        )


class ResidualBlock(nn.Module):
    """Identity-shortcut block: ``relu(x + bn(conv(relu(bn(conv(x))))))``, 3x3 convs with bias."""

    def __init__(self, chs: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(chs, chs, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(chs)
        self.conv2 = nn.Conv2d(chs, chs, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(chs)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.bn1(self.conv1(x)))
        return self.act(x + self.bn2(self.conv2(y)))


class ResNetFer(nn.Module):
    """Paper 002's network; returns logits ``(N, num_classes)``. Table 1 layer by layer:

    block1: conv5x5 16, conv5x5 16, dropout_1, conv 32, conv 32, pool (48->24), dropout_2; res 32;
    block2: conv 64, conv 64, pool (->12), dropout_3, conv 128, conv 128, pool (->6), dropout_4; res 128;
    block3: conv 256, conv 256, pool (->3), dropout_5, conv 512, conv 512, pool (->1), dropout_6; res 512;
    GAP; dense. Convs are 3x3 unless noted. Any input of at least 32x32 works (GAP head).
    """

    def __init__(
        self,
        num_classes: int = 7,
        in_chans: int = 1,
        dropout: float | Sequence[float] | None = None,
        input_size: int = 48,
    ) -> None:
        super().__init__()
        check_model_args(num_classes, in_chans)
        check_input_size(input_size, 32)
        p = resolve_dropout(dropout, PAPER_DROPOUT)
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.input_size = input_size
        self.num_features = 512
        self.block1 = nn.Sequential(
            ConvReluBn(in_chans, 16, 5),
            ConvReluBn(16, 16, 5),
            dropout_layer(p[0]),
            ConvReluBn(16, 32),
            ConvReluBn(32, 32),
            nn.MaxPool2d(2),
            dropout_layer(p[1]),
        )
        self.res1 = ResidualBlock(32)
        self.block2 = nn.Sequential(
            ConvReluBn(32, 64),
            ConvReluBn(64, 64),
            nn.MaxPool2d(2),
            dropout_layer(p[2]),
            ConvReluBn(64, 128),
            ConvReluBn(128, 128),
            nn.MaxPool2d(2),
            dropout_layer(p[3]),
        )
        self.res2 = ResidualBlock(128)
        self.block3 = nn.Sequential(
            ConvReluBn(128, 256),
            ConvReluBn(256, 256),
            nn.MaxPool2d(2),
            dropout_layer(p[4]),
            ConvReluBn(256, 512),
            ConvReluBn(512, 512),
            nn.MaxPool2d(2),
            dropout_layer(p[5]),
        )
        self.res3 = ResidualBlock(512)
        self.head = nn.Linear(self.num_features, num_classes)
        init_weights(self, mode="fan_in")  # Keras he_normal, zero biases (section 2.1.3)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.res1(self.block1(x))
        x = self.res2(self.block2(x))
        return self.res3(self.block3(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x).mean(dim=(2, 3)))


@register_model
def resnet_fer(num_classes: int = 7, in_chans: int = 1, **kwargs) -> ResNetFer:
    """Paper 002 (Bah et al. 2022), Table 1: 18 convs (12 plain + 3 residual blocks), GAP, dense.

    9,766,391 trainable parameters for ``num_classes=7, in_chans=1`` -- the table's count, met layer for
    layer (all convs keep their bias, as in the table: 416 = 5*5*16 + 16).

    kwargs: ``dropout`` (``None``: the paper's 0.3, 0.3, 0.3, 0.3, 0.4, 0.4 for dropout_1..dropout_6; a
    number: that rate everywhere; a list of 6 rates: one per dropout layer), ``input_size`` (int, 48;
    informative only, any input >= 32x32 works).
    """
    return ResNetFer(num_classes=num_classes, in_chans=in_chans, **kwargs)
