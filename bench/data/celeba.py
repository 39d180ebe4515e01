"""CelebA in its real on-disk formats: finding a copy, reading its annotation files, and the dataset it holds.

Supported layouts of a CelebA root (first match wins):

* official: ``list_attr_celeba.txt``, ``list_eval_partition.txt``, ``img_align_celeba/``, directly
  in the root or in its ``Anno/``, ``Eval/`` and ``Img/`` sub-folders;
* torchvision: the same files under ``<root>/celeba/``;
* Kaggle: ``list_attr_celeba.csv`` (column ``image_id``), ``list_eval_partition.csv`` and
  ``img_align_celeba/img_align_celeba/``.

Labels come back as 0/1 ``uint8`` arrays (the files use -1/1); attribute names keep file order.
"""

from __future__ import annotations

import csv
import difflib
import os
from dataclasses import dataclass

import numpy as np

from bench.data.source import SPLIT_NAMES, AttributeSource
from models.attributes import CELEBA_ATTRIBUTES  # re-exported: the names belong to the models that predict them


class CelebAFormatError(ValueError):
    """An annotation file does not have the expected CelebA format (message names file and line)."""


@dataclass(frozen=True)
class CelebAFiles:
    """Paths of one CelebA copy: attribute file, partition file and image folder."""

    attr_path: str
    partition_path: str
    image_dir: str


@dataclass(frozen=True)
class AttributeTable:
    """Parsed attribute annotations: ``labels[i, j]`` is 1 if image ``image_ids[i]`` has ``attr_names[j]``."""

    image_ids: tuple[str, ...]
    attr_names: tuple[str, ...]
    labels: np.ndarray  # (N, A) uint8 in {0, 1}


def _candidates(root: str) -> list[tuple[str, str, str]]:
    kaggle = (
        os.path.join(root, "list_attr_celeba.csv"),
        os.path.join(root, "list_eval_partition.csv"),
        os.path.join(root, "img_align_celeba", "img_align_celeba"),
    )
    layouts = []
    for base in (root, os.path.join(root, "celeba")):
        layouts.append(
            (
                os.path.join(base, "list_attr_celeba.txt"),
                os.path.join(base, "list_eval_partition.txt"),
                os.path.join(base, "img_align_celeba"),
            )
        )
        layouts.append(
            (
                os.path.join(base, "Anno", "list_attr_celeba.txt"),
                os.path.join(base, "Eval", "list_eval_partition.txt"),
                os.path.join(base, "Img", "img_align_celeba"),
            )
        )
    layouts.append(kaggle)
    # Kaggle archives are sometimes unpacked one level less deep.
    layouts.append(kaggle[:2] + (os.path.join(root, "img_align_celeba"),))
    return layouts


def find_celeba_files(root: str | os.PathLike) -> CelebAFiles:
    """Return the annotation files and image folder of the CelebA copy under ``root``.

    Raises:
        FileNotFoundError: ``root`` is missing, or none of the supported layouts is complete there
            (the message lists what was looked for).
    """
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise FileNotFoundError(f"CelebA root {root!r} is not a folder")
    for attr_path, partition_path, image_dir in _candidates(root):
        if os.path.isfile(attr_path) and os.path.isdir(image_dir):
            if not os.path.isfile(partition_path):
                raise FileNotFoundError(
                    f"found {attr_path!r} but not its partition file {partition_path!r} "
                    "(list_eval_partition with 0=train, 1=val, 2=test)"
                )
            return CelebAFiles(attr_path, partition_path, image_dir)
    looked = "; ".join(f"{a} + {i}/" for a, _, i in _candidates(root)[:3])
    raise FileNotFoundError(
        f"no CelebA copy under {root!r}: expected list_attr_celeba.txt (or .csv), "
        f"list_eval_partition.txt (or .csv) and img_align_celeba/, e.g. {looked}"
    )


def _parse_label(token: str, path: str, line_no: int, column: str) -> int:
    if token in ("1", "+1"):
        return 1
    if token in ("-1", "0"):
        return 0
    raise CelebAFormatError(f"{path}, line {line_no}: attribute {column!r} has value {token!r}, expected -1 or 1")


def read_attr_txt(path: str | os.PathLike) -> AttributeTable:
    """Parse the official ``list_attr_celeba.txt``: a count line, a header of names, then rows.

    Accepts CRLF or LF line ends and any run of spaces or tabs between fields.

    Raises:
        FileNotFoundError: no file at ``path``.
        CelebAFormatError: bad count line, a row with the wrong number of fields, a value other than
            -1/1, a duplicate image, or a count that disagrees with the rows (file and line named).
    """
    path = os.fspath(path)
    with open(path, encoding="utf-8", newline="") as handle:
        lines = handle.read().splitlines()
    if len(lines) < 2:
        raise CelebAFormatError(f"{path}: expected a count line and a header line, found {len(lines)} lines")
    try:
        declared = int(lines[0].strip())
    except ValueError:
        raise CelebAFormatError(f"{path}, line 1: expected the number of images, found {lines[0][:60]!r}") from None
    attr_names = tuple(lines[1].split())
    if not attr_names:
        raise CelebAFormatError(f"{path}, line 2: expected the attribute names, found an empty line")
    image_ids, rows = [], []
    for line_no, line in enumerate(lines[2:], start=3):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != len(attr_names) + 1:
            raise CelebAFormatError(
                f"{path}, line {line_no}: expected {len(attr_names) + 1} fields "
                f"(image name + {len(attr_names)} labels), found {len(fields)}"
            )
        image_ids.append(fields[0])
        rows.append([_parse_label(t, path, line_no, attr_names[j]) for j, t in enumerate(fields[1:])])
    if len(image_ids) != declared:
        raise CelebAFormatError(f"{path}, line 1: declares {declared} images but {len(image_ids)} rows follow")
    return _table(path, image_ids, attr_names, rows)


def read_attr_csv(path: str | os.PathLike) -> AttributeTable:
    """Parse Kaggle's ``list_attr_celeba.csv`` (header ``image_id,<40 names>``, -1/1 values).

    Raises:
        FileNotFoundError: no file at ``path``.
        CelebAFormatError: no ``image_id`` column, a row of the wrong width, a bad value, a duplicate.
    """
    path = os.fspath(path)
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if not header or header[0].strip() != "image_id":
            raise CelebAFormatError(f"{path}, line 1: expected a header starting with 'image_id', found {header!r}")
        attr_names = tuple(h.strip() for h in header[1:])
        image_ids, rows = [], []
        for line_no, fields in enumerate(reader, start=2):
            if not fields:
                continue
            if len(fields) != len(header):
                raise CelebAFormatError(
                    f"{path}, line {line_no}: expected {len(header)} comma-separated fields, found {len(fields)}"
                )
            image_ids.append(fields[0].strip())
            rows.append([_parse_label(t.strip(), path, line_no, attr_names[j]) for j, t in enumerate(fields[1:])])
    return _table(path, image_ids, attr_names, rows)


def _check_attribute_names(path: str, attr_names: tuple[str, ...]) -> None:
    unknown = [name for name in attr_names if name not in CELEBA_ATTRIBUTES]
    if unknown:
        hints = []
        for name in unknown:
            close = difflib.get_close_matches(name, CELEBA_ATTRIBUTES, n=1)
            hints.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise CelebAFormatError(
            f"{path}, line with the attribute names: unknown CelebA attributes {', '.join(hints)}; "
            f"CelebA's 40 are {', '.join(CELEBA_ATTRIBUTES)}"
        )
    duplicated = sorted({name for name in attr_names if attr_names.count(name) > 1})
    if duplicated:
        raise CelebAFormatError(f"{path}: attributes {duplicated} appear more than once in the header")


def _table(path: str, image_ids: list[str], attr_names: tuple[str, ...], rows: list) -> AttributeTable:
    _check_attribute_names(path, attr_names)
    if len(set(image_ids)) != len(image_ids):
        seen, duplicate = set(), None
        for image_id in image_ids:
            if image_id in seen:
                duplicate = image_id
                break
            seen.add(image_id)
        raise CelebAFormatError(f"{path}: image {duplicate!r} is listed more than once")
    labels = np.asarray(rows, dtype=np.uint8).reshape(len(rows), len(attr_names))
    return AttributeTable(tuple(image_ids), attr_names, labels)


def read_attributes(path: str | os.PathLike) -> AttributeTable:
    """Parse an attribute file, choosing the reader by extension (``.csv`` = Kaggle, else official).

    Raises:
        FileNotFoundError, CelebAFormatError: as the chosen reader.
    """
    return read_attr_csv(path) if os.fspath(path).lower().endswith(".csv") else read_attr_txt(path)


def read_partition(path: str | os.PathLike) -> dict[str, int]:
    """Parse ``list_eval_partition.txt`` (``name split``) or ``.csv`` (``image_id,partition``).

    Returns:
        A dict image name -> split id (0 train, 1 val, 2 test).
    Raises:
        FileNotFoundError: no file at ``path``.
        CelebAFormatError: a row that is not ``name split`` with split in 0/1/2 (file and line named).
    """
    path = os.fspath(path)
    is_csv = path.lower().endswith(".csv")
    with open(path, encoding="utf-8", newline="") as handle:
        lines = handle.read().splitlines()
    partition: dict[str, int] = {}
    for line_no, line in enumerate(lines, start=1):
        fields = [f.strip() for f in line.split(",")] if is_csv else line.split()
        if not fields or not fields[0]:
            continue
        if is_csv and line_no == 1 and fields[0] == "image_id":
            continue
        if len(fields) != 2 or fields[1] not in ("0", "1", "2"):
            raise CelebAFormatError(f"{path}, line {line_no}: expected '<image> <0|1|2>', found {line[:80]!r}")
        partition[fields[0]] = int(fields[1])
    return partition


def split_indices(table: AttributeTable, partition: dict[str, int], partition_path: str = "<partition>") -> dict[str, np.ndarray]:
    """Return ``{'train'|'val'|'test': row indices into table}`` following the partition file.

    Raises:
        CelebAFormatError: an image of the attribute file has no partition entry.
    """
    split_of = np.empty(len(table.image_ids), dtype=np.int64)
    for index, image_id in enumerate(table.image_ids):
        if image_id not in partition:
            raise CelebAFormatError(f"{partition_path}: image {image_id!r} of the attribute file has no partition entry")
        split_of[index] = partition[image_id]
    return {name: np.flatnonzero(split_of == split_id) for split_id, name in SPLIT_NAMES.items()}


def celeba_source(root: str, name: str | None = None) -> AttributeSource:
    """Return the CelebA copy under ``root`` (any layout :func:`find_celeba_files` knows).

    Raises:
        FileNotFoundError: no CelebA layout under ``root``.
        CelebAFormatError: malformed annotation files (file and line named).
    """
    files = find_celeba_files(root)
    table = read_attributes(files.attr_path)
    splits = split_indices(table, read_partition(files.partition_path), files.partition_path)
    split_of = np.empty(len(table.image_ids), dtype=np.int64)
    for split_id, split in SPLIT_NAMES.items():
        split_of[splits[split]] = split_id
    return AttributeSource(
        name or "celeba",
        tuple(os.path.join(files.image_dir, i) for i in table.image_ids),
        table.labels,
        table.attr_names,
        split_of,
        (files.attr_path, files.partition_path),
    )
