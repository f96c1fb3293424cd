"""Fuzz the detection readers: start from a valid file of each format, corrupt it, and require that
the reader either raises :class:`DatasetError` (``UnsafeDataError`` included) or yields samples
whose every number is what the file says — checked against an independent oracle parse of the
corrupted bytes — and that nothing is dropped without being counted (``strict=False``). Whatever
parses must also survive a write/read cycle unchanged."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from rsvl.datasets import Dataset, get_format
from rsvl.datasets.visdrone import VISDRONE_CATEGORIES
from rsvl.errors import DatasetError

FUZZ = settings(
    derandomize="RSVL_FUZZ_EXAMPLES" not in os.environ,  # deterministic in CI; random when asked for more
    max_examples=int(os.environ.get("RSVL_FUZZ_EXAMPLES", "50")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

GARBAGE = [b"nan", b"NaN", b"inf", b"-inf", b"1e308", b"1e400", b"-5", b"0", b"-0", b"9" * 400, b"", b"abc",
           b"\xff\xfe", b"../../etc/passwd", b"1.5", b"null", b"\x00", b",", b"<", b'"', b":", b"1e-320"]  # fmt: skip


@st.composite
def corrupted(draw: st.DrawFn, base: bytes) -> bytes:
    """``base`` with 1-3 line-level corruptions and maybe a truncation."""
    lines = base.split(b"\n")
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, len(lines) - 1))
        line = lines[i]
        kind = draw(st.sampled_from(["delete", "replace", "insert", "drop_line", "dup_line", "swap", "bytes"]))
        tokens = [m for m in _token_spans(line)]
        if kind in ("delete", "replace") and tokens:
            start, end = draw(st.sampled_from(tokens))
            new = b"" if kind == "delete" else draw(st.sampled_from(GARBAGE))
            lines[i] = line[:start] + new + line[end:]
        elif kind == "insert":
            at = draw(st.integers(0, len(line)))
            lines[i] = line[:at] + draw(st.sampled_from(GARBAGE)) + line[at:]
        elif kind == "drop_line" and len(lines) > 1:
            del lines[i]
        elif kind == "dup_line":
            lines.insert(i, line)
        elif kind == "swap":
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        elif kind == "bytes":
            at = draw(st.integers(0, len(line)))
            lines[i] = line[:at] + draw(st.binary(min_size=1, max_size=3)) + line[at:]
    data = b"\n".join(lines)
    if draw(st.integers(0, 4)) == 0:
        data = data[: draw(st.integers(0, len(data)))]
    return data


def _token_spans(line: bytes) -> list[tuple[int, int]]:
    """Spans of the 'words' of a line (runs without space, comma, angle brackets or quotes)."""
    spans, start = [], None
    for k, byte in enumerate(line + b" "):
        if chr(byte) in ' \t,<>":[]{}':
            if start is not None:
                spans.append((start, k))
            start = None
        elif start is None:
            start = k
    return spans


def _run(open_dataset: Callable[[bool], Dataset], check: Callable[[Dataset, list, bool], None], rewrite) -> None:
    """Open strictly and leniently; anything but DatasetError fails; parsed samples must pass ``check``."""
    for strict in (True, False):
        mode = "strict" if strict else "lenient"
        try:
            dataset = open_dataset(strict)
            samples = dataset.load()
        except DatasetError:
            event(f"{mode}: refused with DatasetError")
            continue
        event(f"{mode}: parsed, {'clean' if not dataset.report.problems else 'with counted skips'}")
        check(dataset, samples, strict)
        with tempfile.TemporaryDirectory() as out:
            again = rewrite(Path(out), dataset, samples)
            assert again == samples


def _decode_lines(data: bytes) -> list[str]:
    """The file's lines as rsvl's text readers see them: split at ``\n``, line ends stripped."""
    return [line.rstrip("\r\n") for line in data.decode("utf-8-sig").split("\n")]


def _f(token: str) -> float:
    return float(token)


def _int(token: str) -> int:
    try:
        return int(token)
    except ValueError:
        value = float(token)
        assert value.is_integer()
        return int(value)


def _oracle(match: Callable[..., bool]) -> Callable[..., bool]:
    """An oracle predicate that answers False (no match) where the file's text is not even parseable."""

    def safe(*args) -> bool:
        try:
            return match(*args)
        except (ValueError, TypeError, KeyError, IndexError, AttributeError, OverflowError):
            return False

    return safe


# --------------------------------------------------------------------------- DOTA

DOTA_BASE = (
    b"imagesource:GoogleEarth\ngsd:0.146343590398\n"
    b"2753.0 2408.0 2861.0 2385.0 2888.0 2468.0 2805.0 2502.0 plane 0\n"
    b"3445.0 3391.0 3484.0 3409.0 3478.0 3422.0 3437.0 3402.0 large-vehicle 1\n"
    b"10.5 20.25 30.0 20.25 30.0 40.0 10.5 40.0 ship\n"
)


@FUZZ
@given(corrupted(DOTA_BASE))
def test_fuzz_dota(data):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "labelTxt").mkdir()
        (root / "labelTxt" / "P0001.txt").write_bytes(data)
        fmt = get_format("dota")

        def check(dataset, samples, strict):
            if not samples:
                assert not strict and dataset.report.problems[-1].message.startswith("file skipped")  # unreadable file
                return
            (sample,) = samples
            lines = [line.strip() for line in _decode_lines(data) if line.strip()]
            headers = [line for line in lines if line.split(":")[0] in ("imagesource", "gsd") and ":" in line]
            objects = [line.split() for line in lines if line not in headers]
            assert len(sample.instances) + len(dataset.report.problems) + len(sample.meta) - (
                "no_difficult" in sample.meta
            ) == len(lines)
            candidates = objects if not strict else objects[: len(sample.instances)]
            for inst in sample.instances:
                assert any(_dota_matches(inst, tokens) for tokens in candidates), inst
            if strict:
                assert all(_dota_matches(i, t) for i, t in zip(sample.instances, objects, strict=True))

        def rewrite(out, dataset, samples):
            fmt.write(out, samples)
            return fmt.open(out).load()

        _run(lambda strict: fmt.open(root, strict=strict), check, rewrite)


@_oracle
def _dota_matches(inst, tokens) -> bool:
    if len(tokens) not in (9, 10):
        return False
    coords = tuple(_f(t) for t in tokens[:8])
    xs, ys = coords[0::2], coords[1::2]
    flag = len(tokens) == 10 and float(tokens[9]) != 0
    return (
        inst.polygon == coords
        and inst.bbox == (min(xs), min(ys), max(xs), max(ys))
        and inst.category == tokens[8]
        and inst.difficult == flag
        and all(math.isfinite(v) for v in coords)
    )


# --------------------------------------------------------------------------- VisDrone

VISDRONE_BASE = b"684,8,273,116,0,0,0,0\n406,119,265,70,1,4,0,1\n255,22,119,128,1,1,1,2,\n0.5,2,3.25,4,0.9,11,0,0\n"
_VISDRONE_NAMES = {c.id: c.name for c in VISDRONE_CATEGORIES}


@FUZZ
@given(corrupted(VISDRONE_BASE))
def test_fuzz_visdrone(data):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "annotations").mkdir()
        (root / "annotations" / "v.txt").write_bytes(data)
        fmt = get_format("visdrone")

        def check(dataset, samples, strict):
            if not samples:
                assert not strict and dataset.report.problems[-1].message.startswith("file skipped")
                return
            (sample,) = samples
            lines = [line for line in _decode_lines(data) if line.strip()]
            assert len(sample.instances) + dataset.report.skipped == len(lines)
            candidates = lines[: len(sample.instances)] if strict else lines
            for inst in sample.instances:
                assert any(_visdrone_matches(inst, line) for line in candidates), inst
            if strict:
                assert all(_visdrone_matches(i, line) for i, line in zip(sample.instances, lines, strict=True))

        def rewrite(out, dataset, samples):
            fmt.write(out, samples)
            return fmt.open(out).load()

        _run(lambda strict: fmt.open(root, strict=strict), check, rewrite)


@_oracle
def _visdrone_matches(inst, line: str) -> bool:
    tokens = [t.strip() for t in line.split(",")]
    if len(tokens) == 9 and tokens[-1] == "":
        tokens.pop()
    if len(tokens) != 8:
        return False
    left, top, width, height = (_f(t) for t in tokens[:4])
    category = int(float(tokens[5]))
    return (
        inst.bbox == (left, top, left + width, top + height)
        and width > 0
        and height > 0
        and inst.category == _VISDRONE_NAMES.get(category)
        and inst.ignore == (category == 0 or _f(tokens[4]) == 0)
        and float(inst.attrs["visdrone_score"]) == float(tokens[4])
        and inst.attrs["truncation"] == _int(tokens[6])
        and inst.attrs["occlusion"] == _int(tokens[7])
    )


# --------------------------------------------------------------------------- COCO

COCO_BASE = json.dumps(
    {
        "info": {"year": 2024},
        "images": [
            {"id": 1, "file_name": "a.jpg", "width": 8, "height": 6, "license": 1},
            {"id": 2, "file_name": "b.jpg", "width": 4, "height": 4},
        ],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [0.5, 1, 3, 2.25], "area": 6.75, "iscrowd": 0,
             "segmentation": [[0.5, 1, 3.5, 1, 3.5, 3.25]]},
            {"id": 2, "image_id": 1, "category_id": 2, "bbox": [1, 1, 2, 2], "area": 4, "iscrowd": 1,
             "segmentation": {"size": [6, 8], "counts": [10, 4, 34]}},
            {"id": 3, "image_id": 2, "category_id": 1, "bbox": [473.07, 395.93, 38.65, 28.67], "area": 1, "iscrowd": 0},
        ],
        "categories": [{"id": 1, "name": "car", "supercategory": "v"}, {"id": 2, "name": "crowd"}],
    },
    indent=1,
).encode()  # fmt: skip

JSON_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=4),
    st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=5),
    st.lists(st.integers(-3, 3), max_size=5),
    st.just("../../etc/passwd"),
)


@st.composite
def coco_documents(draw: st.DrawFn) -> bytes:
    """Either a line-level corruption of the JSON text or a structural one (a field replaced/deleted)."""
    if draw(st.booleans()):
        return draw(corrupted(COCO_BASE))
    doc = json.loads(COCO_BASE)
    for _ in range(draw(st.integers(1, 3))):
        section = draw(st.sampled_from(["images", "annotations", "categories"]))
        entry = draw(st.sampled_from(doc[section])) if doc[section] else None
        if entry is None:
            continue
        key = draw(st.sampled_from([*entry.keys(), "extra"]))
        if draw(st.integers(0, 3)) == 0:
            entry.pop(key, None)
        else:
            entry[key] = draw(JSON_VALUES)
    return json.dumps(doc, allow_nan=True).encode()


@FUZZ
@given(coco_documents())
def test_fuzz_coco(data):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "annotations.json").write_bytes(data)
        fmt = get_format("coco")

        def check(dataset, samples, strict):
            doc = json.loads(data.decode("utf-8-sig"))
            images: dict = {}
            for img in doc["images"]:  # the first image with an id wins; later duplicates are skipped
                if isinstance(img, dict) and type(img.get("id")) is int:
                    images.setdefault(img["id"], img)
            cats = {c["id"]: c["name"] for c in doc.get("categories", [])}
            anns = [a for a in doc.get("annotations", []) if isinstance(a, dict)]
            problems = [p for p in dataset.report.problems if p.message.startswith("annotations[")]
            assert sum(len(s.instances) for s in samples) + len(problems) == len(doc.get("annotations", []))
            for sample in samples:
                img = images[sample.image_id]
                assert sample.image == f"images/{img['file_name']}"
                assert (sample.width, sample.height) == (img.get("width"), img.get("height"))
                own = [a for a in anns if a.get("image_id") == sample.image_id]
                if strict:
                    assert len(own) == len(sample.instances)
                for inst in sample.instances:
                    matches = [a for a in own if a.get("id") == inst.id] if inst.id is not None else own
                    assert any(_coco_matches(inst, a, cats) for a in matches), inst

        def rewrite(out, dataset, samples):
            fmt.write(out, samples, categories=dataset.categories, meta=dataset.meta)
            again = fmt.open(out).load()
            for before, after in zip(samples, again, strict=True):  # the writer numbers id-less annotations
                for inst_before, inst_after in zip(before.instances, after.instances, strict=True):
                    if inst_before.id is None:
                        inst_after.id = None
                    if "area" not in inst_before.attrs:  # ... and fill in the area COCO tools need
                        inst_after.attrs.pop("area")
            return again

        _run(lambda strict: fmt.open(root, strict=strict), check, rewrite)


@_oracle
def _coco_matches(inst, ann: dict, cats: dict) -> bool:
    if "bbox" in ann:
        x, y, w, h = ann["bbox"]
        if inst.bbox != (x, y, x + w, y + h) or w < 0 or h < 0:
            return False
    elif inst.bbox is not None:
        return False
    return (
        inst.category == cats[ann["category_id"]]
        and inst.ignore == bool(ann.get("iscrowd", 0))
        and inst.mask == ann.get("segmentation")
        and inst.attrs.get("area") == ann.get("area")
    )


# --------------------------------------------------------------------------- VOC

VOC_BASE = b"""<annotation>
    <folder>VOC2007</folder>
    <filename>000005.jpg</filename>
    <size>
        <width>500</width>
        <height>375</height>
        <depth>3</depth>
    </size>
    <object>
        <name>chair</name>
        <pose>Rear</pose>
        <truncated>0</truncated>
        <difficult>1</difficult>
        <bndbox>
            <xmin>263</xmin>
            <ymin>211</ymin>
            <xmax>324.5</xmax>
            <ymax>339</ymax>
        </bndbox>
    </object>
    <object>
        <type>robndbox</type>
        <name>golffield</name>
        <robndbox>
            <x_left_top>133</x_left_top><y_left_top>237</y_left_top>
            <x_right_top>684</x_right_top><y_right_top>200</y_right_top>
            <x_right_bottom>700</x_right_bottom><y_right_bottom>672</y_right_bottom>
            <x_left_bottom>133</x_left_bottom><y_left_bottom>672</y_left_bottom>
        </robndbox>
    </object>
</annotation>
"""


@FUZZ
@given(corrupted(VOC_BASE))
def test_fuzz_voc(data):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "Annotations").mkdir()
        (root / "Annotations" / "000005.xml").write_bytes(data)
        fmt = get_format("voc")

        def check(dataset, samples, strict):
            if not samples:
                assert not strict and dataset.report.problems[-1].message.startswith("file skipped")
                return
            (sample,) = samples
            tree = ET.fromstring(data)  # the stdlib parser as the oracle
            objects = tree.findall("object")
            assert len(sample.instances) + dataset.report.skipped == len(objects)
            candidates = objects[: len(sample.instances)] if strict else objects
            for inst in sample.instances:
                assert any(_voc_matches(inst, obj) for obj in candidates), inst
            if strict:
                assert all(_voc_matches(i, o) for i, o in zip(sample.instances, objects, strict=True))

        def rewrite(out, dataset, samples):
            fmt.write(out, samples, meta=dataset.meta)
            return fmt.open(out).load()

        _run(lambda strict: fmt.open(root, strict=strict), check, rewrite)


@_oracle
def _voc_matches(inst, obj: ET.Element) -> bool:
    name = (obj.findtext("name") or "").strip()
    box = obj.find("bndbox")
    rbox = obj.find("robndbox")
    if box is not None:
        xmin, ymin, xmax, ymax = (_f(box.findtext(t)) for t in ("xmin", "ymin", "xmax", "ymax"))
        if inst.bbox != (xmin - 1, ymin - 1, xmax, ymax):
            return False
    if rbox is not None:
        corners = ("x_left_top", "y_left_top", "x_right_top", "y_right_top",
                   "x_right_bottom", "y_right_bottom", "x_left_bottom", "y_left_bottom")  # fmt: skip
        if inst.polygon != tuple(_f(rbox.findtext(t)) for t in corners):
            return False
    difficult = (obj.findtext("difficult") or "0").strip()
    return inst.category == name and inst.difficult == (float(difficult) == 1) and (box is not None or rbox is not None)


# --------------------------------------------------------------------------- deepforest

DEEPFOREST_BASE = (
    b"image_path,xmin,ymin,xmax,ymax,label,score\n"
    b"OSBS_029.tif,203,67,227,90,Tree,0.9\n"
    b"OSBS_029.tif,256,99,288,140,Tree,\n"
    b"empty.png,0,0,0,0,Tree,\n"
    b"SOAP_061.png,149.5,105,173,129.25,Dead,0.5\n"
)


@FUZZ
@given(corrupted(DEEPFOREST_BASE))
def test_fuzz_deepforest(data):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "annotations.csv").write_bytes(data)
        fmt = get_format("deepforest")

        def check(dataset, samples, strict):
            rows = list(csv.reader(io.StringIO(data.decode("utf-8-sig"), newline="")))
            rows = [[c.strip() for c in r] for r in rows if any(c.strip() for c in r)]
            header, body = rows[0], rows[1:]
            records = [dict(zip(header, r, strict=True)) for r in body if len(r) == len(header)]
            instances = [(s.image, i) for s in samples for i in s.instances]
            empties = [s for s in samples if "empty_row" in s.meta]
            assert len(instances) + dataset.report.skipped <= len(body)
            assert len(instances) + len(empties) + dataset.report.skipped >= len(samples)
            if strict:
                assert dataset.report.skipped == 0
            for image, inst in instances:
                assert any(_deepforest_matches(image, inst, rec) for rec in records), inst

        def rewrite(out, dataset, samples):
            fmt.write(out, samples, meta=dataset.meta)
            return fmt.open(out).load()

        _run(lambda strict: fmt.open(root, strict=strict), check, rewrite)


@_oracle
def _deepforest_matches(image: str, inst, rec: dict) -> bool:
    box = tuple(_f(rec[k]) for k in ("xmin", "ymin", "xmax", "ymax"))
    score = _f(rec["score"]) if rec.get("score") else None
    return rec["image_path"] == image and inst.bbox == box and inst.category == rec["label"] and inst.score == score
