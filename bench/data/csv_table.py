"""The generic attribute table: a CSV/TSV file with one row per image (PETA, LFWA, your own).

One row per image; an image column (``image_column``, default the first of ``image``, ``image_id``, ``image_path``,
``path``, ``file``, ``filename``, else the first column), one column per attribute with 0/1 or -1/1 values, and a split
column (``split_column``, default ``split`` or ``partition``) holding train/val/test or 0/1/2, or instead
``split_files`` (``{train: FILE, val: FILE, test: FILE}``, one image path per line). Image paths are relative to
``image_root`` (default: the table's folder).
"""

from __future__ import annotations

import csv
import os

import numpy as np

from bench.data.source import AttributeSource, DatasetFormatError

IMAGE_COLUMNS = ("image", "image_id", "image_path", "path", "file", "filename", "img")
SPLIT_COLUMNS = ("split", "partition")
SPLIT_VALUES = {"0": 0, "1": 1, "2": 2, "train": 0, "val": 1, "valid": 1, "validation": 1, "test": 2}
LABEL_VALUES = {"1": 1, "0": 0, "-1": 0, "1.0": 1, "0.0": 0, "-1.0": 0}
# Options of a study's data section that only the csv reader takes.
CSV_OPTIONS = ("annotations", "image_column", "split_column", "attributes", "split_files", "image_root", "delimiter")


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


def _read_rows(path: str, delimiter: str | None) -> tuple[list[str], list[list[str]]]:
    """Return ``(header, data rows)`` of the table at ``path`` (the delimiter sniffed when None)."""
    with open(path, encoding="utf-8-sig", newline="") as handle:
        first = handle.readline()
        handle.seek(0)
        rows = list(csv.reader(handle, delimiter=delimiter or _sniff_delimiter(path, first)))
    if not rows or len(rows[0]) < 2:
        raise DatasetFormatError(
            f"{path}, line 1: expected a header with an image column and attribute columns, found {first[:80]!r}"
        )
    return [h.strip() for h in rows[0]], rows[1:]


def _columns(
    path: str, header: list[str], image_column, split_column, attributes, split_files
) -> tuple[int, int | None, list[int]]:
    """Return ``(image column, split column or None, attribute columns)`` of a table's header."""
    image_index = _pick(header, image_column, IMAGE_COLUMNS, path, "image")
    image_index = 0 if image_index is None else image_index
    split_index = _pick(header, split_column, SPLIT_COLUMNS, path, "split")
    if split_index is None and not split_files:
        raise DatasetFormatError(
            f"{path}: no split column ({' or '.join(SPLIT_COLUMNS)}) and no split_files; "
            "add a column of train/val/test (or 0/1/2) or name one file per split"
        )
    others = [j for j in range(len(header)) if j not in (image_index, split_index)]
    if attributes is not None:
        missing = [a for a in attributes if a not in header]
        if missing:
            raise DatasetFormatError(f"{path}, line 1: no attribute columns {missing}; columns: {', '.join(header)}")
        others = [header.index(a) for a in attributes]
    return image_index, split_index, others


def _labels(path: str, line_no: int, header: list[str], row: list[str], columns: list[int]) -> list[int]:
    values = []
    for j in columns:
        value = LABEL_VALUES.get(row[j].strip())
        if value is None:
            raise DatasetFormatError(f"{path}, line {line_no}, column {header[j]!r}: expected 0/1 or -1/1, found {row[j]!r}")
        values.append(value)
    return values


def _split(path: str, line_no: int, header: list[str], row: list[str], image: str, split_index, listed: dict | None) -> int:
    if listed is not None:
        if image not in listed:
            raise DatasetFormatError(f"{path}, line {line_no}: image {image!r} is in no split file")
        return listed[image]
    split = SPLIT_VALUES.get(row[split_index].strip().lower())
    if split is None:
        raise DatasetFormatError(
            f"{path}, line {line_no}, column {header[split_index]!r}: expected train/val/test or 0/1/2, "
            f"found {row[split_index]!r}"
        )
    return split


def csv_source(
    path: str,
    image_column: str | None = None,
    split_column: str | None = None,
    attributes=None,
    split_files: dict | None = None,
    image_root: str | None = None,
    delimiter: str | None = None,
    name: str | None = None,
) -> AttributeSource:
    """Return the dataset a CSV/TSV attribute table describes (see the module docstring for its columns).

    Raises:
        FileNotFoundError: the table, a split file or a listed image does not exist (named).
        DatasetFormatError: no split information, an unknown split value, a label that is not 0/1/-1, a row
            of the wrong width, a duplicate image, an unknown attribute column (file, line and value named).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"attribute table {path!r} does not exist")
    header, rows = _read_rows(path, delimiter)
    image_index, split_index, others = _columns(path, header, image_column, split_column, attributes, split_files)
    root = image_root if image_root is not None else os.path.dirname(os.path.abspath(path))
    listed = _read_split_files(split_files, os.path.dirname(os.path.abspath(path))) if split_files else None
    images, labels, splits, seen = [], [], [], {}
    for line_no, row in enumerate(rows, start=2):
        if not row or not any(field.strip() for field in row):
            continue
        if len(row) != len(header):
            raise DatasetFormatError(f"{path}, line {line_no}: expected {len(header)} fields, found {len(row)}")
        image = row[image_index].strip()
        resolved = os.path.normpath(os.path.join(root, image))  # ./imgs/x.jpg and imgs/x.jpg are one image
        if resolved in seen:
            first_line, first_name = seen[resolved]
            raise DatasetFormatError(
                f"{path}, line {line_no}: image {image!r} is listed again (first on line {first_line} as {first_name!r})"
            )
        seen[resolved] = (line_no, image)
        labels.append(_labels(path, line_no, header, row, others))
        splits.append(_split(path, line_no, header, row, image, split_index, listed))
        images.append(os.path.join(root, image))
    if not images:
        raise DatasetFormatError(f"{path}: no image rows after the header")
    files = (path, *(os.path.join(os.path.dirname(os.path.abspath(path)), f) for f in (split_files or {}).values()))
    name = name or os.path.splitext(os.path.basename(path))[0]
    return AttributeSource(
        name,
        tuple(images),
        np.asarray(labels, dtype=np.uint8),
        tuple(header[j] for j in others),
        np.asarray(splits, dtype=np.int64),
        files,
    )
