"""Scene classification folders (UCM / AID / NWPU-RESISC45): plain trees, list files, round trips."""

from __future__ import annotations

from pathlib import Path

import pytest

from rsvl.datasets import Category, Sample, get_format
from rsvl.errors import DatasetError, InputError


def _tree(root: Path, files: dict[str, bytes | str]) -> None:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)


UCM = {
    "airplane/airplane00.tif": b"II*\x00",
    "airplane/airplane01.tif": b"II*\x00",
    "agricultural/agricultural00.tif": b"II*\x00",
    "beach/beach00.TIF": b"II*\x00",
}


def test_plain_folder_tree(tmp_path: Path) -> None:
    _tree(tmp_path, UCM)
    ds = get_format("classification").open(tmp_path)
    samples = ds.load()
    assert [(c.id, c.name) for c in ds.categories] == [(0, "agricultural"), (1, "airplane"), (2, "beach")]
    assert [(s.image, s.label, s.split) for s in samples] == [
        ("agricultural/agricultural00.tif", "agricultural", None),
        ("airplane/airplane00.tif", "airplane", None),
        ("airplane/airplane01.tif", "airplane", None),
        ("beach/beach00.TIF", "beach", None),
    ]
    assert samples[0].image_path == tmp_path / "agricultural/agricultural00.tif"
    assert not ds.report.problems


def test_non_image_files_are_ignored_but_reported(tmp_path: Path) -> None:
    _tree(
        tmp_path,
        {
            **UCM,
            "airplane/notes.txt": "x",
            "airplane/.DS_Store": "x",
            "README.md": "x",
            "beach/thumbs/beach00.jpg": b"x",
        },
    )
    ds = get_format("classification").open(tmp_path)
    samples = ds.load()
    assert len(samples) == 4  # nothing that is not an image became a sample
    reported = sorted(Path(p.path).name for p in ds.report.problems)
    assert reported == [".DS_Store", "README.md", "notes.txt", "thumbs"]
    assert ds.report.skipped == 4 and all("ignored" in p.message for p in ds.report.problems)


def test_classes_file_fixes_names_and_order(tmp_path: Path) -> None:
    _tree(tmp_path, {**UCM, "classes.txt": "beach\nairplane\nagricultural\nforest\n"})
    ds = get_format("classification").open(tmp_path)
    assert ds.category_names() == ["beach", "airplane", "agricultural", "forest"]
    assert [s.label for s in ds.load()] == ["beach", "airplane", "airplane", "agricultural"]
    _tree(tmp_path, {"classes.txt": "beach\nairplane\n"})
    with pytest.raises(DatasetError, match=r"not listed in classes\.txt: agricultural"):
        get_format("classification").open(tmp_path)
    _tree(tmp_path, {"classes.txt": "beach\nbeach\n"})
    with pytest.raises(DatasetError, match=r"classes\.txt:2: class 'beach' listed twice"):
        get_format("classification").open(tmp_path)


def test_split_lists_with_paths_or_bare_names(tmp_path: Path) -> None:
    _tree(
        tmp_path, {**UCM, "train.txt": "airplane/airplane00.tif\nagricultural00.tif\n", "test.txt": "beach00.TIF\n\n"}
    )
    splits = {s.image: s.split for s in get_format("classification").open(tmp_path).load()}
    assert splits == {
        "agricultural/agricultural00.tif": "train",
        "airplane/airplane00.tif": "train",
        "airplane/airplane01.tif": None,
        "beach/beach00.TIF": "test",
    }


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"val.txt": "airplane/missing.tif\n"}, r"val\.txt:1: listed image 'airplane/missing\.tif' is not in any"),
        ({"train.txt": "beach00.TIF\n", "test.txt": "\nbeach/beach00.TIF\n"}, r"test\.txt:2: .* already in the train"),
        ({"other/airplane00.tif": b"x", "train.txt": "airplane00.tif\n"}, r"names files in several class folders"),
    ],
)
def test_bad_split_lists(tmp_path: Path, files: dict, message: str) -> None:
    _tree(tmp_path, {**UCM, **files})
    with pytest.raises(DatasetError, match=message):
        get_format("classification").open(tmp_path).load()
    ds = get_format("classification").open(tmp_path, strict=False)
    assert len(ds.load()) == 4 + sum(k.endswith(".tif") for k in files) and ds.report.skipped == 1


def test_not_a_tree(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="not a folder"):
        get_format("classification").open(tmp_path / "missing")
    with pytest.raises(DatasetError, match="no class folders"):
        get_format("classification").open(tmp_path)
    _tree(tmp_path, {"classes.txt": b"\xff\xfe\n"})
    with pytest.raises(DatasetError, match="not UTF-8"):
        get_format("classification").open(tmp_path)


def test_round_trip_with_splits_and_categories(tmp_path: Path) -> None:
    fmt = get_format("classification")
    samples = [
        Sample(image=fmt.image_relpath("airport_1", ".jpg", "airport"), label="airport", split="train"),
        Sample(image="airport/airport_2.jpg", label="airport", split="test"),
        Sample(image="dense residential/d_1.png", label="dense residential"),
        Sample(image="port/p_1.tif", label="port", split="val"),
    ]
    cats = [Category(0, "port"), Category(1, "airport"), Category(2, "dense residential"), Category(3, "empty")]
    fmt.write(tmp_path, samples, categories=cats)
    assert (tmp_path / "empty").is_dir() and (tmp_path / "classes.txt").read_text() == (
        "port\nairport\ndense residential\nempty\n"
    )
    assert (tmp_path / "val.txt").read_text() == "port/p_1.tif\n"
    for s in samples:  # the caller writes the images
        (tmp_path / s.image).write_bytes(b"x")
    ds = fmt.open(tmp_path)
    assert ds.categories == cats
    back = ds.load()
    order = {c.name: c.id for c in cats}
    assert back == sorted(samples, key=lambda s: (order[s.label], s.image))
    # writing again without splits removes the stale lists
    fmt.write(tmp_path, [Sample(image=s.image, label=s.label) for s in samples])
    ds = fmt.open(tmp_path)
    assert not (tmp_path / "train.txt").exists() and {s.split for s in ds.load()} == {None}
    assert ds.category_names() == ["airport", "dense residential", "port"]
    assert [Path(p.path).name for p in ds.report.problems] == ["empty"]  # the old, unlisted, empty folder


def test_writer_input_errors(tmp_path: Path) -> None:
    fmt = get_format("classification")
    with pytest.raises(InputError, match="class label"):
        fmt.image_relpath("a", ".png", None)
    with pytest.raises(InputError, match="folder-safe label"):
        fmt.write(tmp_path, [Sample(image="a.png")])
    with pytest.raises(InputError, match="must be airport/<file>"):
        fmt.write(tmp_path, [Sample(image="port/a.png", label="airport")])
    with pytest.raises(InputError, match="no image extension"):
        fmt.write(tmp_path, [Sample(image="port/a.txt", label="port")])
    with pytest.raises(InputError, match="not one of train, val, test"):
        fmt.write(tmp_path, [Sample(image="port/a.png", label="port", split="holdout")])
    with pytest.raises(InputError, match="not among the categories"):
        fmt.write(tmp_path, [Sample(image="port/a.png", label="port")], categories=[Category(0, "beach")])
