"""Distillation targets computed once: a teacher's logits for every training image, as stored and mirrored, kept beside
the teacher's checkpoint and shared by every fine-tune that distils from it.

A fine-tune used to run the teacher on every step (a forward pass per image and epoch, for every variant of the same
base); the teacher's outputs do not change, so they are computed once per training image and flip, in eval mode and
the fine-tune's precision (bf16 halves their cost where the training runs in bf16), and looked up by the batch's rows.
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
from bench.training.setups import TrainingSetup

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


def teacher_logits(
    teacher: nn.Module, data: FaceAttributeData, rows: np.ndarray, batch_size: int, setup: TrainingSetup | None = None
) -> np.ndarray:
    """Return ``(2, len(rows), A)`` float32 logits of ``teacher`` (eval mode, CPU) on ``rows``: as stored, then mirrored;
    in ``setup``'s precision (the fine-tune's: its student runs in bf16 where the training does), else fp32.

    Raises:
        KeyError: ``setup`` names an fp32 layer that ``teacher`` does not have.
    """
    setup = setup or TrainingSetup(channels_last=True, bf16=False)
    # converted before inference mode, where the conversion would make parameters training cannot use
    teacher = teacher.cpu().eval().to(memory_format=torch.channels_last if setup.channels_last else torch.contiguous_format)
    out = np.empty((2, len(rows), data.labels.shape[1]), np.float32)
    handles = setup.apply(teacher)
    try:
        with torch.inference_mode(), setup.autocast(torch.device("cpu")):
            for start in range(0, len(rows), batch_size):
                chunk = rows[start : start + batch_size]
                images = np.asarray(data.images[chunk])
                for flipped in (0, 1):
                    x = to_model_input(images, teacher.data_config, hflip=bool(flipped), channels_last=setup.channels_last)
                    out[flipped, start : start + len(chunk)] = teacher(x).float().numpy()
    finally:
        for handle in handles:
            handle.remove()
    return out


def _key(teacher: nn.Module, data: FaceAttributeData, rows: np.ndarray, bf16: bool) -> str:
    state = hashlib.sha1()
    for name, tensor in sorted(teacher.state_dict().items()):
        state.update(name.encode())
        state.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    config = json.dumps({k: list(v) if isinstance(v, tuple) else v for k, v in teacher.data_config.items()}, sort_keys=True)
    text = f"{state.hexdigest()}|{data.fingerprint}|{config}|{rows.tobytes().hex()}|{'bf16' if bf16 else 'fp32'}"
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def soft_targets(
    teacher: nn.Module,
    data: FaceAttributeData,
    batch_size: int,
    cache_path: str | None = None,
    setup: TrainingSetup | None = None,
) -> SoftTargets:
    """Return the teacher's outputs on every training image of ``data`` (both flips; in ``setup``'s precision, else fp32),
    read from ``cache_path`` when it holds them for this teacher (its weights), data, input transform and precision,
    else computed and written there atomically.

    Raises:
        OSError: the cache cannot be written.
    """
    rows = np.sort(np.asarray(data.splits["train"]))
    key = _key(teacher, data, rows, bool(setup and setup.bf16))
    if cache_path and os.path.isfile(cache_path):
        with np.load(cache_path) as stored:
            if str(stored["key"]) == key:
                return SoftTargets(stored["rows"], stored["logits"])
        _logger.info("%s holds another teacher's outputs: computing them again", cache_path)
    targets = SoftTargets(rows, teacher_logits(teacher, data, rows, batch_size, setup=setup))
    if cache_path:

        def write(partial: str) -> None:
            with open(partial, "wb") as handle:
                np.savez(handle, key=np.asarray(key), rows=targets.rows, logits=targets.logits)

        write_atomically(cache_path, write)
    return targets
