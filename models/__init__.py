"""FER model zoo: a timm-style registry plus the architectures of the project's papers.

>>> from models import create_model, list_models
>>> model = create_model("mini_xception", num_classes=7, in_chans=1)

All models return logits of shape ``(N, num_classes)``.
"""

from . import mini_xception, vgg_fer  # noqa: F401  (import registers the models)
from .registry import create_model, list_models, register_model

__all__ = ["create_model", "list_models", "register_model"]
