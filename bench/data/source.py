"""A dataset before decoding: image paths, 0/1 labels, attribute names and each image's split, as every reader returns it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SPLIT_NAMES = {0: "train", 1: "val", 2: "test"}


class DatasetFormatError(ValueError):
    """An annotation file does not have the expected format (the message names file, line and what was expected)."""


@dataclass(frozen=True)
class AttributeSource:
    """A dataset before decoding: ``labels[i, j]`` (0/1) says whether ``image_paths[i]`` has ``attr_names[j]``;
    ``split_of[i]`` is 0 (train), 1 (val) or 2 (test); ``files`` are the annotation files (their bytes
    make the data's fingerprint)."""

    name: str
    image_paths: tuple[str, ...]
    labels: np.ndarray
    attr_names: tuple[str, ...]
    split_of: np.ndarray
    files: tuple[str, ...]

    def split_indices(self) -> dict[str, np.ndarray]:
        """Return ``{'train'|'val'|'test': row indices}`` in file order."""
        return {name: np.flatnonzero(self.split_of == split_id) for split_id, name in SPLIT_NAMES.items()}
