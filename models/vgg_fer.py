"""VGG-style 11-layer ConvNet of paper 000, Model (D).

Paper 000 (/work/shared/papers/000_*.txt), section 3.2 "Convolutional Neural Network Architectures and
Pre-Trained Models", Figure 3 Model (D): "inspired by the VGG architecture and consists of 11 layers with
close to 1,460,000 free trainable parameters. It has 4 Groups of two Conv-2D layers followed by the
max-pooling layer [...] starts from 32 [...] the last group reaches 256 filters of 3x3 size. After the fourth
group comes a group of three fully connected layers [...] 256 and 128 nodes, and the third contains
seven/eight channels".
"""

from __future__ import annotations

import torch
from torch import nn

from .layers import AdaptiveAvgPool2dExportable, check_input_size, check_model_args, init_weights
from .registry import register_model

__all__ = ["VggFer", "vgg_fer11"]

_GROUP_CHS = (32, 64, 128, 256)
_FC_DIMS = (256, 128)
_POOL_SIZE = 2


def _conv_bn_relu(in_chs: int, out_chs: int) -> list[nn.Module]:
    # Conv bias dropped: it is redundant before BatchNorm (the BN shift plays its role).
    return [
        nn.Conv2d(in_chs, out_chs, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_chs),
        nn.ReLU(inplace=True),
    ]


class VggFer(nn.Module):
    """VGG-style FER network; returns logits of shape ``(N, num_classes)``.

    Features: for c in (32, 64, 128, 256): [3x3 conv (pad 1, no bias) + BN + ReLU] x 2, then 2x2 max-pool.
    A 48x48 input ends at 3x3x256; an adaptive average pool to 2x2 (``pool_size``) makes the classifier input
    1024 whatever the input size (>= 16x16). Classifier: Dropout, FC 256, ReLU, Dropout, FC 128, ReLU,
    Dropout, FC num_classes.
    """

    def __init__(
        self,
        num_classes: int = 7,
        in_chans: int = 1,
        dropout: float = 0.5,
        pool_size: int = _POOL_SIZE,
        input_size: int = 48,
    ) -> None:
        super().__init__()
        check_model_args(num_classes, in_chans, dropout)
        check_input_size(input_size, 16)
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.input_size = input_size
        layers: list[nn.Module] = []
        prev = in_chans
        for chs in _GROUP_CHS:
            layers += _conv_bn_relu(prev, chs) + _conv_bn_relu(chs, chs)
            layers.append(nn.MaxPool2d(2, stride=2))
            prev = chs
        self.features = nn.Sequential(*layers)
        self.pool = AdaptiveAvgPool2dExportable(pool_size)
        self.num_features = prev * pool_size * pool_size
        fc1, fc2 = _FC_DIMS
        self.classifier = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(self.num_features, fc1),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(fc1, fc2),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(fc2, num_classes),
        )
        init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.features(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.forward_features(x), 1))


@register_model
def vgg_fer11(num_classes: int = 7, in_chans: int = 1, **kwargs) -> VggFer:
    """Paper 000, section 3.2, Model (D) (Figure 3): 8 conv + 3 FC, "close to 1,460,000" parameters.

    1,468,839 trainable parameters for ``num_classes=7, in_chans=1`` (1,468,968 for 8 classes): conv
    1,170,720 + BN 1,920 + FC 296,199. The paper does not say how 3x3x256 (48x48 input after four pools)
    meets FC 256; flattening it directly would give 1,796,519, so the 2x2 adaptive average pool (1024
    features) is the reading that matches the paper's count (+0.6%).

    kwargs: ``dropout`` (float, 0.5; before each of the three FC layers), ``pool_size`` (int, 2),
    ``input_size`` (int, 48; informative only, any input >= 16x16 works).
    """
    return VggFer(num_classes=num_classes, in_chans=in_chans, **kwargs)
