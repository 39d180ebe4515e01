"""The table of dataset layouts a ``--data-dir`` can hold, and :func:`find_source`, which picks one.

A :class:`Layout` is one row: its name (the value of ``data.format``), what it is, how to find its annotation
file at a path (``find``) and how to read it (``read``, one reader module of this package). Adding a layout is one
reader module and one row of :data:`LAYOUTS`; ``data.format`` accepts its name at once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

from bench.data.celeba import celeba_source, find_celeba_files
from bench.data.csv_table import CSV_OPTIONS, csv_source
from bench.data.pa100k import pa100k_source
from bench.data.source import AttributeSource


class LayoutAbsent(FileNotFoundError):
    """A path does not hold a given layout (the message says what was looked for)."""


@dataclass(frozen=True)
class Layout:
    """A dataset layout: ``find(path, options)`` returns the file or folder its reader reads at ``path`` (a folder or a
    file) or raises :class:`LayoutAbsent`; ``read(found, options, name)`` returns the :class:`AttributeSource` (``name``:
    the study's name for the dataset, None for the layout's own). ``options`` are the study's data settings."""

    name: str
    description: str
    find: Callable[[str, dict], str]
    read: Callable[[str, dict, str | None], AttributeSource]


def _celeba_root(path: str, options: dict) -> str:
    if not os.path.isdir(path):
        raise LayoutAbsent(f"{path!r} is a file, not a CelebA folder")
    try:
        find_celeba_files(path)
    except FileNotFoundError as exc:
        raise LayoutAbsent(str(exc)) from None
    return path


def _mat_file(path: str, options: dict) -> str:
    found = path if os.path.isfile(path) else os.path.join(path, "annotation.mat")
    if not (os.path.isfile(found) and found.lower().endswith(".mat")):
        raise LayoutAbsent(f"no PA-100K annotation.mat at {path!r}")
    return found


def _table_file(path: str, options: dict) -> str:
    if os.path.isfile(path):
        return path
    if options.get("annotations"):
        return os.path.join(path, options["annotations"])
    tables = sorted(n for n in os.listdir(path) if n.lower().endswith((".csv", ".tsv")))
    if len(tables) > 1:
        raise FileNotFoundError(f"{path!r} holds several tables ({', '.join(tables)}): name one with data.annotations")
    if not tables:
        raise LayoutAbsent(f"no .csv/.tsv attribute table in {path!r}")
    return os.path.join(path, tables[0])


def _csv_options(options: dict) -> dict:
    return {k: options[k] for k in CSV_OPTIONS if k != "annotations" and options.get(k) is not None}


LAYOUTS: tuple[Layout, ...] = (
    Layout(
        "celeba",
        "CelebA: official (also under Anno/, Eval/, Img/), torchvision's or Kaggle's layout",
        _celeba_root,
        lambda found, options, name: celeba_source(found, name),
    ),
    Layout(
        "pa100k",
        "PA-100K's official annotation.mat (a folder holding it, or the file)",
        _mat_file,
        lambda found, options, name: pa100k_source(found, options.get("image_root"), name),
    ),
    Layout(
        "csv",
        "one CSV/TSV attribute table (a folder holding exactly one, data.annotations, or the file)",
        _table_file,
        lambda found, options, name: csv_source(found, **_csv_options(options), name=name),
    ),
)


def formats() -> tuple[str, ...]:
    """Return the values ``data.format`` takes: ``auto`` (detected) and the name of every row of :data:`LAYOUTS`."""
    return ("auto",) + tuple(layout.name for layout in LAYOUTS)


def find_source(data_dir: str, data_format: str | None = None, options: dict | None = None) -> AttributeSource:
    """Return the dataset at ``data_dir`` read by the layout ``data_format`` names (``auto`` or None: the first row of
    :data:`LAYOUTS` found there). ``options`` are the study's data settings (the csv reader's and ``name``).

    Raises:
        FileNotFoundError: nothing readable at ``data_dir`` (what each layout looked for is listed), or a folder
            with several tables and none named.
        ValueError: an unknown ``data_format``; DatasetFormatError / CelebAFormatError from the reader.
    """
    options = dict(options or {})
    by_name = {layout.name: layout for layout in LAYOUTS}
    if data_format is not None and data_format not in formats():
        raise ValueError(f"data.format: unknown format {data_format!r}; known: {', '.join(formats())}")
    if not os.path.exists(data_dir):
        raise FileNotFoundError(f"data_dir {data_dir!r} does not exist")
    absent = []
    for layout in LAYOUTS if data_format in (None, "auto") else (by_name[data_format],):
        try:
            found = layout.find(data_dir, options)
        except LayoutAbsent as exc:
            absent.append(f"{layout.name}: {exc}")
            continue
        return layout.read(found, options, options.get("name"))
    raise FileNotFoundError(f"no dataset under {data_dir!r}: " + "; ".join(absent))
