"""PA-100K from its official ``annotation.mat``."""

from __future__ import annotations

import os

import numpy as np

from bench.data.source import SPLIT_NAMES, AttributeSource, DatasetFormatError


def _mat_strings(value, path: str, key: str) -> list[str]:
    try:
        return [str(np.asarray(item).ravel()[0]).strip() for item in np.asarray(value, dtype=object).ravel()]
    except (IndexError, TypeError) as exc:
        raise DatasetFormatError(f"{path}: '{key}' is not a list of strings ({exc})") from None


def pa100k_source(path: str, image_root: str | None = None, name: str | None = None) -> AttributeSource:
    """Return PA-100K from its official ``annotation.mat`` (``attributes``, ``{train,val,test}_images_name``,
    ``{train,val,test}_label``); images are looked up in ``image_root`` (default: ``data/`` or
    ``release_data/release_data/`` beside the file, else its folder).

    Raises:
        FileNotFoundError: no file at ``path``.
        DatasetFormatError: a key is missing, labels are not 0/1, or shapes disagree (named).
    """
    from scipy.io import loadmat

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"PA-100K annotation file {path!r} does not exist")
    try:
        mat = loadmat(path)
    except (ValueError, TypeError, OSError) as exc:
        raise DatasetFormatError(f"{path}: not a MATLAB .mat file readable by scipy.io.loadmat ({exc})") from None
    needed = ["attributes"] + [f"{s}_{k}" for s in ("train", "val", "test") for k in ("images_name", "label")]
    missing = [k for k in needed if k not in mat]
    if missing:
        raise DatasetFormatError(f"{path}: missing keys {missing}; a PA-100K annotation.mat has {', '.join(needed)}")
    attr_names = tuple(_mat_strings(mat["attributes"], path, "attributes"))
    if image_root is None:
        folder = os.path.dirname(os.path.abspath(path))
        image_root = next(
            (
                os.path.join(folder, *p)
                for p in (("data",), ("release_data", "release_data"))
                if os.path.isdir(os.path.join(folder, *p))
            ),
            folder,
        )
    images, labels, splits, seen = [], [], [], set()
    for split_id, split in SPLIT_NAMES.items():
        names = _mat_strings(mat[f"{split}_images_name"], path, f"{split}_images_name")
        label = np.asarray(mat[f"{split}_label"])
        if label.shape != (len(names), len(attr_names)):
            raise DatasetFormatError(
                f"{path}: '{split}_label' has shape {label.shape}, expected ({len(names)}, {len(attr_names)})"
            )
        bad = ~np.isin(label, (0, 1))
        if bad.any():
            row, column = map(int, np.argwhere(bad)[0])
            raise DatasetFormatError(
                f"{path}: '{split}_label' row {row + 1} ({names[row]}), attribute {attr_names[column]!r}: "
                f"expected 0/1, found {label[row, column]!r}"
            )
        for image in names:
            if image in seen:
                raise DatasetFormatError(f"{path}: image {image!r} is listed twice")
            seen.add(image)
        images += [os.path.join(image_root, n) for n in names]
        labels.append(label.astype(np.uint8))
        splits += [split_id] * len(names)
    return AttributeSource(
        name or "pa100k", tuple(images), np.concatenate(labels), attr_names, np.asarray(splits, dtype=np.int64), (path,)
    )
