"""Reading weight files: our own checkpoints, the Slim-CNN reference format and bare state dicts."""

from __future__ import annotations

import os

import torch
from torch import nn

# Keys under which known checkpoint formats keep the weights, most specific first.
_STATE_DICT_KEYS = ("model_state_dict", "state_dict", "model", "state_dict_ema")


def read_checkpoint(path: str | os.PathLike) -> dict:
    """Return the dict stored at ``path``, loaded on the CPU with ``weights_only=True``.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is not a torch checkpoint holding a dict.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist")
    with open(path, "rb") as handle:
        head = handle.read(4)
    # torch.save writes a zip archive (PK..); files of torch < 1.6 are pickles (protocol byte 0x80).
    if not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):
        kind = (
            "an empty file"
            if not head
            else ("a text file" if all(32 <= b < 127 or b in (9, 10, 13) for b in head) else "another format")
        )
        raise ValueError(f"checkpoint {path!r} is not a PyTorch checkpoint (it is {kind}; torch.save writes zip archives)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several unrelated types for a bad file
        raise ValueError(f"checkpoint {path!r} could not be read by torch.load(weights_only=True): {exc}") from exc
    if not isinstance(obj, dict):
        raise ValueError(f"checkpoint {path!r} holds a {type(obj).__name__}, expected a dict")
    return obj


def extract_state_dict(checkpoint: dict, path: str = "<checkpoint>") -> dict[str, torch.Tensor]:
    """Return the model state dict inside a checkpoint dict, with any ``module.`` prefix removed.

    Raises:
        ValueError: no state dict can be found in it.
    """
    state = checkpoint
    for key in _STATE_DICT_KEYS:
        if isinstance(checkpoint.get(key), dict):
            state = checkpoint[key]
            break
    if not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(
            f"checkpoint {path!r} has no state dict: expected one of the keys {_STATE_DICT_KEYS} "
            f"or a plain name->tensor dict, found keys {sorted(checkpoint)[:8]}"
        )
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_checkpoint_into(model: nn.Module, path: str | os.PathLike) -> None:
    """Load the weights stored at ``path`` into ``model`` (strictly), in place.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: unreadable file, or keys/shapes that do not match the model (listed).
    """
    state = extract_state_dict(read_checkpoint(path), os.fspath(path))
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong_shape = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    if missing or unexpected or wrong_shape:
        raise ValueError(
            f"checkpoint {os.fspath(path)!r} does not fit {type(model).__name__}: "
            f"{len(missing)} missing keys {missing[:5]}, {len(unexpected)} unexpected keys "
            f"{unexpected[:5]}, {len(wrong_shape)} shape mismatches {wrong_shape[:5]}"
        )
    model.load_state_dict(state)
