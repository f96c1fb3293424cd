"""`rsvl eval`: the interface outside scripts rely on (task/preset/gt/pred/out) on real and synthetic data."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from typer.testing import CliRunner

from rsvl.cli import app
from rsvl.data import sample_path

runner = CliRunner()
COCO_KEYS = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]


def _osbs_coco(tmp_path: Path) -> tuple[Path, Path, list[float]]:
    """The real OSBS_029 tree boxes as COCO GT, jittered copies as detections, and pycocotools' stats."""
    rows = list(csv.DictReader(sample_path("deepforest/OSBS_029.csv").open()))
    rng = np.random.default_rng(3)
    images = [{"id": 1, "file_name": "OSBS_029.tif", "width": 400, "height": 400}]
    anns, dets = [], []
    for k, row in enumerate(rows, start=1):
        x1, y1, x2, y2 = (float(row[c]) for c in ("xmin", "ymin", "xmax", "ymax"))
        w, h = x2 - x1, y2 - y1
        anns.append({"id": k, "image_id": 1, "category_id": 1, "bbox": [x1, y1, w, h], "area": w * h, "iscrowd": 0})
        if k % 5:
            jit = rng.normal(0, 2.5, 4)
            dets.append(
                {
                    "image_id": 1,
                    "category_id": 1,
                    "bbox": [x1 + jit[0], y1 + jit[1], max(w + jit[2], 1), max(h + jit[3], 1)],
                    "score": float(rng.uniform(0.05, 1)),
                }
            )
    gt = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "Tree"}]}
    gt_path, pred_path = tmp_path / "gt.json", tmp_path / "pred.json"
    gt_path.write_text(json.dumps(gt))
    pred_path.write_text(json.dumps(dets))
    coco = COCO(str(gt_path))
    ev = COCOeval(coco, coco.loadRes(str(pred_path)), "bbox")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return gt_path, pred_path, [float(v) for v in ev.stats]


def test_det_coco_report_equals_pycocotools(tmp_path: Path) -> None:
    gt, pred, stats = _osbs_coco(tmp_path)
    out = tmp_path / "report.json"
    result = runner.invoke(
        app, ["eval", "--task", "det", "--preset", "coco", "--gt", str(gt), "--pred", str(pred), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert [report["metrics"][k] for k in COCO_KEYS] == pytest.approx(stats, abs=1e-9)
    assert 0 < report["metrics"]["AP"] < 1
    assert report["protocol"]["reference"]
    assert "AP50" in result.output


def test_det_unknown_image_is_exit_2(tmp_path: Path) -> None:
    gt, pred, _ = _osbs_coco(tmp_path)
    dets = json.loads(pred.read_text())
    dets[0]["image_id"] = 99
    pred.write_text(json.dumps(dets))
    result = runner.invoke(app, ["eval", "--task", "det", "--gt", str(gt), "--pred", str(pred)])
    assert result.exit_code == 2
    assert "99" in result.output


def test_det_empty_prediction_file_is_exit_2(tmp_path: Path) -> None:
    gt, pred, _ = _osbs_coco(tmp_path)
    pred.write_text("")
    result = runner.invoke(app, ["eval", "--task", "det", "--gt", str(gt), "--pred", str(pred)])
    assert result.exit_code == 2
    assert "pred.json" in result.output


def test_grounding_rrsisd_keys(tmp_path: Path) -> None:
    gt = {"a": [0, 0, 10, 10], "b": [0, 0, 10, 10], "c": [5, 5, 15, 15]}
    pred = {"a": [0, 0, 10, 10], "b": [0, 0, 10, 5], "c": [100, 100, 110, 110]}
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "pred.json").write_text(json.dumps(pred))
    out = tmp_path / "r.json"
    args = ["eval", "--task", "grounding", "--preset", "rrsisd", "--gt", str(tmp_path / "gt.json")]
    result = runner.invoke(app, [*args, "--pred", str(tmp_path / "pred.json"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    metrics = json.loads(out.read_text())["metrics"]
    assert metrics["Pr@0.5"] == pytest.approx(2 / 3)  # IoU 1, 0.5 (>= 0.5 in RMSIN's rule), 0
    assert metrics["Pr@0.6"] == pytest.approx(1 / 3)
    assert metrics["mIoU"] == pytest.approx(0.5)
    assert metrics["oIoU"] == pytest.approx((100 + 50) / (100 + 100 + 100 + 100))
    for key in ("Pr@0.7", "Pr@0.8", "Pr@0.9"):
        assert key in metrics


def test_classification_and_vqa_from_json(tmp_path: Path) -> None:
    (tmp_path / "gt.json").write_text(json.dumps({"1": "forest", "2": "harbor", "3": "forest"}))
    (tmp_path / "pred.json").write_text(json.dumps({"1": "forest", "2": "forest", "3": "forest"}))
    out = tmp_path / "r.json"
    args = ["--gt", str(tmp_path / "gt.json"), "--pred", str(tmp_path / "pred.json"), "--out", str(out)]
    assert runner.invoke(app, ["eval", "--task", "classification", *args]).exit_code == 0
    assert json.loads(out.read_text())["metrics"]["OA"] == pytest.approx(2 / 3)

    answers = tmp_path / "answers.jsonl"
    lines = [
        {"question_id": "q1", "category": "count", "ground_truth": "3", "text": "3"},
        {"question_id": "q2", "category": "color", "ground_truth": "red", "text": "Red"},
        {"question_id": "q3", "category": "count", "ground_truth": "2", "text": "5"},
    ]
    answers.write_text("\n".join(json.dumps(x) for x in lines))
    result = runner.invoke(
        app, ["eval", "--task", "vqa", "--preset", "lrsvqa", "--pred", str(answers), "--out", str(out), "--no-wordnet"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["metrics"]["OA"] == pytest.approx(2 / 3)
    assert report["protocol"]["wordnet"]["enabled"] is False
    # the same answer file scored against a separate ground truth (its "text" is the prediction)
    gt_file = tmp_path / "gt_answers.jsonl"
    gt_file.write_text("\n".join(json.dumps({**x, "text": None}) for x in lines))
    with_gt = ["eval", "--task", "vqa", "--preset", "lrsvqa", "--gt", str(gt_file), "--pred", str(answers)]
    result = runner.invoke(app, [*with_gt, "--out", str(out), "--no-wordnet"])
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["metrics"]["OA"] == pytest.approx(2 / 3)


def test_unknown_task_and_preset_are_usage_errors(tmp_path: Path) -> None:
    (tmp_path / "p.json").write_text("{}")
    assert runner.invoke(app, ["eval", "--task", "segm", "--pred", str(tmp_path / "p.json")]).exit_code == 2
    result = runner.invoke(
        app,
        [
            "eval",
            "--task",
            "det",
            "--preset",
            "voc",
            "--gt",
            str(tmp_path / "p.json"),
            "--pred",
            str(tmp_path / "p.json"),
        ],
    )
    assert result.exit_code == 2
    assert "coco" in result.output


def test_det_dota_folders_of_txt(tmp_path: Path) -> None:
    """GT: a plain folder of DOTA label files; predictions: DOTA Task1 files (one per class)."""
    gt_dir, pred_dir = tmp_path / "labelTxt", tmp_path / "task1"
    gt_dir.mkdir()
    pred_dir.mkdir()
    (gt_dir / "P0001.txt").write_text(
        "imagesource:GoogleEarth\ngsd:0.15\n"
        "10 10 50 10 50 30 10 30 plane 0\n"
        "100 100 140 100 140 120 100 120 plane 0\n"
        "200 200 220 200 220 260 200 260 ship 1\n"
    )
    (gt_dir / "P0002.txt").write_text("0 0 20 0 20 20 0 20 ship 0\n")
    (pred_dir / "Task1_plane.txt").write_text(
        "P0001 0.9 10 10 50 10 50 30 10 30\nP0001 0.8 300 300 340 300 340 320 300 320\nP0002 0.7 0 0 5 0 5 5 0 5\n"
    )
    (pred_dir / "Task1_ship.txt").write_text("P0002 0.95 1 1 21 1 21 21 1 21\n")
    out = tmp_path / "r.json"
    args = [
        "eval",
        "--task",
        "det",
        "--preset",
        "dota",
        "--gt",
        str(gt_dir),
        "--pred",
        str(pred_dir),
        "--out",
        str(out),
    ]
    result = runner.invoke(app, [*args, "--ap-method", "voc12"])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    # plane: 2 GT, detections sorted 0.9 (TP), 0.8 (FP), 0.7 (FP) -> all-point AP = 0.5
    assert report["metrics"]["AP/plane"] == pytest.approx(0.5)
    # ship: the difficult one is ignored, the other found by the only detection -> AP 1
    assert report["metrics"]["AP/ship"] == pytest.approx(1.0)
    assert report["metrics"]["mAP"] == pytest.approx(0.75)
    assert "voc12" in json.dumps(report["protocol"])


def _synth(fmt: str, out: Path) -> list:
    from rsvl.datasets import get_format

    result = runner.invoke(
        app, ["--quiet", "data", "synth", "--format", fmt, "--n", "3", "--out", str(out), "--size", "160"]
    )
    assert result.exit_code == 0, result.output
    return get_format(fmt).open(out).load()


def _scored(samples: list) -> dict:
    import dataclasses

    return {
        s.image_id: [dataclasses.replace(i, score=1.0 - 0.01 * k) for k, i in enumerate(s.instances) if not i.ignore]
        for s in samples
    }


def test_perfect_visdrone_results_written_by_the_datasets_module_score_1(tmp_path: Path) -> None:
    from rsvl.datasets.visdrone import write_visdrone_results

    samples = _synth("visdrone", tmp_path / "gt")
    assert any(i.ignore for s in samples for i in s.instances)  # ignored regions are in play
    write_visdrone_results(tmp_path / "pred", _scored(samples))
    out = tmp_path / "r.json"
    args = ["--gt", str(tmp_path / "gt"), "--pred", str(tmp_path / "pred"), "--out", str(out)]
    result = runner.invoke(app, ["eval", "--task", "det", "--preset", "visdrone", *args])
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["metrics"]["AP50"] == pytest.approx(1.0)


def test_perfect_dota_task1_results_score_1_and_a_miss_lowers_it(tmp_path: Path) -> None:
    from rsvl.datasets.dota import write_dota_task1

    samples = _synth("dota", tmp_path / "gt")
    predictions = _scored(samples)
    write_dota_task1(tmp_path / "pred", predictions)
    out = tmp_path / "r.json"
    args = ["--gt", str(tmp_path / "gt"), "--pred", str(tmp_path / "pred"), "--out", str(out)]
    assert runner.invoke(app, ["eval", "--task", "det", "--preset", "dota", *args]).exit_code == 0
    assert json.loads(out.read_text())["metrics"]["mAP"] == pytest.approx(1.0)
    # drop one non-difficult object's prediction: its class's AP falls below 1
    stem = next(k for k, v in predictions.items() if any(not i.difficult for i in v))
    victim = next(i for i in predictions[stem] if not i.difficult)
    predictions[stem] = [i for i in predictions[stem] if i is not victim]
    write_dota_task1(tmp_path / "pred2", predictions)
    args[3] = str(tmp_path / "pred2")
    assert runner.invoke(app, ["eval", "--task", "det", "--preset", "dota", *args]).exit_code == 0
    assert json.loads(out.read_text())["metrics"][f"AP/{victim.category}"] < 1.0


def test_dota_task2_results_are_scored_on_horizontal_boxes(tmp_path: Path) -> None:
    from rsvl.datasets.dota import write_dota_task2

    samples = _synth("dota", tmp_path / "gt")
    write_dota_task2(tmp_path / "pred", _scored(samples))
    out = tmp_path / "r.json"
    args = ["--gt", str(tmp_path / "gt"), "--pred", str(tmp_path / "pred"), "--out", str(out)]
    result = runner.invoke(app, ["eval", "--task", "det", "--preset", "dota", *args])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["metrics"]["mAP"] == pytest.approx(1.0)
    assert report["protocol"]["dota_task"].startswith("Task2")


def test_dota_preset_on_a_folder_without_txt_files_is_exit_2(tmp_path: Path) -> None:
    (tmp_path / "gt").mkdir()
    (tmp_path / "gt" / "annotations.json").write_text("{}")
    (tmp_path / "pred").mkdir()
    args = ["--gt", str(tmp_path / "gt"), "--pred", str(tmp_path / "pred")]
    result = runner.invoke(app, ["eval", "--task", "det", "--preset", "dota", *args])
    assert result.exit_code == 2
    assert "no DOTA txt files" in result.output


def test_id_mismatch_names_both_files(tmp_path: Path) -> None:
    (tmp_path / "gt.json").write_text(json.dumps({"a": [0, 0, 10, 10]}))
    (tmp_path / "pred.json").write_text(json.dumps({"zzz": [0, 0, 10, 10]}))
    args = ["--gt", str(tmp_path / "gt.json"), "--pred", str(tmp_path / "pred.json")]
    result = runner.invoke(app, ["eval", "--task", "grounding", *args])
    assert result.exit_code == 2
    assert "zzz" in result.output and "pred.json" in result.output and "gt.json" in result.output
