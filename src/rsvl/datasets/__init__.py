"""Dataset readers and writers in the real public formats, one module per format.

``get_format(name).open(root)`` returns a lazy :class:`Dataset` of :class:`Sample`;
``get_format(name).write(root, samples)`` writes the annotation files. Importing this package
registers every format module below.
"""

from __future__ import annotations

import importlib

from rsvl.datasets.base import (
    Dataset,
    DatasetFormat,
    Problem,
    ReadReport,
    format_names,
    get_format,
    register_format,
)
from rsvl.datasets.sample import QA, Category, Instance, Referring, Sample

# Format modules register themselves on import; a module that is not written yet is skipped so
# that the package stays importable while formats are added one by one.
_FORMAT_MODULES = (
    "dota",
    "visdrone",
    "coco",
    "voc",
    "deepforest",
    "rrsisd",
    "vrsbench",
    "lrsvqa",
    "rsvqa",
    "captions",
    "classification",
    "geojson_labels",
)
for _name in _FORMAT_MODULES:
    try:
        importlib.import_module(f"rsvl.datasets.{_name}")
    except ModuleNotFoundError as _exc:
        if _exc.name != f"rsvl.datasets.{_name}":
            raise

__all__ = [
    "QA",
    "Category",
    "Dataset",
    "DatasetFormat",
    "Instance",
    "Problem",
    "ReadReport",
    "Referring",
    "Sample",
    "format_names",
    "get_format",
    "register_format",
]
