"""The three custom CNNs of paper 001 (simple / moderate / complex), used there for FER2013 -> CK+/JAFFE.

Paper 001 (/work/shared/papers/001_*.txt), section 3, states only layer *counts* (the figures with widths
are missing from the text):

- Model 1: 2 conv, 2 max-pool, 3 dense, ReLU after each conv and dense, softmax at the end.
- Model 2: 5 conv, 1 max-pool, 2 average-pool, 3 dense, 2 dropouts after dense layers.
- Model 3: 6 conv, 4 max-pool, 4 dense, 7 dropouts, 7 batch norms.

Model 2's counts (including the unusual max-pool + two average-pools) are exactly those of the widely used
Keras FER2013 example (serengil/tensorflow-101, ``facial-expression-recognition.py``), so its widths are
taken from there. Models 1 and 3 use our widths; the layer counts are the paper's. 48x48 inputs by default;
``input_size`` sizes the first dense layer for other resolutions.
"""

from __future__ import annotations

import torch
from torch import nn

from .layers import check_input_size, check_model_args, dropout_layer, init_weights
from .registry import register_model

__all__ = ["CustomCnn", "cnn_complex", "cnn_moderate", "cnn_simple"]


def _window_out(size: int, kernel: int, stride: int = 1) -> int:
    """Output side of an unpadded ('valid') conv or pool window."""
    return (size - kernel) // stride + 1


class CustomCnn(nn.Module):
    """``features`` (convs and pools) -> flatten -> ``classifier`` (dense layers); returns logits."""

    def __init__(
        self,
        features: nn.Sequential,
        classifier: nn.Sequential,
        num_classes: int,
        in_chans: int,
        input_size: int,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.input_size = input_size
        self.features = features
        self.classifier = classifier
        init_weights(self, mode="fan_in")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.forward_features(x), 1))


def _classifier(in_features: int, dims: tuple[int, ...], num_classes: int, dropout: float) -> nn.Sequential:
    """Dense -> ReLU -> dropout per hidden layer, then dense N."""
    layers: list[nn.Module] = []
    for dim in dims:
        layers += [nn.Linear(in_features, dim), nn.ReLU(inplace=True), dropout_layer(dropout)]
        in_features = dim
    layers.append(nn.Linear(in_features, num_classes))
    return nn.Sequential(*layers)


@register_model
def cnn_simple(
    num_classes: int = 7, in_chans: int = 1, dropout: float = 0.0, input_size: int = 48
) -> CustomCnn:
    """Paper 001, Model 1 ("simple"): 2 conv, 2 max-pool, 3 dense, ReLU after each.

    Conv 3x3 'valid' 32 -> pool 2 -> conv 3x3 64 -> pool 2 -> flatten (10x10x64 for 48x48) -> dense 128 ->
    dense 64 -> dense N. Widths are ours (the paper gives counts only); 846,855 parameters for 7 classes.

    kwargs: ``dropout`` (float, 0.0 as in the paper; when > 0, after each hidden dense layer),
    ``input_size`` (int, 48, >= 10).
    """
    check_model_args(num_classes, in_chans, dropout)
    check_input_size(input_size, 10)
    features = nn.Sequential(
        nn.Conv2d(in_chans, 32, 3),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )
    side = _window_out(_window_out(_window_out(input_size, 3), 2, 2), 3) // 2
    return CustomCnn(
        features,
        _classifier(64 * side * side, (128, 64), num_classes, dropout),
        num_classes,
        in_chans,
        input_size,
    )


@register_model
def cnn_moderate(
    num_classes: int = 7, in_chans: int = 1, dropout: float = 0.2, input_size: int = 48
) -> CustomCnn:
    """Paper 001, Model 2 ("moderate"): 5 conv, 1 max-pool, 2 average-pool, 3 dense, 2 dropouts.

    Conv 5x5 64 -> max-pool 5x5/2 -> conv 64, conv 64 -> avg-pool 3x3/2 -> conv 128, conv 128 -> avg-pool
    3x3/2 -> flatten (1x1x128 for 48x48) -> dense 1024 -> dropout -> dense 1024 -> dropout -> dense N; all
    convs 'valid' with ReLU. Widths and the 0.2 dropout from serengil/tensorflow-101, whose layer counts are
    exactly the paper's. 1,485,831 parameters for 7 classes.

    kwargs: ``dropout`` (float, 0.2; the two dropouts after the hidden dense layers), ``input_size``
    (int, 48, >= 40).
    """
    check_model_args(num_classes, in_chans, dropout)
    check_input_size(input_size, 40)
    features = nn.Sequential(
        nn.Conv2d(in_chans, 64, 5),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(5, stride=2),
        nn.Conv2d(64, 64, 3),
        nn.ReLU(inplace=True),
        nn.Conv2d(64, 64, 3),
        nn.ReLU(inplace=True),
        nn.AvgPool2d(3, stride=2),
        nn.Conv2d(64, 128, 3),
        nn.ReLU(inplace=True),
        nn.Conv2d(128, 128, 3),
        nn.ReLU(inplace=True),
        nn.AvgPool2d(3, stride=2),
    )
    side = _window_out(input_size, 5)
    side = _window_out(side, 5, 2) - 4
    side = _window_out(side, 3, 2) - 4
    side = _window_out(side, 3, 2)
    return CustomCnn(
        features,
        _classifier(128 * side * side, (1024, 1024), num_classes, dropout),
        num_classes,
        in_chans,
        input_size,
    )


@register_model
def cnn_complex(
    num_classes: int = 7, in_chans: int = 1, dropout: float | None = None, input_size: int = 48
) -> CustomCnn:
    """Paper 001, Model 3 ("complex"): 6 conv, 4 max-pool, 4 dense, 7 dropouts, 7 batch norms.

    The paper's "7 Dropouts after each Convolution layer and dense layer, 7 Batchnormalization after each
    Convolution layer" cannot put one of each after all 6 convs *and* all dense layers; the reading that
    meets both counts puts BN + dropout after each of the 6 convs and after the first dense layer.
    Convs 3x3 'same' [64, 64] pool [128, 128] pool [256] pool [256] pool (48 -> 3), each conv -> BN ->
    ReLU (-> pool) -> dropout; flatten 2304 -> dense 512 (BN, ReLU, dropout) -> dense 256 -> dense 128 ->
    dense N.
    Widths are ours. 2,492,359 parameters for 7 classes.

    kwargs: ``dropout`` (``None``: 0.25 after convs and 0.5 after the dense layer; a number: that rate for
    all 7), ``input_size`` (int, 48, >= 16).
    """
    check_model_args(num_classes, in_chans, 0.0 if dropout is None else dropout)
    check_input_size(input_size, 16)
    conv_p, fc_p = (0.25, 0.5) if dropout is None else (dropout, dropout)
    layers: list[nn.Module] = []
    prev = in_chans
    for chs, pool in ((64, False), (64, True), (128, False), (128, True), (256, True), (256, True)):
        layers += [nn.Conv2d(prev, chs, 3, padding=1), nn.BatchNorm2d(chs), nn.ReLU(inplace=True)]
        if pool:
            layers.append(nn.MaxPool2d(2))
        layers.append(dropout_layer(conv_p))
        prev = chs
    side = input_size // 16
    classifier = nn.Sequential(
        nn.Linear(256 * side * side, 512),
        nn.BatchNorm1d(512),
        nn.ReLU(inplace=True),
        dropout_layer(fc_p),
        nn.Linear(512, 256),
        nn.ReLU(inplace=True),
        nn.Linear(256, 128),
        nn.ReLU(inplace=True),
        nn.Linear(128, num_classes),
    )
    return CustomCnn(nn.Sequential(*layers), classifier, num_classes, in_chans, input_size)
