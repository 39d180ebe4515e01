"""Data: every dataset layout a study reads, the built-in synthetic set, and the decoded cache models train from.

One file per reader (``celeba``, ``csv_table``, ``pa100k``), the table of layouts that picks one (``layouts``), the
synthetic set written in CelebA's own format (``synthetic``) and the uint8 cache with its batches (``loading``).
"""

from bench.data.layouts import LAYOUTS, Layout, find_source
from bench.data.loading import (
    EmptySplitError,
    FaceAttributeData,
    ImageDecodeError,
    iterate_batches,
    load_celeba,
    load_data,
    load_source,
    to_model_input,
)
from bench.data.source import SPLIT_NAMES, AttributeSource, DatasetFormatError

__all__ = [
    "LAYOUTS",
    "SPLIT_NAMES",
    "AttributeSource",
    "DatasetFormatError",
    "EmptySplitError",
    "FaceAttributeData",
    "ImageDecodeError",
    "Layout",
    "find_source",
    "iterate_batches",
    "load_celeba",
    "load_data",
    "load_source",
    "to_model_input",
]
