"""Any multi-label attribute dataset as one :class:`AttributeSource`: CelebA (``bench.celeba``), a CSV/TSV
table (PETA, LFWA, your own), or PA-100K's official ``annotation.mat``.

A source lists image paths, 0/1 labels, attribute names and each image's split; ``bench.data`` decodes
it into the uint8 cache every study trains from. :func:`find_source` picks the reader for a
``--data-dir``: a folder in a CelebA layout, a folder holding ``annotation.mat`` or exactly one
``.csv``/``.tsv``, or such a file itself.

The generic table: one row per image; an image column (``image_column``, default the first of
``image``, ``image_id``, ``image_path``, ``path``, ``file``, ``filename``, else the first column), one
column per attribute with 0/1 or -1/1 values, and a split column (``split_column``, default ``split`` or
``partition``) holding train/val/test or 0/1/2, or instead ``split_files`` (``{train: FILE, val: FILE,
test: FILE}``, one image path per line). Image paths are relative to ``image_root`` (default: the
table's folder).
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass

import numpy as np

from bench.celeba import SPLIT_NAMES, find_celeba_files, read_attributes, read_partition, split_indices

IMAGE_COLUMNS = ("image", "image_id", "image_path", "path", "file", "filename", "img")
SPLIT_COLUMNS = ("split", "partition")
SPLIT_VALUES = {"0": 0, "1": 1, "2": 2, "train": 0, "val": 1, "valid": 1, "validation": 1, "test": 2}
LABEL_VALUES = {"1": 1, "0": 0, "-1": 0, "1.0": 1, "0.0": 0, "-1.0": 0}
FORMATS = ("auto", "celeba", "csv", "pa100k")
# Options of a study's data section that only the csv reader takes.
CSV_OPTIONS = ("annotations", "image_column", "split_column", "attributes", "split_files", "image_root", "delimiter")


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


def celeba_source(root: str, name: str = "celeba") -> AttributeSource:
    """Return the CelebA copy under ``root`` (any layout ``bench.celeba`` knows).

    Raises:
        FileNotFoundError: no CelebA layout under ``root``.
        bench.celeba.CelebAFormatError: malformed annotation files (file and line named).
    """
    files = find_celeba_files(root)
    table = read_attributes(files.attr_path)
    splits = split_indices(table, read_partition(files.partition_path), files.partition_path)
    split_of = np.empty(len(table.image_ids), dtype=np.int64)
    for split_id, split in SPLIT_NAMES.items():
        split_of[splits[split]] = split_id
    return AttributeSource(name, tuple(os.path.join(files.image_dir, i) for i in table.image_ids), table.labels,
                           table.attr_names, split_of, (files.attr_path, files.partition_path))


def _sniff_delimiter(path: str, first_line: str) -> str:
    if path.lower().endswith(".tsv") or "\t" in first_line:
        return "\t"
    return ","


def _pick(header: list[str], wanted, candidates, path: str, what: str) -> int | None:
    if wanted is not None:
        if wanted not in header:
            raise DatasetFormatError(f"{path}, line 1: no {what} column {wanted!r}; columns: {', '.join(header)}")
        return header.index(wanted)
    lowered = [h.lower() for h in header]
    for candidate in candidates:
        if candidate in lowered:
            return lowered.index(candidate)
    return None


def _read_split_files(split_files: dict, base: str) -> dict[str, int]:
    split_of = {}
    for split, file in split_files.items():
        if split not in SPLIT_VALUES:
            raise DatasetFormatError(f"split_files: unknown split {split!r}; expected train, val and test")
        path = os.path.join(base, file)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"split file {path!r} ({split}) does not exist")
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                if line.strip():
                    split_of[line.strip()] = SPLIT_VALUES[split]
    return split_of


def csv_source(path: str, image_column: str | None = None, split_column: str | None = None, attributes=None,
               split_files: dict | None = None, image_root: str | None = None, delimiter: str | None = None,
               name: str | None = None) -> AttributeSource:
    """Return the dataset a CSV/TSV attribute table describes (see the module docstring for its columns).

    Raises:
        FileNotFoundError: the table, a split file or a listed image does not exist (named).
        DatasetFormatError: no split information, an unknown split value, a label that is not 0/1/-1, a row
            of the wrong width, a duplicate image, an unknown attribute column (file, line and value named).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"attribute table {path!r} does not exist")
    with open(path, encoding="utf-8-sig", newline="") as handle:
        first = handle.readline()
        handle.seek(0)
        rows = list(csv.reader(handle, delimiter=delimiter or _sniff_delimiter(path, first)))
    if not rows or len(rows[0]) < 2:
        raise DatasetFormatError(f"{path}, line 1: expected a header with an image column and attribute columns, found {first[:80]!r}")
    header = [h.strip() for h in rows[0]]
    image_index = _pick(header, image_column, IMAGE_COLUMNS, path, "image")
    image_index = 0 if image_index is None else image_index
    split_index = _pick(header, split_column, SPLIT_COLUMNS, path, "split")
    if split_index is None and not split_files:
        raise DatasetFormatError(f"{path}: no split column ({' or '.join(SPLIT_COLUMNS)}) and no split_files; "
                                 "add a column of train/val/test (or 0/1/2) or name one file per split")
    others = [j for j in range(len(header)) if j not in (image_index, split_index)]
    if attributes is not None:
        missing = [a for a in attributes if a not in header]
        if missing:
            raise DatasetFormatError(f"{path}, line 1: no attribute columns {missing}; columns: {', '.join(header)}")
        others = [header.index(a) for a in attributes]
    root = image_root if image_root is not None else os.path.dirname(os.path.abspath(path))
    listed = _read_split_files(split_files, os.path.dirname(os.path.abspath(path))) if split_files else None
    images, labels, splits, seen = [], [], [], {}
    for line_no, row in enumerate(rows[1:], start=2):
        if not row or not any(field.strip() for field in row):
            continue
        if len(row) != len(header):
            raise DatasetFormatError(f"{path}, line {line_no}: expected {len(header)} fields, found {len(row)}")
        image = row[image_index].strip()
        resolved = os.path.normpath(os.path.join(root, image))  # ./imgs/x.jpg and imgs/x.jpg are one image
        if resolved in seen:
            first_line, first_name = seen[resolved]
            raise DatasetFormatError(f"{path}, line {line_no}: image {image!r} is listed again (first on line {first_line} "
                                     f"as {first_name!r})")
        seen[resolved] = (line_no, image)
        values = []
        for j in others:
            value = LABEL_VALUES.get(row[j].strip())
            if value is None:
                raise DatasetFormatError(f"{path}, line {line_no}, column {header[j]!r}: expected 0/1 or -1/1, found {row[j]!r}")
            values.append(value)
        if listed is not None:
            if image not in listed:
                raise DatasetFormatError(f"{path}, line {line_no}: image {image!r} is in no split file")
            split = listed[image]
        else:
            split = SPLIT_VALUES.get(row[split_index].strip().lower())
            if split is None:
                raise DatasetFormatError(f"{path}, line {line_no}, column {header[split_index]!r}: expected train/val/test "
                                         f"or 0/1/2, found {row[split_index]!r}")
        images.append(os.path.join(root, image))
        labels.append(values)
        splits.append(split)
    if not images:
        raise DatasetFormatError(f"{path}: no image rows after the header")
    files = (path, *(os.path.join(os.path.dirname(os.path.abspath(path)), f) for f in (split_files or {}).values()))
    return AttributeSource(name or os.path.splitext(os.path.basename(path))[0], tuple(images),
                           np.asarray(labels, dtype=np.uint8), tuple(header[j] for j in others),
                           np.asarray(splits, dtype=np.int64), files)


def _mat_strings(value, path: str, key: str) -> list[str]:
    try:
        return [str(np.asarray(item).ravel()[0]).strip() for item in np.asarray(value, dtype=object).ravel()]
    except (IndexError, TypeError) as exc:
        raise DatasetFormatError(f"{path}: '{key}' is not a list of strings ({exc})") from None


def pa100k_source(path: str, image_root: str | None = None, name: str = "pa100k") -> AttributeSource:
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
        image_root = next((os.path.join(folder, *p) for p in (("data",), ("release_data", "release_data"))
                           if os.path.isdir(os.path.join(folder, *p))), folder)
    images, labels, splits, seen = [], [], [], set()
    for split_id, split in SPLIT_NAMES.items():
        names = _mat_strings(mat[f"{split}_images_name"], path, f"{split}_images_name")
        label = np.asarray(mat[f"{split}_label"])
        if label.shape != (len(names), len(attr_names)):
            raise DatasetFormatError(f"{path}: '{split}_label' has shape {label.shape}, expected ({len(names)}, {len(attr_names)})")
        bad = ~np.isin(label, (0, 1))
        if bad.any():
            row, column = map(int, np.argwhere(bad)[0])
            raise DatasetFormatError(f"{path}: '{split}_label' row {row + 1} ({names[row]}), attribute {attr_names[column]!r}: "
                                     f"expected 0/1, found {label[row, column]!r}")
        for image in names:
            if image in seen:
                raise DatasetFormatError(f"{path}: image {image!r} is listed twice")
            seen.add(image)
        images += [os.path.join(image_root, n) for n in names]
        labels.append(label.astype(np.uint8))
        splits += [split_id] * len(names)
    return AttributeSource(name, tuple(images), np.concatenate(labels), attr_names, np.asarray(splits, dtype=np.int64), (path,))


def find_source(data_dir: str, data_format: str = "auto", options: dict | None = None) -> AttributeSource:
    """Return the dataset at ``data_dir`` read by the reader ``data_format`` names (``auto``: detected).

    ``auto`` tries, in order: a CelebA layout; ``annotation.mat`` (PA-100K); exactly one ``.csv``/``.tsv``
    in the folder (or ``options['annotations']``); ``data_dir`` itself as a ``.csv``/``.tsv``/``.mat`` file.
    ``options`` are the study's data settings the csv reader takes (:data:`CSV_OPTIONS`) and ``name``.

    Raises:
        FileNotFoundError: nothing readable at ``data_dir`` (what was looked for is listed).
        ValueError: an unknown ``data_format``; DatasetFormatError / CelebAFormatError from the reader.
    """
    options = dict(options or {})
    name = options.pop("name", None)
    if data_format not in FORMATS:
        raise ValueError(f"data.format: unknown format {data_format!r}; known: {', '.join(FORMATS)}")
    if not os.path.exists(data_dir):
        raise FileNotFoundError(f"data_dir {data_dir!r} does not exist")
    csv_options = {k: v for k, v in options.items() if k in CSV_OPTIONS and k != "annotations"}
    if os.path.isfile(data_dir):
        if data_format == "pa100k" or (data_format == "auto" and data_dir.lower().endswith(".mat")):
            return pa100k_source(data_dir, options.get("image_root"), name or "pa100k")
        return csv_source(data_dir, **csv_options, name=name)
    if data_format in ("auto", "celeba"):
        try:
            return celeba_source(data_dir, name or "celeba")
        except FileNotFoundError:
            if data_format == "celeba":
                raise
    if data_format in ("auto", "pa100k") and os.path.isfile(os.path.join(data_dir, "annotation.mat")):
        return pa100k_source(os.path.join(data_dir, "annotation.mat"), options.get("image_root"), name or "pa100k")
    if data_format in ("auto", "csv"):
        if options.get("annotations"):
            return csv_source(os.path.join(data_dir, options["annotations"]), **csv_options, name=name)
        tables = sorted(n for n in os.listdir(data_dir) if n.lower().endswith((".csv", ".tsv")))
        if len(tables) == 1:
            return csv_source(os.path.join(data_dir, tables[0]), **csv_options, name=name)
        if len(tables) > 1:
            raise FileNotFoundError(f"{data_dir!r} holds several tables ({', '.join(tables)}): name one with data.annotations")
    raise FileNotFoundError(f"no dataset under {data_dir!r}: expected a CelebA layout (list_attr_celeba.txt, "
                            "list_eval_partition.txt, img_align_celeba/), a PA-100K annotation.mat, or one .csv/.tsv attribute table")
