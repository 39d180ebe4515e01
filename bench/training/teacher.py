"""Distillation targets computed once: a teacher's logits for every training image, as stored and mirrored, kept beside
the teacher's checkpoint and shared by every fine-tune that distils from it.

A fine-tune used to run the teacher on every step (a forward pass per image and epoch, for every variant of the same
base); the teacher's outputs do not change, so they are computed once per training image and flip, in fp32 and eval
mode, and looked up by the batch's rows.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from bench.data.loading import FaceAttributeData, to_model_input
from bench.store.files import write_atomically

_logger = logging.getLogger(__name__)


@dataclass
class SoftTargets:
    """A teacher's logits for dataset rows: ``logits[0, i]`` for row ``rows[i]`` as stored, ``logits[1, i]`` mirrored."""

    rows: np.ndarray
    logits: np.ndarray

    def __post_init__(self):
        self._position = {int(row): i for i, row in enumerate(self.rows)}

    def probabilities(self, rows: np.ndarray, flipped: bool, temperature: float, device) -> torch.Tensor:
        """Return sigmoid(teacher logits / ``temperature``) for ``rows`` (dataset row indices), mirrored when ``flipped``.

        Raises:
            KeyError: a row the teacher's outputs were not computed for.
        """
        positions = [self._position[int(row)] for row in rows]
        return torch.sigmoid(torch.from_numpy(self.logits[int(flipped), positions]).to(device) / temperature)


def teacher_logits(teacher: nn.Module, data: FaceAttributeData, rows: np.ndarray, batch_size: int) -> np.ndarray:
    """Return ``(2, len(rows), A)`` float32 logits of ``teacher`` (fp32, eval mode, CPU) on ``rows``: as stored, then mirrored."""
    teacher = teacher.cpu().eval()
    out = np.empty((2, len(rows), data.labels.shape[1]), np.float32)
    with torch.inference_mode():
        for start in range(0, len(rows), batch_size):
            chunk = rows[start : start + batch_size]
            images = np.asarray(data.images[chunk])
            for flipped in (0, 1):
                x = to_model_input(images, teacher.data_config, hflip=bool(flipped))
                out[flipped, start : start + len(chunk)] = teacher(x).numpy()
    return out


def _key(teacher: nn.Module, data: FaceAttributeData, rows: np.ndarray) -> str:
    state = hashlib.sha1()
    for name, tensor in sorted(teacher.state_dict().items()):
        state.update(name.encode())
        state.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    config = json.dumps({k: list(v) if isinstance(v, tuple) else v for k, v in teacher.data_config.items()}, sort_keys=True)
    return hashlib.sha1(f"{state.hexdigest()}|{data.fingerprint}|{config}|{rows.tobytes().hex()}".encode()).hexdigest()[:16]


def soft_targets(teacher: nn.Module, data: FaceAttributeData, batch_size: int, cache_path: str | None = None) -> SoftTargets:
    """Return the teacher's outputs on every training image of ``data`` (both flips), read from ``cache_path`` when it holds
    them for this teacher (its weights), data and input transform, else computed and written there atomically.

    Raises:
        OSError: the cache cannot be written.
    """
    rows = np.sort(np.asarray(data.splits["train"]))
    key = _key(teacher, data, rows)
    if cache_path and os.path.isfile(cache_path):
        with np.load(cache_path) as stored:
            if str(stored["key"]) == key:
                return SoftTargets(stored["rows"], stored["logits"])
        _logger.info("%s holds another teacher's outputs: computing them again", cache_path)
    targets = SoftTargets(rows, teacher_logits(teacher, data, rows, batch_size))
    if cache_path:

        def write(partial: str) -> None:
            with open(partial, "wb") as handle:
                np.savez(handle, key=np.asarray(key), rows=targets.rows, logits=targets.logits)

        write_atomically(cache_path, write)
    return targets
