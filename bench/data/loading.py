"""Attribute data for training: any dataset a layout of ``bench.data.layouts`` reads (CelebA real or synthetic, a
CSV/TSV table, PA-100K) decoded once into a uint8 cache, and the batches models are fed from it.

Images are decoded a single time into a memory-mapped ``(N, H, W, 3)`` uint8 ``.npy`` file (H x W:
the dataset's image size, 218 x 178 for aligned CelebA), so full CelebA (202,599 images, 23.5 GB as
uint8) need not fit in RAM and JPEG decoding does not dominate CPU training. Batches are sliced from that array and
turned into model input (resize to the model's input size, mean/std normalisation) on the fly.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from bench.data.celeba import celeba_source
from bench.data.layouts import find_source
from bench.data.source import SPLIT_NAMES, AttributeSource
from bench.data.synthetic import HEIGHT, WIDTH, default_cache_dir, ensure_synthetic_celeba
from bench.progress import null_progress
from bench.settings import DataSettings
from bench.store.files import file_lock, partial_name, remove_stale_partials

_logger = logging.getLogger(__name__)


class ImageDecodeError(ValueError):
    """An image listed in the annotations is missing or cannot be decoded (message names the file)."""


@dataclass
class FaceAttributeData:
    """Images, 0/1 labels, attribute names and split indices of one face-attribute dataset.

    ``images`` is (N, H, W, 3) uint8 (usually a read-only memmap), ``labels`` (N, A) float32,
    and ``splits`` maps 'train'/'val'/'test' to row indices into both. ``fingerprint`` identifies the
    annotation files' contents and the kept split sizes (it is part of every study cell's hash, so
    changed files never reuse old results); ``source`` names the annotation files.
    """

    images: np.ndarray
    labels: np.ndarray
    attr_names: tuple[str, ...]
    splits: dict[str, np.ndarray]
    name: str
    fingerprint: str = ""
    source: str = ""

    def split_sizes(self) -> dict[str, int]:
        """Return ``{'n_train': .., 'n_val': .., 'n_test': ..}``."""
        return {f"n_{split}": int(len(indices)) for split, indices in self.splits.items()}

    def check_splits(self) -> None:
        """Check that train, val and test each hold at least one image.

        Raises:
            EmptySplitError: a split is empty (named, with the files that define it).
        """
        empty = [split for split, indices in self.splits.items() if len(indices) == 0]
        if empty:
            sizes = ", ".join(f"{s} {len(i)}" for s, i in self.splits.items())
            raise EmptySplitError(
                f"dataset {self.name!r} ({self.source}): the {' and '.join(empty)} split"
                f"{'s are' if len(empty) > 1 else ' is'} empty ({sizes} images); a study needs images in "
                "train, val and test: check the partition file and the limit_* settings"
            )

    def attribute_warnings(self) -> list[str]:
        """Return one line per attribute the training split cannot teach: no positive image, or no negative one (a model
        can only learn to answer it always the same; its F1 or its balanced accuracy says so)."""
        labels = self.labels[self.splits["train"]]
        lines = []
        for j, name in enumerate(self.attr_names):
            positives = int(labels[:, j].sum())
            if positives in (0, len(labels)):
                kind = "positive" if positives == 0 else "negative"
                lines.append(
                    f"attribute {name!r} has no {kind} image among the {len(labels)} training images of {self.name!r}: "
                    f"no model can learn it (raise limit_train, or check the labels)"
                )
        return lines


class EmptySplitError(ValueError):
    """A split the study needs has no images (the message names it and the files behind it)."""


def file_fingerprint(paths, extra=None) -> str:
    """Return a 16-hex-digit SHA-1 over the bytes of ``paths`` and the JSON of ``extra``.

    Raises:
        FileNotFoundError: a path does not exist.
    """
    digest = hashlib.sha1()
    for path in paths:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        digest.update(b"\0")
    digest.update(json.dumps(extra, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]


@contextlib.contextmanager
def _open_image(path: str, listed_in: str):
    if not os.path.isfile(path):
        raise ImageDecodeError(f"image {path!r} is listed in {listed_in!r} but does not exist")
    try:
        with Image.open(path) as image:
            yield image
    except (OSError, SyntaxError) as exc:
        raise ImageDecodeError(f"image {path!r} (listed in {listed_in!r}) cannot be decoded: {exc}") from None


def _decode(path: str, listed_in: str, size: tuple[int, int]) -> np.ndarray:
    with _open_image(path, listed_in) as image:
        image = image.convert("RGB")
        if image.size != (size[1], size[0]):
            # One array needs one shape: images of another size are resized to the dataset's.
            image = image.resize((size[1], size[0]), Image.BILINEAR)
        return np.asarray(image, dtype=np.uint8)


def first_image_size(path: str, listed_in: str = "<annotations>") -> tuple[int, int]:
    """Return ``(height, width)`` of the image at ``path``.

    Raises:
        ImageDecodeError: it is missing or unreadable.
    """
    with _open_image(path, listed_in) as image:
        return image.size[1], image.size[0]


def image_files_signature(paths: list[str], listed_in: str = "<annotations>") -> str:
    """Return a SHA-1 over every image's absolute path, size and modification time (ns): what the decoded cache and the
    data fingerprint are keyed on, so a replaced image is decoded again and changes every cell's hash.

    A stat per file, not a content hash: reading every byte of CelebA's 202,599 JPEGs (1.4 GB) to hash them would cost
    each run seconds to minutes of I/O, where a stat costs microseconds per file (README, "Measured figures").

    Raises:
        ImageDecodeError: a listed image does not exist.
    """
    digest = hashlib.sha1()
    for path in paths:
        try:
            info = os.stat(path)
        except FileNotFoundError:
            raise ImageDecodeError(f"image {path!r} is listed in {listed_in!r} but does not exist") from None
        digest.update(f"{os.path.abspath(path)}\t{info.st_size}\t{info.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def build_image_cache(
    image_paths, cache_path: str, size: tuple[int, int], listed_in: str = "<annotations>", progress=None
) -> np.ndarray:
    """Decode ``image_paths`` into a uint8 ``.npy`` of shape (N, H, W, 3), ``size`` = (H, W), at ``cache_path``;
    return it memory-mapped.

    An existing cache file is reused. The file is written under a temporary name and renamed
    when complete, so an interrupted build never leaves a truncated cache; partial files of killed
    builds are removed, and concurrent builds of one cache wait for each other (a file lock).
    ``progress`` is a tqdm-style factory (see ``bench.progress``).

    Raises:
        ImageDecodeError: an image is missing or unreadable (its path and ``listed_in`` named).
    """
    if not os.path.isfile(cache_path):
        folder = os.path.dirname(os.path.abspath(cache_path))
        os.makedirs(folder, exist_ok=True)
        remove_stale_partials(folder)
        with file_lock(cache_path):
            if not os.path.isfile(cache_path):  # another process may have built it while this one waited
                _decode_all(list(image_paths), cache_path, tuple(size), listed_in, progress)
    return np.load(cache_path, mmap_mode="r")


def _decode_all(image_paths: list[str], cache_path: str, size: tuple[int, int], listed_in: str, progress) -> None:
    partial = partial_name(cache_path)
    array = np.lib.format.open_memmap(partial, mode="w+", dtype=np.uint8, shape=(len(image_paths), size[0], size[1], 3))
    bar = (progress or null_progress)(total=len(image_paths), desc="decoding images")
    try:
        for index, path in enumerate(image_paths):
            array[index] = _decode(path, listed_in, size)
            bar.update(1)
        array.flush()
        array = None  # closes the memmap before the rename
        os.replace(partial, cache_path)
    except BaseException:
        array = None
        if os.path.exists(partial):
            os.unlink(partial)
        raise
    finally:
        bar.close()
    _logger.info("cached %d decoded images in %s", len(image_paths), cache_path)


def _limit(indices: np.ndarray, limit: int | None) -> np.ndarray:
    return indices if limit is None or limit <= 0 else indices[:limit]


def load_source(
    source: AttributeSource,
    limits: dict[str, int | None] | None = None,
    cache_dir: str | None = None,
    image_size=None,
    progress=None,
) -> FaceAttributeData:
    """Decode a dataset (:class:`bench.datasets.AttributeSource`) into a :class:`FaceAttributeData`.

    ``limits`` maps 'train'/'val'/'test' to the number of leading images of that split to keep
    (None or 0 keeps all); only the kept images are decoded, at ``image_size`` = (H, W) (default:
    the first kept image's size; every image is resized to it). Models are fed their own input size.

    Raises:
        ImageDecodeError: a listed image is missing or unreadable.
        ValueError: ``image_size`` is not two positive ints.
    """
    limits = limits or {}
    kept = {split: _limit(idx, limits.get(split)) for split, idx in source.split_indices().items()}
    rows = np.concatenate([kept[s] for s in SPLIT_NAMES.values()])
    paths = [source.image_paths[i] for i in rows]
    listed_in = source.files[0]
    if image_size is not None:
        if len(image_size) != 2 or min(int(v) for v in image_size) < 1:
            raise ValueError(f"data.image_size: expected [height, width] of positive ints, got {image_size!r}")
        size = (int(image_size[0]), int(image_size[1]))
    else:
        size = first_image_size(paths[0], listed_in) if paths else (HEIGHT, WIDTH)
    images_signature = image_files_signature(paths, listed_in)
    key = hashlib.sha1(f"{size[0]}x{size[1]}\n{images_signature}".encode()).hexdigest()[:16]
    cache_path = os.path.join(cache_dir or default_cache_dir(), "decoded", f"{source.name}-{len(paths)}-{key}.npy")
    images = build_image_cache(paths, cache_path, size, listed_in, progress)
    offsets = np.cumsum([0] + [len(kept[s]) for s in SPLIT_NAMES.values()])
    new_splits = {s: np.arange(offsets[k], offsets[k + 1]) for k, s in enumerate(SPLIT_NAMES.values())}
    fingerprint = file_fingerprint(
        source.files, {"splits": {s: len(kept[s]) for s in kept}, "image_size": size, "images": images_signature}
    )
    return FaceAttributeData(
        images,
        source.labels[rows].astype(np.float32),
        source.attr_names,
        new_splits,
        source.name,
        fingerprint,
        ", ".join(source.files),
    )


def load_celeba(
    root: str, limits: dict[str, int | None] | None = None, cache_dir: str | None = None, progress=None, name: str | None = None
) -> FaceAttributeData:
    """Load a CelebA copy (any supported layout) into a :class:`FaceAttributeData` (see :func:`load_source`).

    Raises:
        FileNotFoundError: no CelebA layout under ``root``.
        bench.data.celeba.CelebAFormatError: malformed annotation files (file and line named).
        ImageDecodeError: a listed image is missing or unreadable.
    """
    return load_source(celeba_source(root, name), limits, cache_dir, None, progress)


def load_data(data: dict | DataSettings, progress=None) -> FaceAttributeData:
    """Return the dataset a study's ``data`` section names (a mapping over :class:`bench.settings.DataSettings`' defaults,
    or the settings): ``data_dir`` (CelebA, a CSV/TSV table or PA-100K, see :func:`bench.data.layouts.find_source`;
    ``format`` and the csv options choose the reader) or, without one, the built-in synthetic set; ``limit_*``,
    ``image_size`` and ``cache_dir`` as in :func:`load_source`.

    Raises:
        StudyConfigError: a bad data setting (named).
        FileNotFoundError, DatasetFormatError, CelebAFormatError, ImageDecodeError: see the readers.
    """
    settings = data if isinstance(data, DataSettings) else DataSettings.from_mapping(data)
    limits = {"train": settings.limit_train, "val": settings.limit_val, "test": settings.limit_test}
    if settings.data_dir is None:
        images, seed = settings.synthetic_images, settings.synthetic_seed
        root = ensure_synthetic_celeba(images, seed, settings.cache_dir, progress=progress)
        source = celeba_source(root, f"synthetic{images}s{seed}")
    else:
        source = find_source(os.path.expanduser(settings.data_dir), settings.format, settings.to_dict())
    return load_source(source, limits, settings.cache_dir, settings.image_size, progress)


def batch_rows(
    data: FaceAttributeData, split: str, batch_size: int, shuffle: bool = False, seed: int = 0
) -> Iterator[np.ndarray]:
    """Yield the dataset rows of each batch of ``split`` (sorted inside a batch, so memmap reads stay local).

    With ``shuffle`` the order is a permutation drawn from ``seed`` (pass the epoch into the seed for a new order each epoch).

    Raises:
        KeyError: unknown split name.
    """
    indices = data.splits[split]
    if shuffle:
        indices = np.random.default_rng(seed).permutation(indices)
    for start in range(0, len(indices), batch_size):
        yield np.sort(indices[start : start + batch_size])


def iterate_batches(
    data: FaceAttributeData, split: str, batch_size: int, shuffle: bool = False, seed: int = 0
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(uint8 images (B,H,W,3), float32 labels (B,A))`` batches of ``split`` (the rows of :func:`batch_rows`).

    Raises:
        KeyError: unknown split name.
    """
    for rows in batch_rows(data, split, batch_size, shuffle, seed):
        yield np.asarray(data.images[rows]), data.labels[rows]


def to_model_input(
    images: np.ndarray,
    data_config: dict,
    device: torch.device | str = "cpu",
    channels_last: bool = False,
    hflip: bool = False,
) -> torch.Tensor:
    """Return a normalised float tensor (B, C, H, W) for uint8 ``images`` (B, H, W, 3).

    Resizes (bilinear, antialiased) to ``data_config['input_size']`` when it differs from the
    stored size, then applies ``(x - mean) / std``. ``hflip`` mirrors the whole batch.
    """
    x = torch.from_numpy(images).to(device).permute(0, 3, 1, 2).float().div_(255.0)
    _, height, width = data_config["input_size"]
    if x.shape[-2:] != (height, width):
        x = F.interpolate(x, size=(height, width), mode="bilinear", antialias=True, align_corners=False)
    if hflip:
        x = x.flip(-1)
    mean = torch.tensor(data_config["mean"], device=x.device).view(1, -1, 1, 1)
    std = torch.tensor(data_config["std"], device=x.device).view(1, -1, 1, 1)
    # In place: the same values bit for bit as (x - mean) / std without two new batches (machine D, 64 images:
    # 14.1 -> 10.5 ms in channels_last, 16.0 -> 15.1 ms otherwise; /tmp probe)
    x = x.sub_(mean).div_(std)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x
