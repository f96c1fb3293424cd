"""Pascal VOC XML annotations (VOC, DIOR, DIOR-R, deepforest/RectLabel XML).

Layout: ``JPEGImages/`` + ``Annotations/<stem>.xml`` + optional ``ImageSets/Main/<split>.txt`` lists
(one image stem per line; per-class lists such as ``car_train.txt`` are ignored). ``open`` takes
other folder names for layouts such as DIOR's (``annotations="Annotations/Horizontal Bounding
Boxes", images="JPEGImages-trainval"``).

Pixel convention. VOC's ``xmin..xmax`` are 1-based *inclusive* pixel indices: a box over the
whole W-pixel-wide image is ``xmin=1, xmax=W``. rsvl's boxes are pixel edges (0..W), so by default
(``one_based=True``) ``bbox = (xmin - 1, ymin - 1, xmax, ymax)`` and the writer adds the 1 back —
the conversion detectron2's VOC loader uses. deepforest's XML (RectLabel exports) uses the same
tags with edge coordinates, which is what deepforest's CSV holds too: open such folders with
``one_based=False`` (numbers taken as they are). ``Dataset.meta["one_based"]`` records the choice
and the writer follows it. Integer coordinates convert exactly both ways; for fractional ones the
file's four numbers are kept in ``attrs["voc_bndbox"]`` whenever ``x1 + 1`` would not give ``xmin``
back exactly, so rewriting a file never changes a number.

Fields: ``filename`` -> ``Sample.image`` (``JPEGImages/<filename>``; a name leaving that folder
raises :class:`~rsvl.errors.UnsafeDataError`), ``size`` -> ``width``/``height`` and
``meta["depth"]``; ``object``: ``name`` -> category, ``difficult`` -> ``difficult``, ``pose``,
``truncated``, ``occluded`` -> ``attrs``; ``bndbox`` -> ``bbox``; DIOR-R's ``robndbox`` with
``x_left_top, y_left_top, x_right_top, ..., y_left_bottom`` -> ``polygon`` (that vertex order, the
numbers as given) and, without a ``bndbox``, ``bbox`` = the polygon's enclosing box. An ``ignore``
element (written by rsvl for COCO crowd / VisDrone ignored regions) -> ``ignore``. Every other
element (``folder``, ``source``, ``segmented``, DIOR-R's ``type``/``angle``...) is kept as text or
nested dicts in ``Sample.meta`` / ``Instance.attrs`` and written back. roLabelImg's
``robndbox`` (``cx, cy, w, h, angle``) is not supported and raises a clear error.

Parsing uses the stdlib expat parser directly (the same handlers ``defusedxml`` installs, without
adding a dependency): DTDs, entity declarations and external entities are refused with
:class:`~rsvl.errors.UnsafeDataError` (no XML bombs, no external reads), and every element keeps
its line number for ``path:line`` errors.
"""

from __future__ import annotations

import logging
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Iterator, Sequence
from os import PathLike
from pathlib import Path
from typing import Any, ClassVar
from xml.parsers import expat

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
    resolve_inside,
)
from rsvl.datasets.dota import index_images
from rsvl.datasets.sample import Category, Instance, Sample
from rsvl.errors import DatasetError, InputError, UnsafeDataError
from rsvl.geometry.boxes import poly_to_hbb
from rsvl.utils.atomic import write_text

logger = logging.getLogger(__name__)

__all__ = ["ROBNDBOX_TAGS", "VocFormat", "parse_xml"]

ROBNDBOX_TAGS = (
    "x_left_top",
    "y_left_top",
    "x_right_top",
    "y_right_top",
    "x_right_bottom",
    "y_right_bottom",
    "x_left_bottom",
    "y_left_bottom",
)
"""DIOR-R's oriented-box corner tags, in the order they become ``Instance.polygon``."""

_BNDBOX_TAGS = ("xmin", "ymin", "xmax", "ymax")
_RAW_BNDBOX = "voc_bndbox"
_KNOWN_OBJECT = ("name", "pose", "truncated", "occluded", "difficult", "ignore", "bndbox", "robndbox")
_INT_ATTRS = ("truncated", "occluded")
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")
_XML_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")


# --------------------------------------------------------------------------- safe XML with line numbers


class _ForbiddenXMLError(Exception):
    def __init__(self, what: str):
        self.what = what


def parse_xml(path: Path) -> tuple[ET.Element, dict[ET.Element, int]]:
    """Parse an XML file safely; return the root element and ``{element: line}``.

    Raises:
        UnsafeDataError: on a DTD, an entity declaration or an external entity reference.
        DatasetError: on malformed XML (with the line expat stopped at) or an unreadable file.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DatasetError(f"cannot open: {exc.strerror or exc}", path) from None
    builder = ET.TreeBuilder()
    lines: dict[ET.Element, int] = {}
    parser = expat.ParserCreate()

    def start(tag: str, attrs: dict[str, str]) -> None:
        lines[builder.start(tag, attrs)] = parser.CurrentLineNumber

    def refuse(what: str):
        def handler(*_: Any) -> None:
            raise _ForbiddenXMLError(what)

        return handler

    parser.buffer_text = True
    parser.StartElementHandler = start
    parser.EndElementHandler = builder.end
    parser.CharacterDataHandler = builder.data
    parser.StartDoctypeDeclHandler = refuse("a DTD (<!DOCTYPE>)")
    parser.EntityDeclHandler = refuse("an entity declaration")
    parser.UnparsedEntityDeclHandler = refuse("an unparsed entity declaration")
    parser.ExternalEntityRefHandler = refuse("an external entity reference")
    try:
        parser.Parse(data, True)
    except _ForbiddenXMLError as exc:
        raise UnsafeDataError(
            f"XML with {exc.what} is refused (entity expansion and external reads are unsafe)",
            path,
            parser.CurrentLineNumber,
        ) from None
    except expat.ExpatError as exc:
        raise DatasetError(
            f"invalid XML: {expat.ErrorString(exc.code)} (column {exc.offset + 1})", path, exc.lineno
        ) from None
    return builder.close(), lines


def _text(elem: ET.Element) -> str:
    return (elem.text or "").strip()


def _to_value(elem: ET.Element) -> Any:
    """An element as plain data: its text, or a dict of children (``@attr``, ``#text``, repeated
    tags as lists) — reversible by :func:`_add_value`."""
    children = list(elem)
    if not children and not elem.attrib:
        return _text(elem)
    out: dict[str, Any] = {f"@{k}": v for k, v in elem.attrib.items()}
    if _text(elem):
        out["#text"] = _text(elem)
    repeated: set[str] = set()
    for child in children:
        value = _to_value(child)
        if child.tag not in out:
            out[child.tag] = value
        elif child.tag in repeated:
            out[child.tag].append(value)
        else:
            out[child.tag] = [out[child.tag], value]
            repeated.add(child.tag)
    return out


def _scalar_text(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (int, float)):
        return format_number(value)
    return "" if value is None else str(value)


def _add_value(parent: ET.Element, tag: str, value: Any) -> None:
    if not _XML_NAME.match(tag) or tag.lower().startswith("xml"):
        raise InputError(f"{tag!r} cannot be written as an XML element name")
    if isinstance(value, (list, tuple)):
        for item in value:
            _add_value(parent, tag, item)
        return
    elem = ET.SubElement(parent, tag)
    if isinstance(value, dict):
        for key, item in value.items():
            if key.startswith("@"):
                elem.set(key[1:], _scalar_text(item))
            elif key == "#text":
                elem.text = _scalar_text(item)
            else:
                _add_value(elem, key, item)
    else:
        elem.text = _scalar_text(value)


# --------------------------------------------------------------------------- reading one file


class _FileReader:
    def __init__(self, path: Path, lines: dict[ET.Element, int], one_based: bool):
        self.path = path
        self.lines = lines
        self.one_based = one_based

    def error(self, message: str, elem: ET.Element) -> DatasetError:
        return DatasetError(message, self.path, self.lines.get(elem))

    def single(self, parent: ET.Element, tag: str, required: bool = True) -> ET.Element | None:
        found = parent.findall(tag)
        if len(found) > 1:
            raise self.error(f"<{parent.tag}> has {len(found)} <{tag}> elements, expected one", found[1])
        if not found:
            if required:
                raise self.error(f"<{parent.tag}> has no <{tag}>", parent)
            return None
        return found[0]

    def number(self, parent: ET.Element, tag: str) -> float:
        elem = self.single(parent, tag)
        assert elem is not None
        return parse_float(_text(elem), f"<{tag}>", self.path, self.lines.get(elem))

    def integer(self, elem: ET.Element) -> int:
        return parse_int(_text(elem), f"<{elem.tag}>", self.path, self.lines.get(elem))

    def flag(self, elem: ET.Element) -> bool:
        value = self.integer(elem)
        if value not in (0, 1):
            raise self.error(f"<{elem.tag}>: expected 0 or 1, got {_text(elem)!r}", elem)
        return bool(value)

    def only(self, parent: ET.Element, tags: Sequence[str]) -> None:
        for child in parent:
            if child.tag not in tags:
                raise self.error(f"unexpected <{child.tag}> in <{parent.tag}> (expected {', '.join(tags)})", child)

    def size(self, elem: ET.Element) -> tuple[int | None, int | None, int | None]:
        self.only(elem, ("width", "height", "depth"))
        values = []
        for tag in ("width", "height", "depth"):
            child = self.single(elem, tag, required=False)
            value = None if child is None else self.integer(child)
            if value is not None and value < 0:
                raise self.error(f"<{tag}>: expected a non-negative integer, got {value}", child)  # type: ignore[arg-type]
            values.append(value)
        return values[0], values[1], values[2]

    def bndbox(self, elem: ET.Element, attrs: dict[str, Any]) -> tuple[float, float, float, float]:
        self.only(elem, _BNDBOX_TAGS)
        xmin, ymin, xmax, ymax = (self.number(elem, tag) for tag in _BNDBOX_TAGS)
        shift = 1.0 if self.one_based else 0.0
        bbox = (xmin - shift, ymin - shift, xmax, ymax)
        if not (bbox[2] > bbox[0] and bbox[3] > bbox[1]):
            rule = "xmax >= xmin and ymax >= ymin" if self.one_based else "xmax > xmin and ymax > ymin"
            raise self.error(f"<bndbox>: expected {rule}, got {[xmin, ymin, xmax, ymax]}", elem)
        if (bbox[0] + shift, bbox[1] + shift) != (xmin, ymin):
            attrs[_RAW_BNDBOX] = [xmin, ymin, xmax, ymax]
        return bbox

    def robndbox(self, elem: ET.Element) -> tuple[float, ...]:
        if elem.find("cx") is not None or elem.find("angle") is not None:
            corners = ", ".join(ROBNDBOX_TAGS)
            message = (
                f"roLabelImg <robndbox> (cx, cy, w, h, angle) is not supported; expected DIOR-R corners ({corners})"
            )
            raise self.error(message, elem)
        self.only(elem, ROBNDBOX_TAGS)
        return tuple(self.number(elem, tag) for tag in ROBNDBOX_TAGS)

    def instance(self, obj: ET.Element) -> Instance:
        name_elem = self.single(obj, "name")
        assert name_elem is not None
        name = _text(name_elem)
        if not name:
            raise self.error("<name>: expected a category name", name_elem)
        inst = Instance(category=name)
        for tag in _KNOWN_OBJECT:
            self.single(obj, tag, required=False)  # refuses duplicates
        for child in obj:
            tag = child.tag
            if tag == "name":
                continue
            if tag == "difficult":
                inst.difficult = self.flag(child)
            elif tag == "ignore":
                inst.ignore = self.flag(child)
            elif tag in _INT_ATTRS:
                inst.attrs[tag] = self.integer(child)
            elif tag == "pose":
                inst.attrs["pose"] = _text(child)
            elif tag == "bndbox":
                inst.bbox = self.bndbox(child, inst.attrs)
            elif tag == "robndbox":
                inst.polygon = self.robndbox(child)
            elif tag == _RAW_BNDBOX:
                raise self.error(f"<{tag}> is reserved for rsvl's exact-number bookkeeping", child)
            else:
                inst.attrs[tag] = _to_value(child)
        if inst.bbox is None and inst.polygon is None:
            raise self.error("<object> has neither <bndbox> nor <robndbox>", obj)
        if inst.bbox is None:
            inst.bbox = tuple(float(v) for v in poly_to_hbb(np.asarray(inst.polygon)))  # type: ignore[assignment]
        return inst


# --------------------------------------------------------------------------- writing one file


def _bndbox_numbers(inst: Instance, one_based: bool) -> list[float]:
    assert inst.bbox is not None
    shift = 1.0 if one_based else 0.0
    x1, y1, x2, y2 = (float(v) for v in inst.bbox)
    raw = inst.attrs.get(_RAW_BNDBOX)
    if isinstance(raw, (list, tuple)) and len(raw) == 4:
        try:
            values = [float(v) for v in raw]
        except (TypeError, ValueError):
            values = []
        if values and (values[0] - shift, values[1] - shift, values[2], values[3]) == (x1, y1, x2, y2):
            return values
    return [x1 + shift, y1 + shift, x2, y2]


def _object_element(parent: ET.Element, inst: Instance, one_based: bool, where: str) -> None:
    obj = ET.SubElement(parent, "object")
    ET.SubElement(obj, "name").text = inst.category
    for tag in ("pose", *_INT_ATTRS):
        if tag in inst.attrs:
            _add_value(obj, tag, inst.attrs[tag])
    ET.SubElement(obj, "difficult").text = "1" if inst.difficult else "0"
    if inst.ignore:
        ET.SubElement(obj, "ignore").text = "1"
    for key, value in inst.attrs.items():
        if key in ("pose", *_INT_ATTRS, _RAW_BNDBOX, "bbox_xywh"):
            continue
        if key in _KNOWN_OBJECT:
            raise InputError(f"{where}: attribute {key!r} collides with the VOC element <{key}>")
        _add_value(obj, key, value)
    polygon = None if inst.polygon is None else tuple(float(v) for v in inst.polygon)
    if polygon is not None and len(polygon) != 8:
        raise InputError(f"{where}: <robndbox> needs a 4-vertex polygon (8 numbers), got {len(polygon)}")
    if inst.bbox is None and polygon is None:
        raise InputError(f"{where}: instance has neither a box nor a polygon")
    derived = None if polygon is None else tuple(float(v) for v in poly_to_hbb(np.asarray(polygon)))
    if inst.bbox is not None and (polygon is None or tuple(float(v) for v in inst.bbox) != derived):
        box = ET.SubElement(obj, "bndbox")
        for tag, value in zip(_BNDBOX_TAGS, _bndbox_numbers(inst, one_based), strict=True):
            ET.SubElement(box, tag).text = format_number(value)
    if polygon is not None:
        rbox = ET.SubElement(obj, "robndbox")
        for tag, value in zip(ROBNDBOX_TAGS, polygon, strict=True):
            ET.SubElement(rbox, tag).text = format_number(value)


def _xml_text(sample: Sample, filename: str, one_based: bool) -> str:
    """One sample as VOC XML: folder, filename, other meta, size, segmented, objects (VOC's order)."""
    root = ET.Element("annotation")
    for key in ("filename", "size", "object"):
        if key in sample.meta:
            raise InputError(f"{sample.image}: sample meta must not hold {key!r}: it is written from the sample")
    if "folder" in sample.meta:
        _add_value(root, "folder", sample.meta["folder"])
    ET.SubElement(root, "filename").text = filename
    for key, value in sample.meta.items():
        if key not in ("folder", "depth", "segmented"):
            _add_value(root, key, value)
    depth = sample.meta.get("depth")
    if sample.width is not None or sample.height is not None or depth is not None:
        size = ET.SubElement(root, "size")
        for tag, value in (("width", sample.width), ("height", sample.height), ("depth", depth)):
            if value is not None:
                ET.SubElement(size, tag).text = str(int(value))
    if "segmented" in sample.meta:
        _add_value(root, "segmented", sample.meta["segmented"])
    for n, inst in enumerate(sample.instances):
        _object_element(root, inst, one_based, f"{sample.image} instance {n}")
    ET.indent(root, space="    ")
    return ET.tostring(root, encoding="unicode") + "\n"


# --------------------------------------------------------------------------- the format


def _read_file(
    root: Path,
    image_dir: str,
    path: Path,
    one_based: bool,
    strict: bool,
    report: ReadReport,
    find_image: Callable[[str], str],
) -> Sample:
    """Parse one annotation file into a sample (bad objects raise, or are counted when not strict)."""
    tree, lines = parse_xml(path)
    reader = _FileReader(path, lines, one_based)
    if tree.tag != "annotation":
        raise reader.error(f"root element is <{tree.tag}>, expected <annotation>", tree)
    for tag in ("filename", "size"):
        reader.single(tree, tag, required=False)
    sample = Sample(image="", image_id=path.stem)
    filename = None
    for child in tree:
        if child.tag == "filename":
            filename = _text(child)
            resolve_inside(root / image_dir, filename, path, lines.get(child))
        elif child.tag == "size":
            sample.width, sample.height, depth = reader.size(child)
            if depth is not None:
                sample.meta["depth"] = depth
        elif child.tag == "object":
            try:
                sample.instances.append(reader.instance(child))
            except DatasetError as exc:
                if strict:
                    raise
                report.skip(exc)
        elif child.tag == "depth":
            raise reader.error("<depth> belongs inside <size>", child)
        else:
            sample.meta[child.tag] = _to_value(child)
    if filename is None:
        filename = find_image(path.stem)
    sample.image = f"{image_dir}/{filename}" if image_dir else filename
    return sample


def _read_splits(folder: Path) -> dict[str, str]:
    """``{stem: split}`` from ``ImageSets/Main/<split>.txt`` (specific lists win over ``trainval``)."""
    if not folder.is_dir():
        return {}
    members: dict[str, set[str]] = {}
    for path in sorted(folder.glob("*.txt")):
        if "_" in path.stem:
            continue  # per-class lists: <class>_<split>.txt
        for _, raw in read_text_lines(path):
            tokens = raw.split()
            if tokens:
                members.setdefault(tokens[0], set()).add(path.stem)
    out: dict[str, str] = {}
    for stem, splits in members.items():
        specific = splits - {"trainval"} if len(splits) > 1 else splits
        if len(specific) > 1:
            raise DatasetError(f"image {stem!r} is listed in several splits: {', '.join(sorted(specific))}", folder)
        out[stem] = next(iter(specific))
    return out


@register_format
class VocFormat(DatasetFormat):
    """Pascal VOC ``JPEGImages/`` + ``Annotations/*.xml`` (+ ``ImageSets/Main`` split lists)."""

    name = "voc"
    tasks: ClassVar[tuple[str, ...]] = ("detection", "oriented-detection")
    layout = "JPEGImages/ + Annotations/<stem>.xml (+ ImageSets/Main/<split>.txt); DIOR-R robndbox corners"
    image_dir = "JPEGImages"
    ann_dir: ClassVar[str] = "Annotations"
    sets_dir: ClassVar[str] = "ImageSets/Main"

    def image_relpath(self, stem: str, suffix: str = ".jpg", label: str | None = None) -> str:
        return f"{self.image_dir}/{stem}{suffix}"

    def open(
        self,
        root: str | PathLike[str],
        *,
        strict: bool = True,
        one_based: bool = True,
        annotations: str | None = None,
        images: str | None = None,
    ) -> Dataset:
        """List the XML files (parsed while iterating) and read the split lists.

        Args:
            root: dataset folder.
            strict: raise at the first bad object (else skip it, or the whole file when the file
                itself is unreadable, and count it in ``report``). Unsafe XML always raises.
            one_based: VOC's 1-based inclusive coordinates (True) or edge coordinates as in
                deepforest's XML (False).
            annotations, images: folder names relative to ``root`` (default ``Annotations``,
                ``JPEGImages``).
        """
        root = Path(root)
        ann_dir = root / (annotations or self.ann_dir)
        image_dir = (images or self.image_dir).strip("/")
        if not ann_dir.is_dir():
            raise DatasetError(f"no {ann_dir.name}/ folder (expected the VOC layout: {self.layout})", root)
        xml_files = sorted(p for p in ann_dir.iterdir() if p.suffix.lower() == ".xml" and p.is_file())
        splits = _read_splits(root / self.sets_dir)
        image_index: dict[str, str] | None = None

        def find_image(stem: str) -> str:
            nonlocal image_index
            if image_index is None:
                image_index = index_images(root / image_dir, _IMAGE_SUFFIXES)
            return image_index.get(stem, f"{stem}.jpg")

        def samples(report: ReadReport) -> Iterator[Sample]:
            for xml_file in xml_files:
                try:
                    sample = _read_file(root, image_dir, xml_file, one_based, strict, report, find_image)
                except UnsafeDataError:
                    raise
                except DatasetError as exc:
                    if strict:
                        raise
                    report.skip(DatasetError(f"file skipped: {exc.message}", exc.path, exc.line))
                    continue
                sample.split = splits.get(xml_file.stem)
                yield sample

        return Dataset(root, self.name, samples, meta={"one_based": one_based})

    def write(
        self,
        root: str | PathLike[str],
        samples: Iterable[Sample],
        *,
        categories: Sequence[Category] | None = None,
        meta: dict[str, Any] | None = None,
        one_based: bool | None = None,
        annotations: str | None = None,
        images: str | None = None,
    ) -> None:
        """Write ``Annotations/<stem>.xml`` per sample and ``ImageSets/Main/<split>.txt`` lists
        (plus ``trainval.txt`` when both train and val exist). Every file is built and checked
        before the first is written; each is written atomically. ``one_based`` defaults to
        ``meta["one_based"]`` (True when absent). Scores are not written (VOC XML is ground truth;
        a warning counts them) and masks are not written."""
        root = Path(root)
        if one_based is None:
            one_based = bool((meta or {}).get("one_based", True))
        image_dir = (images or self.image_dir).strip("/")
        ann_dir = root / (annotations or self.ann_dir)
        prefix = f"{image_dir}/" if image_dir else ""
        outputs: dict[str, str] = {}
        splits: dict[str, list[str]] = {}
        scores = 0
        for sample in samples:
            if not sample.image.startswith(prefix) or len(sample.image) == len(prefix):
                raise InputError(f"image {sample.image!r} is not inside {image_dir}/ (VOC layout)")
            filename = sample.image[len(prefix) :]
            stem = str(sample.image_id) if isinstance(sample.image_id, str) and sample.image_id else Path(filename).stem
            if stem in outputs or "/" in stem or not stem:
                raise InputError(f"sample {sample.image!r}: annotation stem {stem!r} is empty, nested or used twice")
            outputs[stem] = _xml_text(sample, filename, one_based)
            scores += sum(inst.score is not None for inst in sample.instances)
            if sample.split:
                splits.setdefault(sample.split, []).append(stem)
        if "train" in splits and "val" in splits and "trainval" not in splits:
            splits["trainval"] = splits["train"] + splits["val"]
        for split in splits:
            if "_" in split or "/" in split or split.startswith("."):
                raise InputError(f"split name {split!r} cannot be a VOC ImageSets list name")
        if scores:
            logger.warning("%d prediction scores not written: VOC XML holds ground truth (use COCO results)", scores)
        ann_dir.mkdir(parents=True, exist_ok=True)  # the layout exists even with no samples
        for stem, text in outputs.items():
            write_text(ann_dir / f"{stem}.xml", text)
        for split, stems in splits.items():
            write_text(root / self.sets_dir / f"{split}.txt", "".join(f"{s}\n" for s in stems))
