"""ResNet50 transfer-learning model of paper 004 (Bialek et al. 2023), section 4.3, Table 8.

The ResNet50 convolutional base (He et al. 2016; the paper's weights come from VGGFace2), global average
pooling to 2048 features ("Flatten (None, 2048)"), dense 2048, dense N; 224x224x3 inputs with channel
replication. Written out here (bottleneck blocks 3-4-6-3) because torchvision is not a dependency; module
names follow torchvision's ``resnet50`` so its state-dict layout loads unchanged.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from .layers import (
    ImageAdapter,
    check_input_size,
    check_model_args,
    dropout_layer,
    init_weights,
    load_backbone_weights,
    pointwise_conv,
    set_trainable,
)
from .registry import register_model

__all__ = ["Bottleneck", "ResNet50Backbone", "ResNet50Transfer", "resnet50_tl"]

STAGE_BLOCKS = (3, 4, 6, 3)
STAGE_WIDTHS = (64, 128, 256, 512)
EXPANSION = 4
FC_DIM = 2048
FC_DROPOUT = 0.5


class Bottleneck(nn.Module):
    """1x1 reduce -> 3x3 -> 1x1 expand (x4), BN after each, projection shortcut when the shape changes."""

    def __init__(self, in_chs: int, width: int, stride: int = 1, stride_in_1x1: bool = False) -> None:
        super().__init__()
        out_chs = width * EXPANSION
        s1, s3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = pointwise_conv(in_chs, width, stride=s1)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=s3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = pointwise_conv(width, out_chs)
        self.bn3 = nn.BatchNorm2d(out_chs)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_chs != out_chs:
            self.downsample = nn.Sequential(
                pointwise_conv(in_chs, out_chs, stride=stride), nn.BatchNorm2d(out_chs)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        return self.relu(self.bn3(self.conv3(y)) + shortcut)


class ResNet50Backbone(nn.Module):
    """ResNet50 without its classifier: (N, 3, H, W) -> (N, 2048, H/32, W/32).

    ``stride_in_1x1`` puts the stride of downsampling blocks in the first 1x1 conv (the original Caffe /
    Keras / VGGFace2 ResNet50) instead of the 3x3 conv (torchvision's "v1.5"); same parameters, pick the one
    the loaded weights were trained with.
    """

    def __init__(self, stride_in_1x1: bool = False) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        in_chs = 64
        for i, (blocks, width) in enumerate(zip(STAGE_BLOCKS, STAGE_WIDTHS, strict=True)):
            stage = []
            for b in range(blocks):
                stride = 2 if i > 0 and b == 0 else 1
                stage.append(Bottleneck(in_chs, width, stride, stride_in_1x1))
                in_chs = width * EXPANSION
            self.add_module(f"layer{i + 1}", nn.Sequential(*stage))
        self.num_features = in_chs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


class ResNet50Transfer(nn.Module):
    """Adapter (1->3 channels, resize) -> ResNet50 base -> GAP -> dense 2048 + ReLU -> dropout -> dense N.

    With ``freeze_base`` the base's weights do not train and its BatchNorm stays in eval mode.
    """

    def __init__(
        self,
        num_classes: int = 7,
        in_chans: int = 1,
        dropout: float = FC_DROPOUT,
        input_size: int = 224,
        weights: str | os.PathLike | None = None,
        freeze_base: bool = False,
        stride_in_1x1: bool = False,
    ) -> None:
        super().__init__()
        check_model_args(num_classes, in_chans, dropout)
        check_input_size(input_size, 32)
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.input_size = input_size
        self.adapter = ImageAdapter(in_chans, input_size)
        self.backbone = ResNet50Backbone(stride_in_1x1)
        self.num_features = self.backbone.num_features
        self.fc1 = nn.Linear(self.num_features, FC_DIM)
        self.act = nn.ReLU(inplace=True)
        self.drop = dropout_layer(dropout)
        self.head = nn.Linear(FC_DIM, num_classes)
        init_weights(self.backbone)
        for m in self.backbone.modules():
            if isinstance(m, Bottleneck):
                nn.init.zeros_(m.bn3.weight)  # each residual branch starts as identity (Goyal et al. 2017)
        if weights is not None:
            load_backbone_weights(self.backbone, weights, prefixes=("", "backbone."))
        self.base_frozen = freeze_base
        set_trainable(self.backbone, not self.base_frozen)

    def train(self, mode: bool = True) -> ResNet50Transfer:
        super().train(mode)
        if self.base_frozen:
            self.backbone.eval()
        return self

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(self.adapter(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_features(x).mean(dim=(2, 3))
        return self.head(self.drop(self.act(self.fc1(x))))


@register_model
def resnet50_tl(num_classes: int = 7, in_chans: int = 1, **kwargs) -> ResNet50Transfer:
    """Paper 004, section 4.3, Table 8: ResNet50 base, pooled 2048 features, dense 2048, dense N.

    27,718,727 trainable parameters for 7 classes, exactly Table 8's "Trainable params" (the whole net
    trains): base 23,508,032 + dense 4,196,352 + dense 14,343. Table 8's total 27,771,847 adds the 53,120 BN
    moving statistics (buffers in torch); it also shows the base's convs carry no bias (VGGFace2 ResNet50;
    Keras' ImageNet ResNet50 with biases would total 27,798,407).

    kwargs: ``weights`` (path to a safetensors file in torchvision ``resnet50`` layout -- ``conv1.weight``,
    ``bn1.*``, ``layer1.0.conv1.weight``, ...; ``fc.*`` ignored; ``None``: random init, never downloads),
    ``freeze_base`` (bool, False: the paper trains all layers; True keeps the base fixed, BN in eval mode),
    ``stride_in_1x1`` (bool, False; True for Caffe/Keras/VGGFace2-trained weights), ``dropout`` (float, 0.5,
    before the last dense; the paper's added layers reuse Table 4's 50% FC dropout), ``input_size`` (int,
    224; other input sizes are resized to it, one channel is replicated to three).
    """
    return ResNet50Transfer(num_classes=num_classes, in_chans=in_chans, **kwargs)
