"""Long commands: interrupted and rerun they resume without redoing work, and say where their outputs are.

`rsvl detect` (images and tiles of a large raster), `rsvl data convert` (image copies), `rsvl tiles`
(settings of a resumed folder) and `rsvl eval` (a spinner while scoring). Interruptions are a
``KeyboardInterrupt`` raised from a monkeypatched function after a few items, as Ctrl-C would.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from rsvl.cli import app
from rsvl.data import sample_path
from rsvl.methods.vlm4rsdet.infer import predict_image

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models; also as a Ray worker runs them
runner = CliRunner()
OSBS = sample_path("deepforest/OSBS_029.tif")  # 400 x 400: 16 tiles of 128 px with overlap 16


@pytest.fixture(scope="module")
def detect_images(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """A one-tile PNG, then the GeoTIFF that needs sliced inference."""
    root = tmp_path_factory.mktemp("images")
    with Image.open(OSBS) as im:
        im.convert("RGB").crop((100, 100, 220, 220)).save(root / "crop.png")
    return [str(root / "crop.png"), str(OSBS)]


def _detect(images: list[str], out: Path, *extra: str):
    args = ["-q", "detect", *images, "-m", "trees-lite0", "-o", str(out), "--tile", "128", "--overlap", "16"]
    return runner.invoke(app, [*args, *extra])


def _count_predictions(monkeypatch: pytest.MonkeyPatch, die_after: int | None = None) -> list[int]:
    """Count the detector's calls (one per tile); raise KeyboardInterrupt on call ``die_after + 1``."""
    import rsvl.methods.vlm4rsdet.infer as infer

    calls: list[int] = []

    def counted(detector, rgb):
        if die_after is not None and len(calls) == die_after:
            raise KeyboardInterrupt
        calls.append(1)
        return predict_image(detector, rgb)

    monkeypatch.setattr(infer, "predict_image", counted)
    return calls


def _outputs(out: Path) -> dict[str, bytes]:
    names = ["crop.geojson", "OSBS_029.geojson", "detections.coco.json", "images.json", "dota/Task2_Tree.txt"]
    return {name: (out / name).read_bytes() for name in names}


def test_detect_interrupted_inside_a_large_image_resumes_and_writes_the_same_files(
    detect_images: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _count_predictions(monkeypatch)
    reference = _detect(detect_images, tmp_path / "ref")
    assert reference.exit_code == 0, reference.output
    assert len(calls) == 1 + 16 and "geojson:" in reference.output and "coco:" in reference.output

    out = tmp_path / "out"
    _count_predictions(monkeypatch, die_after=1 + 6)  # the PNG, then 6 of the GeoTIFF's 16 tiles
    killed = _detect(detect_images, out)
    assert killed.exit_code != 0 and not (out / "detections.coco.json").exists()
    assert len((out / "predictions.jsonl").read_text().splitlines()) == 1  # the PNG is done
    partial = list((out / "partial").glob("OSBS_029.*.jsonl"))
    assert len(partial) == 1 and len(partial[0].read_text().splitlines()) == 6

    calls = _count_predictions(monkeypatch)
    resumed = _detect(detect_images, out)
    assert resumed.exit_code == 0, resumed.output
    assert len(calls) == 16 - 6  # neither the PNG nor the 6 finished tiles are predicted again
    assert _outputs(out) == _outputs(tmp_path / "ref")
    assert not (out / "partial").exists()

    calls = _count_predictions(monkeypatch)
    assert _detect(detect_images, out).exit_code == 0 and calls == []  # all done: outputs rewritten only
    assert _outputs(out) == _outputs(tmp_path / "ref")
    assert _detect(detect_images, out, "--no-resume").exit_code == 0 and len(calls) == 17


def test_detect_refuses_to_mix_predictions_of_other_settings(detect_images: list[str], tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert _detect(detect_images[:1], out).exit_code == 0
    other = runner.invoke(app, ["-q", "detect", detect_images[0], "-m", "trees-lite0", "-o", str(out)])
    assert other.exit_code == 2 and "tile" in other.output and "--no-resume" in other.output


def test_opendet_detect_resumes_from_its_predictions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Open-Det's batch shares the resumable state: finished images are not predicted again."""
    import rsvl.methods.opendet.infer as infer
    from rsvl.io.detections import Detections

    calls: list[int] = []

    def fake_predict(loaded, rgb):
        calls.append(1)
        return Detections([[1.0, 2.0, 30.0, 40.0]], [0.9], [0], names=("tree",))

    class Loaded:
        nms_threshold, score_threshold, max_detections = 0.7, 0.3, 100

        class recipe:  # noqa: N801 (stands in for the recipe object)
            name = "fake"

    monkeypatch.setattr(infer, "predict_image", fake_predict)
    images = []
    for name in ("a", "b"):
        Image.new("RGB", (64, 48), (90, 120, 60)).save(tmp_path / f"{name}.png")
        images.append(tmp_path / f"{name}.png")
    out = tmp_path / "out"
    infer.detect_files(images[:1], Loaded(), out, progress=False)  # type: ignore[arg-type]
    first = (out / "a.geojson").read_bytes()
    written = infer.detect_files(images, Loaded(), out, progress=False)  # type: ignore[arg-type]
    assert len(calls) == 2 and (out / "a.geojson").read_bytes() == first
    report = json.loads(written["json"][0].read_text())
    assert [len(r["detections"]) for r in report["images"]] == [1, 1]


@pytest.mark.slow
def test_ray_detect_interrupted_after_one_image_resumes_with_the_others(
    detect_images: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("ray")
    import rsvl.engines.ray_detect as ray_detect

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert _detect(detect_images, tmp_path / "local", "-f", "geojson").exit_code == 0
    out = tmp_path / "ray"
    args = [*detect_images, "-m", "trees-lite0", "-o", str(out), "--tile", "128", "--overlap", "16"]
    args = ["-q", "detect", *args, "--engine", "ray", "--workers", "1", "-f", "geojson"]
    real_add = ray_detect.ArchiveAssembler.add

    def add_dies_after_one_image(self, result):
        if self.images_done == 1:
            raise KeyboardInterrupt
        return real_add(self, result)

    monkeypatch.setattr(ray_detect.ArchiveAssembler, "add", add_dies_after_one_image)
    assert runner.invoke(app, args).exit_code != 0
    assert len((out / "predictions.jsonl").read_text().splitlines()) == 1  # the one-tile PNG
    monkeypatch.setattr(ray_detect.ArchiveAssembler, "add", real_add)
    resumed = runner.invoke(app, args)
    assert resumed.exit_code == 0, resumed.output
    assert "(1 done by an earlier run), 16 tiles" in resumed.output  # only the GeoTIFF's tiles again
    for stem in ("crop", "OSBS_029"):
        assert (out / f"{stem}.geojson").read_bytes() == (tmp_path / "local" / f"{stem}.geojson").read_bytes()
    again = runner.invoke(app, args)  # all done: no cluster is started
    assert again.exit_code == 0 and "(2 done by an earlier run), 0 tiles" in again.output


def _coco_dataset(root: Path, n: int) -> None:
    (root / "images").mkdir(parents=True)
    images, annotations = [], []
    for i in range(n):
        Image.new("RGB", (64, 48), (10 * i, 20, 30)).save(root / "images" / f"im{i}.png")
        images.append({"id": i + 1, "file_name": f"im{i}.png", "width": 64, "height": 48})
        annotations.append(
            {"id": i + 1, "image_id": i + 1, "category_id": 1, "bbox": [5, 5, 10, 10], "area": 100, "iscrowd": 0}
        )
    coco = {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "car"}]}
    (root / "annotations.json").write_text(json.dumps(coco))


def test_convert_interrupted_mid_copy_leaves_no_truncated_image_and_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import rsvl.datasets.convert as convert

    src, dst = tmp_path / "coco", tmp_path / "voc"
    _coco_dataset(src, 4)

    def no_links(a, b):  # another filesystem: every image is copied
        raise OSError("cross-device link")

    monkeypatch.setattr(convert.os, "link", no_links)
    copied: list[str] = []
    real_copy = shutil.copy2

    def copy_dies_on_third(a, b):
        if len(copied) == 2:
            Path(b).write_bytes(Path(a).read_bytes()[:10])  # half an image written, then Ctrl-C
            raise KeyboardInterrupt
        copied.append(Path(a).name)
        return real_copy(a, b)

    monkeypatch.setattr(convert.shutil, "copy2", copy_dies_on_third)
    args = ["-q", "data", "convert", str(src), str(dst), "--from", "coco", "--to", "voc"]
    assert runner.invoke(app, args).exit_code != 0
    placed = sorted(p.name for p in (dst / "JPEGImages").iterdir())
    assert placed == ["im0.png", "im1.png"]  # whole images only: no truncated third, no temporary file

    copied.clear()
    monkeypatch.setattr(convert.shutil, "copy2", lambda a, b: copied.append(Path(a).name) or real_copy(a, b))
    done = runner.invoke(app, args)
    assert done.exit_code == 0, done.output
    assert copied == ["im2.png", "im3.png"]  # the rerun copies only what is missing
    for i in range(4):
        assert (dst / "JPEGImages" / f"im{i}.png").read_bytes() == (src / "images" / f"im{i}.png").read_bytes()
    assert len(list((dst / "Annotations").glob("*.xml"))) == 4


def test_convert_replaces_another_datasets_image_of_the_same_name(tmp_path: Path) -> None:
    src, dst = tmp_path / "coco", tmp_path / "voc"
    _coco_dataset(src, 2)
    (dst / "JPEGImages").mkdir(parents=True)
    (dst / "JPEGImages" / "im0.png").write_bytes(b"not this dataset's image")
    args = ["-q", "data", "convert", str(src), str(dst), "--from", "coco", "--to", "voc"]
    assert runner.invoke(app, args).exit_code == 0
    assert (dst / "JPEGImages" / "im0.png").read_bytes() == (src / "images" / "im0.png").read_bytes()


def test_tiles_refuse_to_resume_with_other_settings(tmp_path: Path) -> None:
    out = tmp_path / "tiles"
    args = ["-q", "tiles", str(OSBS), "--out", str(out), "--size", "128", "--overlap", "28"]
    assert runner.invoke(app, args).exit_code == 0
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and "0 tiles written, 16 already present" in again.output
    # 256-px tiles would be named like the 128-px ones already there (r0_c0 ...) and skipped
    bigger = runner.invoke(app, ["-q", "tiles", str(OSBS), "--out", str(out), "--size", "256", "--overlap", "28"])
    assert bigger.exit_code == 2 and "tile" in bigger.output and "run.json" in bigger.output
    as_tif = runner.invoke(app, [*args, "--format", "tif"])
    assert as_tif.exit_code == 2 and "format" in as_tif.output
    # another image in the same folder is fine (its tiles have their own names)
    other = tmp_path / "other.tif"
    shutil.copy(sample_path("solaris/sample_geotiff.tif"), other)
    assert runner.invoke(app, ["-q", "tiles", str(other), "--out", str(out), "--size", "512"]).exit_code == 0


def test_eval_shows_a_spinner_while_scoring_unless_quiet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import rsvl.cli as cli

    _coco_dataset(tmp_path / "gt", 2)
    pred = tmp_path / "pred.json"
    pred.write_text(json.dumps([{"image_id": 1, "category_id": 1, "bbox": [5, 5, 10, 10], "score": 0.9}]))
    shown: list[str] = []
    real_status = cli.err_console.status
    monkeypatch.setattr(cli.err_console, "status", lambda message, **kw: shown.append(message) or real_status(message))
    args = ["eval", "--task", "det", "--gt", str(tmp_path / "gt"), "--pred", str(pred)]
    assert runner.invoke(app, args).exit_code == 0
    assert shown == ["scoring det predictions (pred.json)"]
    assert runner.invoke(app, ["-q", *args]).exit_code == 0 and len(shown) == 1


def test_validation_after_training_counts_its_images_on_a_bar(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`rsvl train vlm4rsdet` scores its validation set at the end: that loop shows progress too."""
    import rsvl.methods.vlm4rsdet.infer as infer
    from rsvl.datasets.training import DataConfig, DetectionTrainSet
    from rsvl.zoo import weights_path

    bars: list[SpyBar] = []

    class SpyBar:
        def __init__(self, enabled: bool = True, **kwargs: object) -> None:
            self.enabled, self.tasks = enabled, {}
            bars.append(self)

        def __enter__(self) -> SpyBar:
            return self

        def __exit__(self, *exc: object) -> None:
            return None

        def add_task(self, description: str, total: int | None = None, **kwargs: object) -> str:
            self.tasks[description] = [total, 0]
            return description

        def advance(self, task: str) -> None:
            self.tasks[task][1] += 1

    _coco_dataset(tmp_path / "val", 3)
    val = DetectionTrainSet(DataConfig(format="coco", root=str(tmp_path / "val")), "hbb", classes=["car"])
    monkeypatch.setattr(infer, "progress_bar", SpyBar)
    infer.evaluate_detector(infer.load_detector(weights_path("trees-lite0")), val, "coco", progress=True)
    assert len(bars) == 1 and bars[0].enabled and bars[0].tasks == {"validation images": [3, 3]}
