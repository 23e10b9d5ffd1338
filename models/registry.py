"""timm-style model registry.

A model is a factory function ``fn(num_classes: int = 7, in_chans: int = 1, **kwargs) -> nn.Module``
decorated with :func:`register_model`; it is registered under its ``__name__`` and built through
:func:`create_model`. All registered models return logits (no softmax), accept ``dropout`` and
``input_size``, and are built from JSON-serialisable keyword arguments only, so that an exported model can
be rebuilt from its manifest and its weights loaded with ``load_state_dict``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from torch import nn

__all__ = ["create_model", "list_models", "register_model"]

ModelFactory = Callable[..., nn.Module]
F = TypeVar("F", bound=ModelFactory)

_MODEL_REGISTRY: dict[str, ModelFactory] = {}


def _qualified_name(fn: ModelFactory) -> str:
    return f"{fn.__module__}.{fn.__qualname__}"


def register_model(fn: F) -> F:
    """Register ``fn`` under ``fn.__name__`` and return it unchanged (usable as a decorator).

    Registering a *different* function under an existing name raises ``ValueError``; re-registering
    the same function (same module and qualified name, e.g. after ``importlib.reload``) replaces it.
    """
    name = fn.__name__
    existing = _MODEL_REGISTRY.get(name)
    if existing is not None and _qualified_name(existing) != _qualified_name(fn):
        raise ValueError(f"model {name!r} is already registered by {_qualified_name(existing)}")
    _MODEL_REGISTRY[name] = fn
    return fn


def list_models() -> list[str]:
    """Names of all registered models, sorted."""
    return sorted(_MODEL_REGISTRY)


def create_model(
    name: str, num_classes: int = 7, in_chans: int = 1, input_size: int | None = None, **kwargs: Any
) -> nn.Module:
    """Build the registered model ``name``.

    Args:
        name: registered model name (see :func:`list_models`).
        num_classes: number of output logits (7 for FER2013, 8 for FER+, 1 for a one-vs-rest binary model).
        in_chans: input channels (1 for grey-level faces, 3 for RGB).
        input_size: side of the square input the model's layers are sized for; ``None`` keeps the model's
            default (48 for the FER nets; 224 for the ``*_tl`` transfer-learning nets, which resize any
            input to it). Only nets with a flattening FC head depend on it; the others accept any size.
        **kwargs: model-specific options (every model accepts ``dropout``; see the factory docstrings).

    Raises:
        ValueError: ``name`` is not registered (the message lists the available names).
    """
    try:
        factory = _MODEL_REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown model {name!r}; available models: {', '.join(list_models()) or '(none)'}"
        ) from None
    if input_size is not None:
        kwargs["input_size"] = input_size
    return factory(num_classes=num_classes, in_chans=in_chans, **kwargs)
