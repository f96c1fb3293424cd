"""deepforest CSV annotations: ``image_path,xmin,ymin,xmax,ymax,label``, one row per box.

Layout: a folder holding ``annotations.csv`` and the images it names (``image_path`` is relative to
the CSV's folder, deepforest's ``root_dir`` default); ``open`` also takes the path of any CSV.

* Coordinates are pixel edges ``xyxy`` already (deepforest's boxes reach ``xmax = W``), taken as
  they are; rows need ``xmax > xmin`` and ``ymax > ymin``.
* Negative samples: deepforest marks an image without objects by one row whose four coordinates
  are 0 (``myimage.png,0,0,0,0,Tree``; blank coordinates are read the same way). Such an image is a
  sample with no instances; the row's label (and extra columns) go to ``Sample.meta["empty_row"]``
  so the writer reproduces the row (also when, oddly, the same image has boxes too). A sample
  without instances and without that record is written with the dataset's first category (or
  ``Tree``, deepforest's default label).
* Optional columns: ``score`` (deepforest predictions) -> ``Instance.score``; ``difficult`` and
  ``ignore`` (0/1, written by rsvl when set) -> the flags; any other column -> ``attrs`` as text
  (empty cells are absent attributes). ``Dataset.meta["columns"]`` keeps the header order.
* Rows of one image need not be adjacent; samples come in order of first appearance.

Errors carry the CSV line number. ``geometry``-only CSVs (deepforest >= 1.4 can write WKT
polygons instead of the four coordinates) are refused with a message saying so.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Iterable, Iterator, Sequence
from os import PathLike
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from rsvl.datasets.base import (
    Dataset,
    DatasetFormat,
    ReadReport,
    format_number,
    parse_float,
    parse_int,
    register_format,
    resolve_inside,
)
from rsvl.datasets.sample import Category, Instance, Sample
from rsvl.errors import DatasetError, InputError, UnsafeDataError
from rsvl.geometry.boxes import poly_to_hbb
from rsvl.utils.atomic import write_text

logger = logging.getLogger(__name__)

__all__ = ["ANN_FILE", "COLUMNS", "DeepForestFormat"]

ANN_FILE = "annotations.csv"
COLUMNS = ("image_path", "xmin", "ymin", "xmax", "ymax", "label")
"""The columns every deepforest annotation CSV has."""

_COORDS = ("xmin", "ymin", "xmax", "ymax")
_FLAGS = ("difficult", "ignore")
_SPECIAL = (*COLUMNS, "score", *_FLAGS)
_DEFAULT_LABEL = "Tree"


def _locate(root: str | PathLike[str], csv_file: str | PathLike[str] | None) -> tuple[Path, Path]:
    root = Path(root)
    if csv_file is None and root.suffix.lower() == ".csv" and not root.is_dir():
        return root.parent, root
    csv_path = Path(csv_file) if csv_file is not None else Path(ANN_FILE)
    return root, csv_path if csv_path.is_absolute() else root / csv_path


def _rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    """``(line, cells)`` of a UTF-8 CSV (BOM tolerated), cells stripped.

    The file is decoded as a whole first so that undecodable bytes are reported at their own line.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DatasetError(f"cannot open: {exc.strerror or exc}", path) from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise DatasetError(f"not UTF-8 text ({exc.reason} at byte {exc.start})", path, line) from None
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    start = 1  # first line of the record being read (a quoted cell may span lines)
    try:
        for cells in reader:
            yield start, [c.strip() for c in cells]
            start = reader.line_num + 1
    except csv.Error as exc:
        raise DatasetError(f"malformed CSV record: {exc}", path, start) from None


def _header(cells: list[str], path: Path, line: int) -> list[str]:
    seen: set[str] = set()
    for name in cells:
        if name in seen:
            raise DatasetError(f"column {name!r} appears twice in the header", path, line)
        seen.add(name)
    missing = [c for c in COLUMNS if c not in seen]
    if missing:
        hint = " (a geometry-only CSV is not supported: export xmin..ymax)" if "geometry" in seen else ""
        raise DatasetError(
            f"header lacks {', '.join(missing)}; expected at least {','.join(COLUMNS)}{hint}", path, line
        )
    return cells


class _CsvReader:
    def __init__(self, root: Path, path: Path, strict: bool):
        self.root = root
        self.path = path
        self.strict = strict

    def flag(self, text: str, column: str, line: int) -> bool:
        if not text:
            return False
        value = parse_int(text, column, self.path, line)
        if value not in (0, 1):
            raise DatasetError(f"{column}: expected 0 or 1, got {text!r}", self.path, line)
        return bool(value)

    def row(self, row: dict[str, str], line: int) -> tuple[str, Instance | None, dict[str, str]]:
        """One row -> (image path, instance or None for a negative-sample row, extra cells)."""
        image = row["image_path"]
        resolve_inside(self.root, image, self.path, line)
        extras = {k: v for k, v in row.items() if k not in _SPECIAL and v != ""}
        coords_text = [row[c] for c in _COORDS]
        if all(t == "" for t in coords_text):
            return image, None, {"label": row["label"], **extras}
        coords = [parse_float(t, c, self.path, line) for t, c in zip(coords_text, _COORDS, strict=True)]
        if all(v == 0 for v in coords):
            return image, None, {"label": row["label"], **extras}
        xmin, ymin, xmax, ymax = coords
        if not (xmax > xmin and ymax > ymin):
            raise DatasetError(f"expected xmax > xmin and ymax > ymin, got {coords_text}", self.path, line)
        if not row["label"]:
            raise DatasetError("label: expected a class name", self.path, line)
        inst = Instance(category=row["label"], bbox=(xmin, ymin, xmax, ymax), attrs=dict(extras))
        if row.get("score"):
            inst.score = parse_float(row["score"], "score", self.path, line)
        inst.difficult = self.flag(row.get("difficult", ""), "difficult", line)
        inst.ignore = self.flag(row.get("ignore", ""), "ignore", line)
        return image, inst, extras

    def header(self) -> list[str]:
        """The header row (the first non-blank row)."""
        for line, cells in _rows(self.path):
            if any(cells):
                return _header(cells, self.path, line)
        raise DatasetError(f"empty CSV; expected a header {','.join(COLUMNS)}", self.path)

    def samples(self, report: ReadReport) -> Iterator[Sample]:
        header: list[str] | None = None
        by_image: dict[str, Sample] = {}
        for line, cells in _rows(self.path):
            if not any(cells):
                continue
            if header is None:
                header = _header(cells, self.path, line)
                continue
            try:
                if len(cells) != len(header):
                    raise DatasetError(
                        f"expected {len(header)} cells ({','.join(header)}), got {len(cells)}", self.path, line
                    )
                image, inst, extras = self.row(dict(zip(header, cells, strict=True)), line)
            except UnsafeDataError:
                raise
            except DatasetError as exc:
                if self.strict:
                    raise
                report.skip(exc)
                continue
            sample = by_image.get(image)
            if sample is None:
                sample = by_image[image] = Sample(image=image, image_id=Path(image).stem)
            if inst is None:
                sample.meta["empty_row"] = extras
            else:
                sample.instances.append(inst)
        yield from by_image.values()


def _columns(samples: Sequence[Sample], meta: dict[str, Any] | None) -> list[str]:
    """Header: ``meta["columns"]`` when given, completed with whatever the samples need."""
    given = list((meta or {}).get("columns") or [])
    columns = given if all(c in given for c in COLUMNS) else list(COLUMNS) + [c for c in given if c not in COLUMNS]
    needed: list[str] = []
    for sample in samples:
        for inst in sample.instances:
            if inst.score is not None:
                needed.append("score")
            needed += [flag for flag in _FLAGS if getattr(inst, flag)]
            needed += [k for k in inst.attrs if k != "bbox_xywh"]
        needed += [k for k in sample.meta.get("empty_row", {}) if k != "label"]
    for name in needed:
        if name not in columns:
            columns.append(name)
    return columns


def _instance_cells(inst: Instance, where: str) -> dict[str, str]:
    if inst.bbox is not None:
        box = [float(v) for v in inst.bbox]
    elif inst.polygon is not None:
        box = [float(v) for v in poly_to_hbb(np.asarray(inst.polygon, dtype=np.float64))]
    else:
        raise InputError(f"{where}: instance has neither a box nor a polygon")
    if not (box[2] > box[0] and box[3] > box[1]):
        raise InputError(f"{where}: deepforest boxes need xmax > xmin and ymax > ymin, got {box}")
    if not inst.category or inst.category != inst.category.strip():
        raise InputError(f"{where}: label {inst.category!r} is empty or has surrounding spaces")
    cells = {k: str(v) for k, v in inst.attrs.items() if k != "bbox_xywh"}
    for k in cells:
        if k in _SPECIAL:
            raise InputError(f"{where}: attribute {k!r} collides with the deepforest column {k!r}")
    cells.update(zip(_COORDS, (format_number(v) for v in box), strict=True))
    cells["label"] = inst.category
    if inst.score is not None:
        cells["score"] = format_number(inst.score)
    for flag in _FLAGS:
        if getattr(inst, flag):
            cells[flag] = "1"
    return cells


@register_format
class DeepForestFormat(DatasetFormat):
    """deepforest's annotation CSV with the images beside it."""

    name = "deepforest"
    tasks: ClassVar[tuple[str, ...]] = ("detection",)
    layout = "annotations.csv (image_path,xmin,ymin,xmax,ymax,label) + the images beside it"
    image_dir = ""

    def image_relpath(self, stem: str, suffix: str = ".png", label: str | None = None) -> str:
        return f"{stem}{suffix}"

    def open(
        self, root: str | PathLike[str], *, strict: bool = True, csv_file: str | PathLike[str] | None = None
    ) -> Dataset:
        """Open ``root/annotations.csv`` (or the CSV ``root`` itself, or ``root/csv_file``); rows are
        parsed while iterating."""
        root_dir, csv_path = _locate(root, csv_file)
        if not csv_path.is_file():
            found = sorted(p.name for p in root_dir.glob("*.csv")) if root_dir.is_dir() else []
            hint = f"; pass one of these CSVs: {', '.join(found)}" if found else ""
            raise DatasetError(f"no annotation CSV {csv_path.name} (layout: {self.layout}){hint}", csv_path)
        reader = _CsvReader(root_dir, csv_path, strict)
        return Dataset(root_dir, self.name, reader.samples, meta={"columns": reader.header()})

    def write(
        self,
        root: str | PathLike[str],
        samples: Iterable[Sample],
        *,
        categories: Sequence[Category] | None = None,
        meta: dict[str, Any] | None = None,
        csv_file: str | PathLike[str] | None = None,
    ) -> None:
        """Write the annotation CSV (atomically). ``meta["columns"]`` fixes the column order."""
        samples = list(samples)
        columns = _columns(samples, meta)
        fallback = categories[0].name if categories else _DEFAULT_LABEL
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(columns)
        for sample in samples:
            if not sample.image or Path(sample.image).is_absolute():
                raise InputError(f"image {sample.image!r}: deepforest image paths are relative to the CSV's folder")
            if not sample.instances or sample.meta.get("empty_row"):
                empty = dict(sample.meta.get("empty_row") or {"label": fallback})
                cells = {**{k: str(v) for k, v in empty.items()}, **dict.fromkeys(_COORDS, "0")}
                writer.writerow([sample.image if c == "image_path" else cells.get(c, "") for c in columns])
            for n, inst in enumerate(sample.instances):
                cells = _instance_cells(inst, f"{sample.image} instance {n}")
                writer.writerow([sample.image if c == "image_path" else cells.get(c, "") for c in columns])
        _, csv_path = _locate(root, csv_file)
        write_text(csv_path, buffer.getvalue())
