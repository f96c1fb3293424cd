"""DOTA v1.0 / v1.5 / v2.0 ``labelTxt`` annotations and DOTA Task1/Task2 submission files.

Layout: ``images/`` + ``labelTxt/`` with one ``<stem>.txt`` per image. A label file holds two
optional header lines and one object per line::

    imagesource:GoogleEarth
    gsd:0.146343590398
    2753.0 2408.0 2861.0 2385.0 2888.0 2468.0 2805.0 2502.0 plane 0

* headers -> ``Sample.meta["imagesource"]`` (text) and ``Sample.meta["gsd"]`` (float, or None for
  ``null``/``None``, which some files carry);
* object lines -> :class:`Instance` with ``polygon`` = the 8 numbers as given (DOTA's vertex order),
  ``bbox`` = the polygon's enclosing box (:func:`rsvl.geometry.boxes.poly_to_hbb`), ``category``,
  and ``difficult`` (any non-zero flag; a value other than 0/1 is kept in
  ``attrs["difficult_value"]``). Some files omit the difficult column: it defaults to 0 and, when
  every object of a file omits it, ``Sample.meta["no_difficult"] = True`` makes the writer omit it
  too. Mixed files are written with the column everywhere (same values).

The writer prints coordinates the way DOTA's own files do (``2753.0``: integral values with one
decimal, other values with the shortest exact repr), so rewriting a DOTA file reproduces it, up to
number spelling (``gsd:0.10`` comes back as ``gsd:0.1``, ``gsd:None`` as ``gsd:null``).

Images are found by stem among ``.png .jpg .jpeg .tif .tiff .bmp`` (any case; ``.png`` first, as in
DOTA). Samples come from the label files: a label file whose image is missing still yields its
sample, named ``images/<stem>.png``, so that nothing is dropped; ``Sample.image_path`` then does not
exist, which ``rsvl data check`` reports as a problem (``open`` logs how many there are). Images
without a label file are not samples (DOTA's test split has no labels); their number is logged.

Submission files (:func:`read_dota_task1` / :func:`write_dota_task1`): ``Task1_<class>.txt`` with
lines ``<image_id> <score> x1 y1 x2 y2 x3 y3 x4 y4``; Task2 (HBB) is ``Task2_<class>.txt`` with
``<image_id> <score> xmin ymin xmax ymax`` (:func:`read_dota_task2` / :func:`write_dota_task2`).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
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
    read_text_lines,
    register_format,
)
from rsvl.datasets.sample import Category, Instance, Sample
from rsvl.errors import DatasetError, InputError
from rsvl.geometry.boxes import hbb_to_poly, poly_to_hbb
from rsvl.utils.atomic import write_text

logger = logging.getLogger(__name__)

__all__ = [
    "DOTA_V1_0_CLASSES",
    "DOTA_V1_5_CLASSES",
    "DOTA_V2_0_CLASSES",
    "IMAGE_SUFFIXES",
    "DotaFormat",
    "index_images",
    "read_dota_task1",
    "read_dota_task2",
    "write_dota_task1",
    "write_dota_task2",
]

DOTA_V1_0_CLASSES = (
    "plane",
    "baseball-diamond",
    "bridge",
    "ground-track-field",
    "small-vehicle",
    "large-vehicle",
    "ship",
    "tennis-court",
    "basketball-court",
    "storage-tank",
    "soccer-ball-field",
    "roundabout",
    "harbor",
    "swimming-pool",
    "helicopter",
)
DOTA_V1_5_CLASSES = (*DOTA_V1_0_CLASSES, "container-crane")
DOTA_V2_0_CLASSES = (*DOTA_V1_5_CLASSES, "airport", "helipad")

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
"""Image suffixes looked up by stem (compared case-insensitively), in DOTA's order of preference."""

_HEADERS = ("imagesource", "gsd")
_NULLS = ("null", "none", "")


def index_images(folder: Path, prefer: Sequence[str] = IMAGE_SUFFIXES) -> dict[str, str]:
    """``{stem: file name}`` of the images in ``folder`` (one directory listing, no recursion).

    When several files share a stem, the suffix earliest in ``prefer`` wins (then the name's order).
    """
    rank = {suffix: i for i, suffix in enumerate(prefer)}
    best: dict[str, tuple[int, str]] = {}
    if not folder.is_dir():
        return {}
    with os.scandir(folder) as entries:
        for entry in entries:
            stem, suffix = os.path.splitext(entry.name)
            r = rank.get(suffix.lower())
            if r is None or not entry.is_file():
                continue
            if stem not in best or (r, entry.name) < best[stem]:
                best[stem] = (r, entry.name)
    return {stem: name for stem, (_, name) in best.items()}


def _dota_number(value: float) -> str:
    """DOTA's spelling: ``2753.0`` for integral values, the shortest exact repr otherwise."""
    text = format_number(value)
    return f"{text}.0" if text.lstrip("-").isdigit() else text


def _polygon_instance(coords: Sequence[float], category: str, score: float | None = None) -> Instance:
    bbox = tuple(float(v) for v in poly_to_hbb(np.asarray(coords, dtype=np.float64)))
    return Instance(category=category, bbox=bbox, polygon=tuple(coords), score=score)  # type: ignore[arg-type]


def _polygon_of(inst: Instance, where: str) -> tuple[float, ...]:
    """The 8 numbers to write: the polygon, or the box's 4 corners when there is only a box."""
    if inst.polygon is not None:
        poly = tuple(float(v) for v in inst.polygon)
        if len(poly) != 8:
            raise InputError(f"{where}: DOTA needs a 4-vertex polygon (8 numbers), got {len(poly)} numbers")
    elif inst.bbox is not None:
        poly = tuple(float(v) for v in hbb_to_poly(np.asarray(inst.bbox, dtype=np.float64)))
    else:
        raise InputError(f"{where}: instance has neither a polygon nor a box")
    if not all(math.isfinite(v) for v in poly):
        raise InputError(f"{where}: polygon holds NaN or inf: {poly}")
    return poly


def _check_token(text: str, what: str, where: str) -> str:
    if not text or any(ch.isspace() for ch in text):
        raise InputError(f"{where}: {what} {text!r} cannot be written in DOTA's space-separated lines")
    return text


# --------------------------------------------------------------------------- labelTxt reader


def _parse_header(key: str, value: str, path: Path, line: int) -> Any:
    if key == "imagesource":
        return value
    if value.lower() in _NULLS:
        return None
    gsd = parse_float(value, "gsd", path, line)
    if gsd <= 0:
        raise DatasetError(f"gsd: expected a positive number of metres per pixel, got {value!r}", path, line)
    return gsd


def _parse_object(tokens: list[str], path: Path, line: int) -> Instance:
    if len(tokens) not in (9, 10):
        raise DatasetError(
            f"expected 'x1 y1 x2 y2 x3 y3 x4 y4 category [difficult]' (9 or 10 fields), got {len(tokens)} fields",
            path,
            line,
        )
    coords = [parse_float(tok, f"{'xy'[k % 2]}{k // 2 + 1}", path, line) for k, tok in enumerate(tokens[:8])]
    inst = _polygon_instance(coords, tokens[8])
    if len(tokens) == 10:
        flag = parse_int(tokens[9], "difficult", path, line)
        if flag < 0:
            raise DatasetError(f"difficult: expected 0 or 1, got {tokens[9]!r}", path, line)
        inst.difficult = flag != 0
        if flag not in (0, 1):
            inst.attrs["difficult_value"] = flag
    return inst


def _read_label_file(path: Path, strict: bool, report: ReadReport) -> tuple[list[Instance], dict[str, Any]]:
    instances: list[Instance] = []
    meta: dict[str, Any] = {}
    with_flag = without_flag = 0
    for number, raw in read_text_lines(path):
        text = raw.strip()
        if not text:
            continue
        key, sep, value = text.partition(":")
        try:
            if sep and key in _HEADERS:
                if key in meta:
                    raise DatasetError(f"header {key!r} given twice", path, number)
                meta[key] = _parse_header(key, value.strip(), path, number)
                continue
            inst = _parse_object(text.split(), path, number)
        except DatasetError as exc:
            if strict:
                raise
            report.skip(exc)
            continue
        instances.append(inst)
        if len(text.split()) == 10:
            with_flag += 1
        else:
            without_flag += 1
    if without_flag and not with_flag:
        meta["no_difficult"] = True
    return instances, meta


# --------------------------------------------------------------------------- labelTxt writer


def _gsd_text(value: Any, where: str) -> str:
    if value is None:
        return "null"
    try:
        gsd = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{where}: meta gsd must be a number or None, got {value!r}") from None
    if not math.isfinite(gsd) or gsd <= 0:
        raise InputError(f"{where}: meta gsd must be a positive finite number, got {value!r}")
    return format_number(gsd)


def _label_text(sample: Sample) -> tuple[str, int]:
    """The label file's text and the number of scores it could not hold."""
    lines = []
    if "imagesource" in sample.meta:
        source = str(sample.meta["imagesource"])
        if "\n" in source or "\r" in source:
            raise InputError(f"{sample.image}: meta imagesource must be one line, got {source!r}")
        lines.append(f"imagesource:{source}")
    if "gsd" in sample.meta:
        lines.append(f"gsd:{_gsd_text(sample.meta['gsd'], sample.image)}")
    no_flag = bool(sample.meta.get("no_difficult")) and not any(
        inst.difficult or inst.ignore for inst in sample.instances
    )
    scores = 0
    for n, inst in enumerate(sample.instances):
        where = f"{sample.image} instance {n}"
        poly = _polygon_of(inst, where)
        fields = [_dota_number(v) for v in poly]
        fields.append(_check_token(inst.category, "category", where))
        if not no_flag:
            # DOTA's evaluation ignores difficult objects, which is what an ignored region needs.
            flag = inst.attrs.get("difficult_value", 1) if inst.difficult else int(inst.ignore)
            fields.append(str(int(flag)))
        lines.append(" ".join(fields))
        scores += inst.score is not None
    return "".join(f"{line}\n" for line in lines), scores


@register_format
class DotaFormat(DatasetFormat):
    """DOTA ``images/`` + ``labelTxt/`` (v1.0, v1.5, v2.0 share the file format)."""

    name = "dota"
    tasks: ClassVar[tuple[str, ...]] = ("detection", "oriented-detection")
    layout = "images/ + labelTxt/<stem>.txt (imagesource/gsd headers; 'x1 y1 ... y4 category difficult' lines)"
    image_dir = "images"
    label_dir: ClassVar[str] = "labelTxt"

    def open(self, root: str | PathLike[str], *, strict: bool = True) -> Dataset:
        """List ``labelTxt/*.txt`` and ``images/``; the label files are parsed while iterating."""
        root = Path(root)
        label_dir = root / self.label_dir
        if not label_dir.is_dir():
            raise DatasetError(f"no {self.label_dir}/ folder (expected the DOTA layout: {self.layout})", root)
        label_files = sorted(p for p in label_dir.iterdir() if p.suffix == ".txt" and p.is_file())
        images = index_images(root / self.image_dir)
        stems = {p.stem for p in label_files}
        unlabelled, missing = len(set(images) - stems), len(stems - set(images))
        if unlabelled:
            logger.info("%s: %d images have no label file and are not samples", root, unlabelled)
        if missing:
            logger.info("%s: %d label files have no image in %s/ (named <stem>.png)", root, missing, self.image_dir)

        def samples(report: ReadReport) -> Iterator[Sample]:
            for label_file in label_files:
                stem = label_file.stem
                try:
                    instances, meta = _read_label_file(label_file, strict, report)
                except DatasetError as exc:
                    if strict:
                        raise
                    report.skip(DatasetError(f"file skipped: {exc.message}", exc.path, exc.line))
                    continue
                name = images.get(stem, f"{stem}.png")
                yield Sample(image=f"{self.image_dir}/{name}", image_id=stem, instances=instances, meta=meta)

        return Dataset(root, self.name, samples)

    def write(
        self,
        root: str | PathLike[str],
        samples: Iterable[Sample],
        *,
        categories: Sequence[Category] | None = None,
        meta: dict[str, Any] | None = None,
    ) -> None:
        """Write ``labelTxt/<stem>.txt`` for every sample (each file atomically; all files are
        built and checked before the first is written).

        What DOTA cannot hold: instances with only a box are written as the box's 4 corners;
        ``ignore`` (crowd, ignored region) is written as difficult, which DOTA's evaluation ignores;
        scores are not written (a warning counts them; predictions go to :func:`write_dota_task1`);
        masks and other attributes are not written. ``categories`` and ``meta`` are not stored."""
        root = Path(root)
        outputs: dict[str, str] = {}
        dropped = 0
        for sample in samples:
            folder, _, name = sample.image.rpartition("/")
            if folder != self.image_dir or not name:
                raise InputError(f"image {sample.image!r} is not directly inside {self.image_dir}/ (DOTA layout)")
            stem = Path(name).stem
            if stem in outputs:
                raise InputError(f"two samples share the image stem {stem!r}; DOTA keeps one label file per stem")
            outputs[stem], scores = _label_text(sample)
            dropped += scores
        if dropped:
            logger.warning(
                "%d prediction scores not written: labelTxt holds ground truth (use write_dota_task1)", dropped
            )
        (root / self.label_dir).mkdir(parents=True, exist_ok=True)  # the layout exists even with no samples
        for stem, text in outputs.items():
            write_text(root / self.label_dir / f"{stem}.txt", text)


# --------------------------------------------------------------------------- submissions


def _task_files(folder: Path, prefix: str) -> list[Path]:
    if not folder.is_dir():
        raise DatasetError(f"no such folder (expected {prefix}<class>.txt files)", folder)
    return sorted(p for p in folder.iterdir() if p.name.startswith(prefix) and p.suffix == ".txt" and p.is_file())


def _read_task(folder: str | PathLike[str], task: int) -> dict[str, list[Instance]]:
    prefix = f"Task{task}_"
    n_coords = 8 if task == 1 else 4
    out: dict[str, list[Instance]] = {}
    for path in _task_files(Path(folder), prefix):
        category = path.stem[len(prefix) :]
        if not category:
            raise DatasetError(f"expected a file name {prefix}<class>.txt", path)
        for number, raw in read_text_lines(path):
            tokens = raw.split()
            if not tokens:
                continue
            if len(tokens) != 2 + n_coords:
                raise DatasetError(
                    f"expected '<image_id> <score> {n_coords} coordinates' ({2 + n_coords} fields), "
                    f"got {len(tokens)} fields",
                    path,
                    number,
                )
            score = parse_float(tokens[1], "score", path, number)
            coords = [parse_float(t, f"coordinate {k + 1}", path, number) for k, t in enumerate(tokens[2:])]
            if task == 1:
                inst = _polygon_instance(coords, category, score)
            else:
                x1, y1, x2, y2 = coords
                if x2 < x1 or y2 < y1:
                    raise DatasetError(f"expected xmin <= xmax and ymin <= ymax, got {coords}", path, number)
                inst = Instance(category=category, bbox=(x1, y1, x2, y2), score=score)
            out.setdefault(tokens[0], []).append(inst)
    return out


def read_dota_task1(folder: str | PathLike[str]) -> dict[str, list[Instance]]:
    """Read DOTA Task1 (oriented) submission files ``Task1_<class>.txt`` in ``folder``.

    Returns ``{image_id: [Instance(polygon, bbox=its HBB, score)]}``; errors name ``path:line``.
    """
    return _read_task(folder, 1)


def read_dota_task2(folder: str | PathLike[str]) -> dict[str, list[Instance]]:
    """Read DOTA Task2 (horizontal) submission files ``Task2_<class>.txt``: ``{image_id: [Instance(bbox, score)]}``."""
    return _read_task(folder, 2)


def _check_file_category(category: str, task: int) -> None:
    """Refuse a category that cannot be the ``<class>`` of a ``Task<n>_<class>.txt`` file name.

    The name must stay one plain file inside the output folder (``../../x`` would escape it) and
    must read back as the same category: ``a/b`` would write ``Task1_a/b.txt``, a file in a
    sub-folder that :func:`read_dota_task1` never looks at, so its predictions would be lost.
    """
    if not category:
        problem = "is empty"
    elif "/" in category or "\\" in category:
        problem = "contains a path separator"
    elif ".." in category:
        problem = "contains '..'"
    elif "\0" in category:
        problem = "contains a NUL character"
    else:
        try:
            too_long = len(os.fsencode(f"Task{task}_{category}.txt")) > 255
        except UnicodeEncodeError:
            problem = "cannot be encoded as a file name on this system"
        else:
            problem = "is too long for a file name" if too_long else ""
    if problem:
        raise InputError(
            f"category {category!r} {problem}: DOTA submissions store each category in a file "
            f"Task{task}_<category>.txt, which must be a plain file inside the output folder"
        )


def _write_task(
    folder: str | PathLike[str],
    predictions: Mapping[str, Iterable[Instance]],
    categories: Iterable[str] | None,
    task: int,
) -> list[Path]:
    per_class: dict[str, list[str]] = {name: [] for name in categories or ()}
    for image_id, instances in predictions.items():
        image_id = _check_token(str(image_id), "image id", "DOTA submission")
        for n, inst in enumerate(instances):
            where = f"image {image_id} prediction {n}"
            if inst.score is None or not math.isfinite(float(inst.score)):
                raise InputError(f"{where}: expected a finite score, got {inst.score!r}")
            _check_token(inst.category, "category", where)
            if task == 1:
                coords: Sequence[float] = _polygon_of(inst, where)
            else:
                if inst.bbox is None:
                    raise InputError(f"{where}: Task2 needs a box")
                coords = tuple(float(v) for v in inst.bbox)
            fields = [image_id, format_number(inst.score), *(_dota_number(v) for v in coords)]
            per_class.setdefault(inst.category, []).append(" ".join(fields))
    for category in per_class:  # all of them before the first write: a refused name leaves nothing half-written
        _check_file_category(category, task)
    paths = []
    for category, lines in per_class.items():
        path = Path(folder) / f"Task{task}_{category}.txt"
        write_text(path, "".join(f"{line}\n" for line in lines))
        paths.append(path)
    return paths


def write_dota_task1(
    folder: str | PathLike[str],
    predictions: Mapping[str, Iterable[Instance]],
    categories: Iterable[str] | None = None,
) -> list[Path]:
    """Write ``{image_id: [Instance]}`` as DOTA Task1 files, one ``Task1_<class>.txt`` per class.

    ``categories`` lists classes that get a file even when empty (the DOTA server expects one file
    per class). Instances with only a box are written as its 4 corners. Returns the written paths.
    """
    return _write_task(folder, predictions, categories, 1)


def write_dota_task2(
    folder: str | PathLike[str],
    predictions: Mapping[str, Iterable[Instance]],
    categories: Iterable[str] | None = None,
) -> list[Path]:
    """Write ``{image_id: [Instance]}`` as DOTA Task2 (HBB) files ``Task2_<class>.txt``."""
    return _write_task(folder, predictions, categories, 2)
