"""Pascal VOC XML reader/writer: VOC, DIOR-R oriented boxes, and deepforest's real XML samples."""

from __future__ import annotations

import csv
import re
import shutil
from pathlib import Path

import pytest

from rsvl.data import sample_path
from rsvl.datasets import Instance, Sample, get_format
from rsvl.errors import DatasetError, InputError, UnsafeDataError

VOC_XML = """<annotation>
\t<folder>VOC2007</folder>
\t<filename>000005.jpg</filename>
\t<source>
\t\t<database>The VOC2007 Database</database>
\t\t<annotation>PASCAL VOC2007</annotation>
\t</source>
\t<size>
\t\t<width>500</width>
\t\t<height>375</height>
\t\t<depth>3</depth>
\t</size>
\t<segmented>0</segmented>
\t<object>
\t\t<name>chair</name>
\t\t<pose>Rear</pose>
\t\t<truncated>0</truncated>
\t\t<difficult>0</difficult>
\t\t<bndbox>
\t\t\t<xmin>263</xmin>
\t\t\t<ymin>211</ymin>
\t\t\t<xmax>324</xmax>
\t\t\t<ymax>339</ymax>
\t\t</bndbox>
\t</object>
\t<object>
\t\t<name>chair</name>
\t\t<pose>Unspecified</pose>
\t\t<truncated>1</truncated>
\t\t<difficult>1</difficult>
\t\t<bndbox>
\t\t\t<xmin>1</xmin>
\t\t\t<ymin>1</ymin>
\t\t\t<xmax>500</xmax>
\t\t\t<ymax>375</ymax>
\t\t</bndbox>
\t</object>
</annotation>
"""

# DIOR-R's oriented-box object, in the layout of its Annotations/Oriented Bounding Boxes/*.xml.
DIOR_R_XML = """<annotation>
    <filename>00001.jpg</filename>
    <source><database>Unknown</database></source>
    <size><width>800</width><height>800</height><depth>3</depth></size>
    <segmented>0</segmented>
    <object>
        <type>robndbox</type>
        <name>golffield</name>
        <pose>Unspecified</pose>
        <truncated>0</truncated>
        <difficult>0</difficult>
        <robndbox>
            <x_left_top>133</x_left_top><y_left_top>237</y_left_top>
            <x_right_top>684</x_right_top><y_right_top>200</y_right_top>
            <x_right_bottom>700</x_right_bottom><y_right_bottom>672</y_right_bottom>
            <x_left_bottom>133</x_left_bottom><y_left_bottom>672</y_left_bottom>
        </robndbox>
        <angle>0</angle>
    </object>
</annotation>
"""


def _voc(root: Path, files: dict[str, str | bytes], sets: dict[str, str] | None = None) -> Path:
    (root / "Annotations").mkdir(parents=True)
    (root / "JPEGImages").mkdir()
    for name, text in files.items():
        (root / "Annotations" / name).write_bytes(text if isinstance(text, bytes) else text.encode())
    for name, text in (sets or {}).items():
        (root / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
        (root / "ImageSets" / "Main" / name).write_text(text)
    return root


def _deepforest_voc(root: Path) -> Path:
    """The bundled deepforest XML/image samples arranged as a VOC folder."""
    _voc(root, {})
    for name in ("OSBS_029.xml", "SOAP_061.xml"):
        shutil.copy(sample_path(f"deepforest/{name}"), root / "Annotations" / name)
    for name in ("OSBS_029.tif", "SOAP_061.png"):
        shutil.copy(sample_path(f"deepforest/{name}"), root / "JPEGImages" / name)
    return root


def _boxes_in_file(path: Path) -> list[tuple[str, float, float, float, float]]:
    """(name, xmin, ymin, xmax, ymax) per <object>, by regex over the file's text (independent of the reader)."""
    text = path.read_text()
    out = []
    for block in re.findall(r"<object>(.*?)</object>", text, re.S):
        name = re.search(r"<name>(.*?)</name>", block).group(1)
        nums = [float(re.search(rf"<{t}>(.*?)</{t}>", block).group(1)) for t in ("xmin", "ymin", "xmax", "ymax")]
        out.append((name, *nums))
    return out


def test_real_deepforest_xml_samples_load_with_edge_coordinates(tmp_path):
    root = _deepforest_voc(tmp_path)
    ds = get_format("voc").open(root, one_based=False)
    osbs, soap = ds.load()
    assert (osbs.image, osbs.width, osbs.height, osbs.meta) == (
        "JPEGImages/OSBS_029.tif",
        400,
        400,
        {"folder": "RGB", "depth": 3, "segmented": "0"},
    )
    assert osbs.image_path.is_file() and soap.image == "JPEGImages/SOAP_061.png"
    for sample, name in ((osbs, "OSBS_029.xml"), (soap, "SOAP_061.xml")):
        expected = _boxes_in_file(root / "Annotations" / name)
        assert [(i.category, *i.bbox) for i in sample.instances] == expected
    assert len(osbs.instances) == 61 and len(soap.instances) == 37
    assert ds.report.categories == {"Tree": 61, "Dead": 28, "Alive": 9}
    assert soap.instances[0].attrs == {"pose": "Unspecified", "truncated": 0, "occluded": 0}
    # deepforest's CSV for the same image holds the same boxes: the XML is in edge coordinates.
    with sample_path("deepforest/OSBS_029.csv").open() as handle:
        rows = [(r["label"], *(float(r[k]) for k in ("xmin", "ymin", "xmax", "ymax"))) for r in csv.DictReader(handle)]
    assert sorted(rows) == sorted((i.category, *i.bbox) for i in osbs.instances)


def test_real_samples_rewrite_byte_for_byte(tmp_path):
    root = _deepforest_voc(tmp_path / "src")
    ds = get_format("voc").open(root, one_based=False)
    get_format("voc").write(tmp_path / "out", ds, meta=ds.meta)
    for name in ("OSBS_029.xml", "SOAP_061.xml"):
        original = sample_path(f"deepforest/{name}").read_text()
        assert (tmp_path / "out" / "Annotations" / name).read_text() == original.rstrip("\n") + "\n"


def test_voc_coordinates_are_one_based_inclusive(tmp_path):
    root = _voc(tmp_path, {"000005.xml": VOC_XML})
    (sample,) = get_format("voc").open(root).load()
    rear, whole = sample.instances
    assert rear.bbox == (262.0, 210.0, 324.0, 339.0)
    assert whole.bbox == (0.0, 0.0, 500.0, 375.0) and whole.difficult  # xmin=1..xmax=W is the whole image
    assert rear.attrs == {"pose": "Rear", "truncated": 0}
    assert sample.meta["source"] == {"database": "The VOC2007 Database", "annotation": "PASCAL VOC2007"}
    assert (sample.width, sample.height, sample.image) == (500, 375, "JPEGImages/000005.jpg")


def test_dior_r_oriented_boxes(tmp_path):
    root = _voc(tmp_path, {"00001.xml": DIOR_R_XML})
    (sample,) = get_format("voc").open(root).load()
    (golf,) = sample.instances
    assert golf.polygon == (133.0, 237.0, 684.0, 200.0, 700.0, 672.0, 133.0, 672.0)
    assert golf.bbox == (133.0, 200.0, 700.0, 672.0)
    assert golf.attrs == {"type": "robndbox", "pose": "Unspecified", "truncated": 0, "angle": "0"}
    get_format("voc").write(tmp_path / "out", [sample])
    assert get_format("voc").open(tmp_path / "out").load() == [sample]
    assert "<bndbox>" not in (tmp_path / "out" / "Annotations" / "00001.xml").read_text()


def test_round_trip_of_hand_made_samples_with_splits(tmp_path):
    samples = [
        Sample(
            image="JPEGImages/a.jpg",
            image_id="a",
            width=64,
            height=48,
            split="train",
            meta={"folder": "x", "source": {"database": "rsvl", "@kind": "synthetic"}, "depth": 3, "segmented": "0"},
            instances=[
                Instance("car", bbox=(0.0, 0.0, 64.0, 48.0), difficult=True, attrs={"pose": "Left", "truncated": 1}),
                # 0.3 - 1 + 1 != 0.3: the file's numbers are kept so a rewrite changes nothing
                Instance("ship", bbox=(0.3 - 1, 2.5, 10.75, 12.0), attrs={"voc_bndbox": [0.3, 3.5, 10.75, 12.0]}),
                Instance(
                    "plane",
                    bbox=(1.0, 1.0, 9.0, 9.0),
                    polygon=(2.0, 1.0, 9.0, 3.0, 8.0, 9.0, 1.0, 7.0),
                    ignore=True,
                    attrs={"extra": {"a": "1", "b": ["2", "3"]}},
                ),
            ],
        ),
        Sample(image="JPEGImages/b.png", image_id="b", split="val"),
        Sample(image="JPEGImages/c.jpg", image_id="c", split="test", width=10, height=10),
        Sample(image="JPEGImages/d.jpg", image_id="d"),
    ]
    fmt = get_format("voc")
    fmt.write(tmp_path, samples)
    assert fmt.open(tmp_path).load() == samples
    sets = tmp_path / "ImageSets" / "Main"
    assert (sets / "trainval.txt").read_text() == "a\nb\n" and (sets / "test.txt").read_text() == "c\n"


def test_missing_filename_falls_back_to_the_image_with_that_stem(tmp_path):
    root = _voc(tmp_path, {"x1.xml": "<annotation><object><name>a</name><bndbox><xmin>1</xmin><ymin>1</ymin>"
                                     "<xmax>2</xmax><ymax>2</ymax></bndbox></object></annotation>"})  # fmt: skip
    (root / "JPEGImages" / "x1.png").write_bytes(b"")
    (sample,) = get_format("voc").open(root).load()
    assert sample.image == "JPEGImages/x1.png" and sample.instances[0].bbox == (0.0, 0.0, 2.0, 2.0)


@pytest.mark.parametrize(
    ("xml", "line", "expected"),
    [
        ("<annotation>\n<object>\n<name>a</name>\n<bndbox><xmin>5</xmin><ymin>1</ymin>\n<xmax>4</xmax><ymax>2</ymax>"
         "</bndbox></object></annotation>", 4, "expected xmax >= xmin and ymax >= ymin"),
        ("<annotation>\n<object>\n<name>a</name>\n<bndbox>\n<xmin>x</xmin><ymin>1</ymin><xmax>4</xmax><ymax>2</ymax>"
         "</bndbox></object></annotation>", 5, "<xmin>: expected a number, got 'x'"),
        ("<annotation>\n<object>\n<name>a</name>\n<bndbox><xmin>1</xmin>\n<ymin>nan</ymin><xmax>4</xmax><ymax>2</ymax>"
         "</bndbox></object></annotation>", 5, "<ymin>: expected a finite number"),
        ("<annotation>\n<object>\n<bndbox><xmin>1</xmin><ymin>1</ymin><xmax>4</xmax><ymax>2</ymax></bndbox>"
         "</object></annotation>", 2, "<object> has no <name>"),
        ("<annotation>\n\n<object><name>a</name></object></annotation>", 3, "neither <bndbox> nor <robndbox>"),
        ("<annotation>\n<object><name>a</name>\n<robndbox><cx>1</cx><cy>1</cy><w>2</w><h>1</h><angle>0.3</angle>"
         "</robndbox></object></annotation>", 3, "roLabelImg <robndbox>"),
        ("<annotation>\n<object><name>a</name><difficult>2</difficult>\n</object></annotation>", 2,
         "<difficult>: expected 0 or 1"),
        ("<annotation>\n<size><width>-3</width></size></annotation>", 2, "<width>: expected a non-negative integer"),
        ("<annotation>\n<object><name>a</name>\n<bndbox><xmin>1</xmin><ymin>1</ymin><xmax>4</xmax><ymax>2</ymax>"
         "<zmax>3</zmax></bndbox></object></annotation>", 3, "unexpected <zmax> in <bndbox>"),
        ("<annotation>\n<object>\n<name>a</name>\n</objet></annotation>", 4, "invalid XML: mismatched tag"),
        ("<voc>\n</voc>", 1, "root element is <voc>, expected <annotation>"),
        (b"<annotation>\n<folder>\xff</folder></annotation>", 2, "invalid XML: not well-formed"),
    ],
)  # fmt: skip
def test_errors_name_path_and_line(tmp_path, xml, line, expected):
    root = _voc(tmp_path, {"bad.xml": xml})
    with pytest.raises(DatasetError) as info:
        get_format("voc").open(root).load()
    assert f"bad.xml:{line}: " in str(info.value) and expected in str(info.value)


@pytest.mark.parametrize(
    "xml",
    [
        '<?xml version="1.0"?>\n<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;">]>\n'
        "<annotation><folder>&lol2;</folder></annotation>",
        '<!DOCTYPE a [<!ENTITY ext SYSTEM "file:///etc/passwd">]><annotation><folder>&ext;</folder></annotation>',
        "<annotation><filename>../../etc/passwd</filename></annotation>",
        "<annotation><filename>/etc/passwd</filename></annotation>",
    ],
)
def test_unsafe_xml_and_paths_are_refused_even_when_lenient(tmp_path, xml):
    root = _voc(tmp_path, {"evil.xml": xml})
    for strict in (True, False):
        with pytest.raises(UnsafeDataError, match=r"evil\.xml"):
            get_format("voc").open(root, strict=strict).load()


def test_non_strict_counts_skipped_objects_and_files(tmp_path):
    good = "<object><name>a</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>4</xmax><ymax>2</ymax></bndbox></object>"
    bad = "<object><name>b</name><bndbox><xmin>9</xmin><ymin>1</ymin><xmax>4</xmax><ymax>2</ymax></bndbox></object>"
    root = _voc(tmp_path, {"a.xml": f"<annotation>\n{good}\n{bad}\n{good}\n</annotation>", "b.xml": "<annotation>"})
    ds = get_format("voc").open(root, strict=False)
    (sample,) = ds.load()
    assert len(sample.instances) == 2
    assert [(Path(p.path).name, p.line) for p in ds.report.problems] == [("a.xml", 3), ("b.xml", 1)]


def test_split_lists(tmp_path):
    xml = "<annotation><filename>{}.jpg</filename></annotation>"
    files = {f"{s}.xml": xml.format(s) for s in ("a", "b", "c")}
    sets = {"train.txt": "a\n", "val.txt": "b  \n", "trainval.txt": "a\nb\n", "car_train.txt": "a  1\nc -1\n"}
    ds = get_format("voc").open(_voc(tmp_path / "ok", files, sets))
    assert [(s.image_id, s.split) for s in ds] == [("a", "train"), ("b", "val"), ("c", None)]
    with pytest.raises(DatasetError, match="'a' is listed in several splits: test, train"):
        get_format("voc").open(_voc(tmp_path / "bad", files, {"train.txt": "a\n", "test.txt": "a\n"}))


def test_scores_are_not_written_but_counted_in_a_warning(tmp_path, caplog):
    fmt = get_format("voc")
    fmt.write(tmp_path, [Sample(image="JPEGImages/a.jpg", instances=[Instance("a", bbox=(0, 0, 1, 1), score=0.3)])])
    assert "1 prediction scores not written" in caplog.text
    assert fmt.open(tmp_path).load()[0].instances == [Instance("a", bbox=(0, 0, 1, 1))]


def test_writer_errors(tmp_path):
    fmt = get_format("voc")
    with pytest.raises(InputError, match="not inside JPEGImages/"):
        fmt.write(tmp_path, [Sample(image="images/a.jpg")])
    with pytest.raises(InputError, match="cannot be written as an XML element name"):
        fmt.write(tmp_path, [Sample(image="JPEGImages/a.jpg", meta={"bad key": 1})])
    assert not (tmp_path / "Annotations").exists()
