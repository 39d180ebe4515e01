"""One registry of model constructors, in the style of timm's.

A model family file decorates each entry point with :func:`register_model`; users only call
:func:`create_model` and :func:`list_models` (re-exported by ``models``).
"""

from __future__ import annotations

import difflib
import fnmatch
import logging
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from models._checkpoint import load_checkpoint_into

_logger = logging.getLogger(__name__)


class PretrainedWeightsError(RuntimeError):
    """Pretrained weights were asked for but cannot be fetched (offline, or none exist)."""


@dataclass(frozen=True)
class ModelEntry:
    """A registered constructor, the one-line description ``list_models`` shows, whether
    ``pretrained=True`` can fetch weights for it, and whether its layers depend on the input size
    (then ``input_size`` is passed to ``fn``; fully convolutional nets only record it)."""

    name: str
    fn: Callable[..., nn.Module]
    description: str
    family: str
    has_pretrained: bool = True
    builds_for_input_size: bool = False


_MODELS: dict[str, ModelEntry] = {}


def register_model(family: str, description: str, has_pretrained: bool = True, builds_for_input_size: bool = False) -> Callable:
    """Return a decorator that registers ``fn`` under its function name.

    With ``has_pretrained=False`` :func:`create_model` refuses ``pretrained=True`` for this entry
    (no public weights exist) and points to ``checkpoint_path``; ``fn`` is then never called with
    ``pretrained=True``. With ``builds_for_input_size=True`` ``fn`` receives ``input_size`` (e.g.
    dense layers sized by the feature map).

    Raises:
        ValueError: at import time, if the name is already registered.
    """

    def decorator(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if fn.__name__ in _MODELS:
            raise ValueError(f"model {fn.__name__!r} is registered twice")
        _MODELS[fn.__name__] = ModelEntry(fn.__name__, fn, description, family, has_pretrained, builds_for_input_size)
        return fn

    return decorator


def list_models(pattern: str = "*", with_descriptions: bool = False):
    """Return the sorted registered model names matching a shell-style ``pattern``.

    With ``with_descriptions=True`` returns ``(name, family, description)`` tuples instead.
    """
    names = sorted(n for n in _MODELS if fnmatch.fnmatch(n, pattern))
    if with_descriptions:
        return [(n, _MODELS[n].family, _MODELS[n].description) for n in names]
    return names


def is_model(name: str) -> bool:
    """Return True if ``name`` is a registered model."""
    return name in _MODELS


def create_model(
    name: str,
    num_classes: int = 40,
    pretrained: bool = False,
    checkpoint_path: str | None = None,
    **kwargs,
) -> nn.Module:
    """Build a registered model, optionally with pretrained or local weights.

    ``input_size=(C, H, W)`` overrides the size in the model's input contract.
    Every returned model has a ``data_config`` dict attribute (``input_size`` as (C, H, W),
    ``mean``, ``std``, ``interpolation``) and an ``arch`` dict (``name`` plus the keyword
    arguments that rebuild it), which checkpoints store so a checkpoint alone rebuilds the model.

    Returns:
        The model, in train mode.
    Raises:
        KeyError: ``name`` is not registered (the message lists close names).
        ValueError: ``input_size`` is smaller than the model accepts (the message says what it needs), or a
            keyword argument the model does not take (named).
        models.PretrainedWeightsError: ``pretrained=True`` and the weights cannot be fetched, or the
            model has none to fetch.
        FileNotFoundError / ValueError: ``checkpoint_path`` is missing or does not fit the model.
    """
    if name not in _MODELS:
        close = difflib.get_close_matches(name, list(_MODELS), n=5, cutoff=0.5)
        hint = f"; similar: {', '.join(close)}" if close else ""
        raise KeyError(f"unknown model {name!r}{hint}. `python run_bench.py models` lists them all")
    entry = _MODELS[name]
    if pretrained and not entry.has_pretrained:
        raise PretrainedWeightsError(
            f"{name} has no downloadable pretrained weights; pass checkpoint_path=<file> "
            "(a checkpoint written by run_bench.py or, for slimnet, by the Slim-CNN reference implementation)"
        )
    input_size = kwargs.pop("input_size", None)
    if input_size is not None:
        input_size = tuple(int(v) for v in input_size)
        if len(input_size) != 3 or min(input_size) < 1:
            raise ValueError(f"{name}: input_size must be (channels, height, width) of positive ints, got {input_size}")
    extra = {"input_size": input_size} if input_size is not None and entry.builds_for_input_size else {}
    try:
        model = entry.fn(num_classes=num_classes, pretrained=pretrained, **kwargs, **extra)
    except TypeError as exc:
        if "keyword argument" not in str(exc):
            raise
        raise ValueError(
            f"{name}: kwargs {sorted(kwargs)}: {exc}; the model's constructor names the arguments it takes"
        ) from None
    model.arch = {"name": name, "num_classes": num_classes, **kwargs}
    if input_size is not None:
        # Fully convolutional nets with global pooling take any size; the contract says which one we feed.
        model.data_config = {**model.data_config, "input_size": input_size}
        model.arch["input_size"] = list(input_size)
        check_input_size(model, name)
    if checkpoint_path is not None:
        load_checkpoint_into(model, checkpoint_path)
        _logger.info("loaded weights for %s from %s", name, checkpoint_path)
    return model


def _runs_at(model: nn.Module, size: tuple[int, int, int]) -> bool:
    try:
        model(torch.zeros(1, *size))
    except RuntimeError:
        return False
    return True


def check_input_size(model: nn.Module, name: str = "model") -> None:
    """Check that ``model`` runs on its ``data_config['input_size']`` (one forward pass of zeros).

    Raises:
        ValueError: it does not (e.g. a pooling layer's output would be empty); the message gives the
            smallest square input the model accepts.
    """
    size = tuple(model.data_config["input_size"])
    was_training = model.training
    model.eval()  # batch norm in training mode refuses a batch of one 1x1 map
    try:
        with torch.no_grad():
            if _runs_at(model, size):
                return
            low, high = 1, 1024
            if not _runs_at(model, (size[0], high, high)):
                raise ValueError(f"{name} does not run on inputs of {'x'.join(map(str, size))} (nor {high}x{high})")
            while low < high:  # the smallest side that runs: pooling arithmetic is monotone in the size
                mid = (low + high) // 2
                if _runs_at(model, (size[0], mid, mid)):
                    high = mid
                else:
                    low = mid + 1
    finally:
        model.train(was_training)
    raise ValueError(
        f"{name} needs inputs of at least {low}x{low} px (height x width), got input_size "
        f"{'x'.join(map(str, size))}: its strided layers would reduce a smaller image to nothing"
    )


def classifier_of(model: nn.Module) -> nn.Module | None:
    """Return the module holding a model's classifier: timm's ``get_classifier()``, else ``fc``,
    else ``classifier``; None when the model has none of them."""
    if hasattr(model, "get_classifier"):
        return model.get_classifier()
    for attribute in ("fc", "classifier"):
        if isinstance(getattr(model, attribute, None), nn.Module):
            return getattr(model, attribute)
    return None
