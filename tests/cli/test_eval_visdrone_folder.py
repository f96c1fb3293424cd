"""VisDrone dataset folders through the CLI: `rsvl eval --preset visdrone` honours the ground truth's
score-0 flag, and `rsvl data convert` to COCO keeps it (as ``iscrowd``) and round-trips the files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from rsvl.cli import app
from rsvl.datasets import Instance
from rsvl.datasets.visdrone import write_visdrone_results

runner = CliRunner()


def _invoke(*args: str) -> None:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output


def _eval(gt: Path, pred: Path, out: Path) -> dict:
    """The JSON report of `rsvl eval --task det --preset visdrone`."""
    _invoke("eval", "--task", "det", "--preset", "visdrone", "--gt", str(gt), "--pred", str(pred), "--out", str(out))
    return json.loads(out.read_text())


def test_score_zero_ground_truth_is_ignored(tmp_path: Path) -> None:
    # One evaluated car and one score-0 car; the best detection sits on the score-0 one. The toolkit
    # (tests/metrics/visdrone_toolkit_port.py, test_score_zero_object_by_hand) neither counts it as a
    # true nor a false positive, while the recall denominator still counts both cars: AP 0.5, AR1 0.
    gt = tmp_path / "gt"
    (gt / "annotations").mkdir(parents=True)
    (gt / "images").mkdir()
    (gt / "annotations" / "a.txt").write_text("10,10,20,20,1,4,0,0\n60,60,20,20,0,4,0,0\n")
    Image.new("RGB", (100, 100)).save(gt / "images" / "a.jpg")
    pred = tmp_path / "pred"
    (pred / "a.txt").parent.mkdir()
    (pred / "a.txt").write_text("60,60,20,20,0.95,4,-1,-1\n10,10,20,20,0.9,4,-1,-1\n")
    m = _eval(gt, pred, tmp_path / "report.json")["metrics"]
    assert m["AP"] == pytest.approx(0.5) and m["AP50"] == pytest.approx(0.5)
    assert m["AR1"] == 0.0 and m["AR10"] == pytest.approx(0.5)


def test_synth_convert_to_coco_check_and_back(tmp_path: Path) -> None:
    src, coco, back = tmp_path / "synth", tmp_path / "coco", tmp_path / "back"
    _invoke("data", "synth", "--format", "visdrone", "--n", "3", "--size", "160", "--out", str(src))
    first = sorted((src / "annotations").glob("*.txt"))[0]
    assert "4" not in {line.split(",")[5] for line in first.read_text().splitlines()}  # no car there yet
    with first.open("a") as f:  # a car the evaluation ignores (score 0)
        f.write("30,40,12,10,0,4,0,0\n")
    _invoke("data", "convert", str(src), str(coco), "--from", "visdrone", "--to", "coco")
    _invoke("data", "check", str(coco))
    data = json.loads((coco / "annotations.json").read_text())
    flagged = [a for a in data["annotations"] if a["bbox"] == [30, 40, 12, 10]]
    assert len(flagged) == 1 and flagged[0]["iscrowd"] == 1 and flagged[0]["visdrone_score"] == 0

    _invoke("data", "convert", str(coco), str(back), "--from", "coco", "--to", "visdrone")
    for path in sorted((src / "annotations").glob("*.txt")):
        assert (back / "annotations" / path.name).read_text() == path.read_text(), path.name

    # The same detections score the same on the VisDrone folder and on its COCO conversion.
    names = {c["id"]: c["name"] for c in data["categories"]}
    stems = {im["id"]: Path(im["file_name"]).stem for im in data["images"]}
    results, per_stem = [], {}
    for k, a in enumerate(data["annotations"]):
        if names[a["category_id"]] == "ignored regions":
            continue
        score = 0.5 + k / 100
        results.append({"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": score})
        x, y, w, h = a["bbox"]
        inst = Instance(names[a["category_id"]], bbox=(x, y, x + w, y + h), score=score)
        per_stem.setdefault(stems[a["image_id"]], []).append(inst)
    (tmp_path / "results.json").write_text(json.dumps(results))
    write_visdrone_results(tmp_path / "results", per_stem)
    from_folder = _eval(src, tmp_path / "results", tmp_path / "r1.json")
    from_coco = _eval(coco / "annotations.json", tmp_path / "results.json", tmp_path / "r2.json")
    assert from_folder["metrics"] == pytest.approx(from_coco["metrics"])
    # the only car is ignore ground truth in both: its exact detection is no true positive (AP 0, as
    # the toolkit has it), while every other class is found exactly (AP 1)
    for report in (from_folder, from_coco):
        present = [c for c, n in report["details"]["class_image_counts"].items() if n]
        per_class = {c: report["details"]["per_category_AP"][c] for c in present}
        assert per_class.pop("car") == 0.0 and per_class and set(per_class.values()) == {1.0}
