"""`rsvl detect --engine ray`: option checks (fast) and a local-cluster run against the local engine (slow)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from rsvl.cli import app
from rsvl.data import sample_path

runner = CliRunner()
IMAGE = str(sample_path("deepforest/OSBS_029.tif"))


def test_engine_options_are_checked_before_any_cluster_starts(tmp_path):
    from rsvl.methods.vlm4rsdet.config import VLM4RSDetConfig
    from rsvl.methods.vlm4rsdet.detector import build_detector
    from rsvl.methods.vlm4rsdet.train import save_detector

    cfg = VLM4RSDetConfig.model_validate(
        {"data": {"format": "voc", "root": "x"}, "detector": {"backbone_weights": False, "fpn_channels": 32}}
    )
    model = save_detector(tmp_path / "d.pt", build_detector(cfg.detector, 1), cfg, ["tree"])
    base = ["detect", IMAGE, "-m", str(model), "-o", str(tmp_path / "out")]
    spark = runner.invoke(app, [*base, "--engine", "spark"])
    assert spark.exit_code == 2 and "local or ray" in spark.output
    bad_gt = runner.invoke(app, [*base, "--engine", "ray", "--coco-gt", str(tmp_path / "gt.json")])
    assert bad_gt.exit_code == 2 and "--coco-gt" in bad_gt.output
    bad_format = runner.invoke(app, [*base, "--engine", "ray", "-f", "dota"])
    assert bad_format.exit_code == 2 and "dota" in bad_format.output
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_ray_engine_writes_what_the_local_engine_writes(tmp_path, monkeypatch):
    pytest.importorskip("ray")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    local = runner.invoke(app, ["-q", "detect", IMAGE, "-m", "trees-lite0", "-o", str(tmp_path / "a"), "-f", "geojson"])
    assert local.exit_code == 0, local.output
    args = ["-q", "detect", IMAGE, "-m", "trees-lite0", "-o", str(tmp_path / "b"), "--engine", "ray"]
    distributed = runner.invoke(app, [*args, "--workers", "1", "-f", "geojson,parquet"])
    assert distributed.exit_code == 0, distributed.output
    a = json.loads((tmp_path / "a" / "OSBS_029.geojson").read_text())
    b = json.loads((tmp_path / "b" / "OSBS_029.geojson").read_text())
    assert len(a["features"]) == len(b["features"]) > 0 and a["crs"] == b["crs"]
    assert (tmp_path / "b" / "OSBS_029.parquet").is_file()
