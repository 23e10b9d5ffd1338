"""FER model zoo: a timm-style registry plus the architectures of the project's papers.

>>> from models import create_model, list_models
>>> model = create_model("mini_xception", num_classes=7, in_chans=1)

All models return logits of shape ``(N, num_classes)``.
"""

from . import (  # noqa: F401  (import registers the models)
    cnn_bialek,
    cnn_custom,
    convnet4,
    fer_net,
    mini_xception,
    one_vs_rest,
    parallel_merge,
    resnet50,
    resnet_fer,
    vgg16,
    vgg_fer,
)
from .one_vs_rest import OneVsRest, OvrCalibration, fit_ovr_calibration, ovr_probabilities
from .parallel_merge import ParallelMerge
from .registry import create_model, list_models, register_model

__all__ = [
    "OneVsRest",
    "OvrCalibration",
    "ParallelMerge",
    "create_model",
    "fit_ovr_calibration",
    "list_models",
    "ovr_probabilities",
    "register_model",
]
