"""Face-attribute data for training: CelebA (real or synthetic) decoded once into a uint8 cache.

Images are decoded a single time into a memory-mapped ``(N, 218, 178, 3)`` uint8 ``.npy`` file,
so full CelebA (202,599 images, 23.5 GB as uint8) need not fit in RAM and JPEG decoding does not
dominate CPU training. Batches are sliced from that array and turned into model input
(resize to the model's input size, mean/std normalisation) on the fly.
"""
from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from bench.celeba import SPLIT_NAMES, find_celeba_files, read_attributes, read_partition, split_indices
from bench.progress import null_progress
from bench.synthetic import HEIGHT, WIDTH, default_cache_dir, ensure_synthetic_celeba

_logger = logging.getLogger(__name__)


class ImageDecodeError(ValueError):
    """An image listed in the annotations is missing or cannot be decoded (message names the file)."""


@dataclass
class FaceAttributeData:
    """Images, 0/1 labels, attribute names and split indices of one face-attribute dataset.

    ``images`` is (N, H, W, 3) uint8 (usually a read-only memmap), ``labels`` (N, A) float32,
    and ``splits`` maps 'train'/'val'/'test' to row indices into both.
    """

    images: np.ndarray
    labels: np.ndarray
    attr_names: tuple[str, ...]
    splits: dict[str, np.ndarray]
    name: str

    def split_sizes(self) -> dict[str, int]:
        """Return ``{'n_train': .., 'n_val': .., 'n_test': ..}``."""
        return {f"n_{split}": int(len(indices)) for split, indices in self.splits.items()}


def _decode(path: str, attr_path: str) -> np.ndarray:
    if not os.path.isfile(path):
        raise ImageDecodeError(f"image {path!r} is listed in {attr_path!r} but does not exist")
    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
            if image.size != (WIDTH, HEIGHT):
                # Aligned CelebA is 178x218; other crops are resized so every row has one shape.
                image = image.resize((WIDTH, HEIGHT), Image.BILINEAR)
            return np.asarray(image, dtype=np.uint8)
    except (OSError, SyntaxError) as exc:
        raise ImageDecodeError(f"image {path!r} (listed in {attr_path!r}) cannot be decoded: {exc}") from None


def build_image_cache(image_dir: str, image_ids, cache_path: str, attr_path: str = "<annotations>", progress=None) -> np.ndarray:
    """Decode ``image_ids`` from ``image_dir`` into a uint8 ``.npy`` at ``cache_path``; return it memory-mapped.

    An existing cache file is reused. The file is written under a temporary name and renamed
    when complete, so an interrupted build never leaves a truncated cache. ``progress`` is a
    tqdm-style factory (see ``bench.progress``).

    Raises:
        ImageDecodeError: an image is missing or unreadable (its path and the annotation file named).
    """
    if not os.path.isfile(cache_path):
        os.makedirs(os.path.dirname(os.path.abspath(cache_path)), exist_ok=True)
        partial = f"{cache_path}.partial-{os.getpid()}"
        array = np.lib.format.open_memmap(partial, mode="w+", dtype=np.uint8, shape=(len(image_ids), HEIGHT, WIDTH, 3))
        bar = (progress or null_progress)(total=len(image_ids), desc="decoding images")
        try:
            for index, image_id in enumerate(image_ids):
                array[index] = _decode(os.path.join(image_dir, image_id), attr_path)
                bar.update(1)
            array.flush()
            del array
            os.replace(partial, cache_path)
        except BaseException:
            del array
            os.unlink(partial)
            raise
        finally:
            bar.close()
        _logger.info("cached %d decoded images in %s", len(image_ids), cache_path)
    return np.load(cache_path, mmap_mode="r")


def _limit(indices: np.ndarray, limit: int | None) -> np.ndarray:
    return indices if limit is None or limit <= 0 else indices[:limit]


def load_celeba(
    root: str,
    limits: dict[str, int | None] | None = None,
    cache_dir: str | None = None,
    progress=None,
    name: str = "celeba",
) -> FaceAttributeData:
    """Load a CelebA copy (any supported layout) into a :class:`FaceAttributeData`.

    ``limits`` maps 'train'/'val'/'test' to the number of leading images of that split to keep
    (None or 0 keeps all); only the kept images are decoded.

    Raises:
        FileNotFoundError: no CelebA layout under ``root``.
        bench.celeba.CelebAFormatError: malformed annotation files (file and line named).
        ImageDecodeError: a listed image is missing or unreadable.
    """
    files = find_celeba_files(root)
    table = read_attributes(files.attr_path)
    splits = split_indices(table, read_partition(files.partition_path), files.partition_path)
    limits = limits or {}
    kept = {split: _limit(idx, limits.get(split)) for split, idx in splits.items()}
    rows = np.concatenate([kept[s] for s in SPLIT_NAMES.values()])
    image_ids = [table.image_ids[i] for i in rows]
    key = hashlib.sha1(("\n".join([os.path.abspath(files.image_dir), *image_ids])).encode()).hexdigest()[:16]
    cache_path = os.path.join(cache_dir or default_cache_dir(), "decoded", f"{name}-{len(image_ids)}-{key}.npy")
    images = build_image_cache(files.image_dir, image_ids, cache_path, files.attr_path, progress)
    offsets = np.cumsum([0] + [len(kept[s]) for s in SPLIT_NAMES.values()])
    new_splits = {s: np.arange(offsets[k], offsets[k + 1]) for k, s in enumerate(SPLIT_NAMES.values())}
    labels = table.labels[rows].astype(np.float32)
    return FaceAttributeData(images, labels, table.attr_names, new_splits, name)


def load_dataset(
    data_dir: str | None = None,
    synthetic_images: int = 3000,
    synthetic_seed: int = 0,
    limits: dict[str, int | None] | None = None,
    cache_dir: str | None = None,
    progress=None,
) -> FaceAttributeData:
    """Load real CelebA from ``data_dir``, or the built-in synthetic set when ``data_dir`` is None.

    Raises:
        as :func:`load_celeba`; ValueError for ``synthetic_images`` < 10.
    """
    if data_dir is None:
        root = ensure_synthetic_celeba(synthetic_images, synthetic_seed, cache_dir, progress=progress)
        return load_celeba(root, limits, cache_dir, progress, name=f"synthetic{synthetic_images}s{synthetic_seed}")
    return load_celeba(data_dir, limits, cache_dir, progress, name="celeba")


def load_data(data: dict, progress=None) -> FaceAttributeData:
    """Return the dataset a study's ``data`` section names (``data_dir`` or the synthetic set, limits, cache).

    Raises:
        as :func:`load_dataset`.
    """
    limits = {"train": data.get("limit_train"), "val": data.get("limit_val"), "test": data.get("limit_test")}
    return load_dataset(data.get("data_dir"), int(data.get("synthetic_images", 3000)), int(data.get("synthetic_seed", 0)),
                        limits, data.get("cache_dir"), progress)


def iterate_batches(
    data: FaceAttributeData, split: str, batch_size: int, shuffle: bool = False, seed: int = 0
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(uint8 images (B,H,W,3), float32 labels (B,A))`` batches of ``split``.

    With ``shuffle`` the order is a permutation drawn from ``seed`` (pass the epoch into the seed
    for a new order each epoch); indices are sorted inside a batch so memmap reads stay local.

    Raises:
        KeyError: unknown split name.
    """
    indices = data.splits[split]
    if shuffle:
        indices = np.random.default_rng(seed).permutation(indices)
    for start in range(0, len(indices), batch_size):
        batch = np.sort(indices[start:start + batch_size])
        yield np.asarray(data.images[batch]), data.labels[batch]


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
    x = (x - mean) / std
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x
