"""Model zoo: one registry (``create_model``, ``list_models``) over Slim-Net and the baselines."""

import os

import torch
from torch import nn

from models import baselines as _baselines  # noqa: F401
from models import course as _course  # noqa: F401
from models import pse as _pse  # noqa: F401
from models import slimnet as _slimnet  # noqa: F401  (registers entries)
from models._checkpoint import extract_state_dict, load_checkpoint_into, read_checkpoint
from models._registry import PretrainedWeightsError, classifier_of, create_model, is_model, list_models, register_model
from models._structure import describe_structure, rebuild
from models.attributes import ATTRIBUTE_GROUPS, CELEBA_ATTRIBUTES
from models.pse import PSE, pse_masks
from models.slimnet import SlimNet, slimnet_kwargs_from_reference


def count_params(model: nn.Module) -> int:
    """Return the number of parameters of ``model`` (trainable or not): the one count every table and budget uses."""
    return sum(p.numel() for p in model.parameters())


def checkpoint_header(model: nn.Module) -> dict:
    """Return what a checkpoint needs beside the weights to rebuild ``model``: ``arch``, ``structure``
    (factor chains and layer shapes, see ``models._structure``), ``data_config`` and, for a model the ``quantize``
    compression step set up, ``quantization`` (its int8 settings); plain types only.

    Raises:
        ValueError: the model was not built by :func:`create_model` (no ``arch``).
    """
    return {
        "arch": dict(model.arch) if getattr(model, "arch", None) else None,
        "structure": describe_structure(model),
        "data_config": {k: list(v) if isinstance(v, tuple) else v for k, v in getattr(model, "data_config", {}).items()},
        "quantization": dict(model.quantization) if getattr(model, "quantization", None) else None,
    }


def model_checkpoint(model: nn.Module, **extra) -> dict:
    """Return what :func:`save_model` writes: :func:`checkpoint_header`, ``model_state_dict`` and any ``extra``
    plain values (a dict ``torch.load(weights_only=True)`` reads back, no pickled code).

    Raises:
        ValueError: the model was not built by :func:`create_model`.
    """
    return {**extra, **checkpoint_header(model), "model_state_dict": model.state_dict()}


def save_model(model: nn.Module, path: str | os.PathLike, **extra) -> None:
    """Write ``model`` (plain, pruned, factorized or a pipeline of both) so :func:`load_model` rebuilds it.

    A plain ``torch.save`` of :func:`model_checkpoint`; the study runner writes the same dict through its
    one atomic writer (``bench.files.write_atomically``), so a killed run never leaves half a file.

    Raises:
        ValueError: the model was not built by :func:`create_model`.
    """
    torch.save(model_checkpoint(model, **extra), os.fspath(path))


def load_model(path):
    """Rebuild a model from a checkpoint file alone and load its weights.

    Understands files written by :func:`save_model` and ``bench.train`` (keys ``arch`` and, for
    compressed models, ``structure``) and by the Slim-CNN reference implementation (keys
    ``hyper_params`` and ``model_state_dict``).

    Returns:
        The model, in eval mode.
    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file has neither ``arch`` nor ``hyper_params``, or its weights do not fit.
    """
    checkpoint = read_checkpoint(path)
    state = extract_state_dict(checkpoint, str(path))
    if checkpoint.get("arch"):
        model = rebuild(checkpoint["arch"], checkpoint.get("structure"))
        if checkpoint.get("data_config"):
            model.data_config = {k: tuple(v) if isinstance(v, list) else v for k, v in checkpoint["data_config"].items()}
        if checkpoint.get("quantization"):
            model.quantization = dict(checkpoint["quantization"])
    elif "hyper_params" in checkpoint:
        model = create_model("slimnet", **slimnet_kwargs_from_reference(checkpoint["hyper_params"], state))
    else:
        raise ValueError(
            f"checkpoint {str(path)!r} does not say which architecture it holds: expected a key "
            f"'arch' (run_bench.py, models.save_model) or 'hyper_params' (Slim-CNN reference); found {sorted(checkpoint)[:8]}"
        )
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ValueError(f"checkpoint {str(path)!r}: its weights do not fit the model it describes: {str(exc)[:500]}") from None
    return model.eval()


__all__ = [
    "ATTRIBUTE_GROUPS",
    "CELEBA_ATTRIBUTES",
    "PSE",
    "PretrainedWeightsError",
    "SlimNet",
    "classifier_of",
    "count_params",
    "create_model",
    "checkpoint_header",
    "describe_structure",
    "extract_state_dict",
    "is_model",
    "list_models",
    "load_checkpoint_into",
    "load_model",
    "pse_masks",
    "read_checkpoint",
    "register_model",
    "model_checkpoint",
    "save_model",
    "slimnet_kwargs_from_reference",
]
