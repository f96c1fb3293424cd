"""The web app's API through FastAPI's TestClient: tasks, images, runs, uploads and what is refused."""

from __future__ import annotations

import io
import json
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("python_multipart")
from fastapi.testclient import TestClient

from rsvl.app import create_app
from rsvl.app.tasks import Task, TaskResult
from rsvl.errors import InputError

BASE = "http://127.0.0.1"


def _refuse(image: Path, text: str | None, out_dir: Path) -> TaskResult:
    raise InputError("no water in this image", image)


def _crash(image: Path, text: str | None, out_dir: Path) -> TaskResult:
    raise RuntimeError("model weights corrupted")


@pytest.fixture
def work(tmp_path: Path) -> Path:
    return tmp_path / "work"


@pytest.fixture
def client(box_task_def: Task, data_dir: Path, work: Path) -> TestClient:
    tasks = [
        box_task_def,
        Task(name="refuse", title="Refuses everything", text_label=None, run=_refuse),
        Task(name="crash", title="Crashes", text_label=None, run=_crash),
    ]
    app = create_app(tasks, data_dirs=[data_dir], work_dir=work, max_upload_bytes=100_000)
    return TestClient(app, base_url=BASE)


def _png_bytes(width: int = 40, height: int = 30) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((height, width, 3), 90, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def test_page_and_its_assets_are_served_and_need_no_network(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<select id="task"' in page.text and "/static/app.js" in page.text
    for asset in ("/static/app.js", "/static/app.css"):
        assert client.get(asset).status_code == 200
    for text in (page.text, client.get("/static/app.js").text, client.get("/static/app.css").text):
        assert "http://" not in text and "https://" not in text and "//cdn" not in text


def test_tasks_info_and_images(client):
    assert client.get("/api/tasks").json()[0] == {
        "name": "boxes",
        "title": "Find boxes (fake)",
        "text_label": "What to find",
    }
    assert [t["text_label"] for t in client.get("/api/tasks").json()[1:]] == [None, None]
    info = client.get("/api/info").json()
    assert info["max_upload_bytes"] == 100_000 and ".tif" in info["suffixes"] and info["data_folders"] == ["data"]
    listing = client.get("/api/images").json()
    assert [i["name"] for i in listing["images"]] == ["data/scene.png", "data/tiles/t1.tif"]
    assert listing["images"][0]["size"] > 0 and listing["truncated"] is False


def test_image_list_skips_links_that_leave_the_data_folder(client, data_dir, tmp_path, make_image):
    secret = make_image(tmp_path / "secret.png")
    os.symlink(secret, data_dir / "escape.png")
    os.symlink(data_dir / "scene.png", data_dir / "alias.png")  # a link inside the folder is fine
    names = [i["name"] for i in client.get("/api/images").json()["images"]]
    assert "data/escape.png" not in names and "data/alias.png" in names


def test_run_on_a_picked_image(client, box_task, data_dir, work):
    r = client.post("/api/run", data={"task": "boxes", "image": "data/scene.png", "text": " ships "})
    assert r.status_code == 200, r.text
    body = r.json()
    assert box_task.calls == [(data_dir.resolve() / "scene.png", "ships", work / "runs" / body["run_id"])]
    assert body["summary"] == "1 ships in 600x400 pixels" and body["image"] == "data/scene.png"
    assert len(body["run_id"]) == 16 and int(body["run_id"], 16) >= 0
    # numpy values became JSON numbers and lists, NaN became null
    assert body["rows"] == [
        {"label": "ships", "score": 0.875, "box": box_task.box(600, 400)},
        {"label": "unsure", "score": None},
    ]
    assert body["overlay_url"] == f"/files/{body['run_id']}/overlay.png"
    assert body["files"] == [f"/files/{body['run_id']}/boxes.json"]
    overlay = client.get(body["overlay_url"])
    assert overlay.headers["content-type"] == "image/png"
    pic = np.asarray(Image.open(io.BytesIO(overlay.content)))
    assert pic.shape == (400, 600, 3) and tuple(pic[100, 300]) == box_task.colour  # top edge of the box
    assert json.loads(client.get(body["files"][0]).content)["text"] == "ships"


def test_run_on_an_upload_keeps_it_under_a_generated_name(client, box_task, work):
    content = _png_bytes()
    r = client.post("/api/run", data={"task": "boxes"}, files={"file": ("../my scan;rm -rf.PNG", content, "image/png")})
    assert r.status_code == 200, r.text
    image, text, _ = box_task.calls[0]
    assert text is None and image.parent == work / "uploads" and image.suffix == ".png"
    assert image.name[:16].isalnum() and image.name.endswith("_my_scan_rm_-rf.png")
    assert image.read_bytes() == content
    assert r.json()["summary"] == "1 thing in 40x30 pixels"
    assert _files_in(work / "uploads") == [image.name]  # no temporary file left beside it


@pytest.mark.parametrize(
    ("filename", "content", "status", "message"),
    [
        ("empty.png", b"", 400, "empty"),
        ("notes.txt", b"hello", 400, "unsupported image type ('.txt')"),
        ("noext", b"hello", 400, "unsupported image type (no suffix)"),
        ("big.tif", b"x" * 100_001, 413, "larger than the limit of 97.66 KiB"),
    ],
)
def test_bad_uploads_are_refused_and_leave_nothing(client, box_task, work, filename, content, status, message):
    r = client.post("/api/run", data={"task": "boxes"}, files={"file": (filename, content, "application/octet-stream")})
    assert r.status_code == status and message in r.json()["detail"]
    assert box_task.calls == [] and _files_in(work / "uploads") == []


def test_upload_over_the_limit_is_refused_while_streaming(client, box_task, work):
    """Without a Content-Length header (a chunked body) the limit is enforced as bytes arrive."""
    boundary = "b0undary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="task"\r\n\r\nboxes\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.tif"\r\n\r\n'
        ).encode()
        + b"x" * 200_000
        + f"\r\n--{boundary}--\r\n".encode()
    )

    def chunks():
        for i in range(0, len(body), 8192):
            yield body[i : i + 8192]

    r = client.post("/api/run", content=chunks(), headers={"content-type": f"multipart/form-data; boundary={boundary}"})
    assert r.status_code == 413 and box_task.calls == [] and _files_in(work / "uploads") == []


def test_upload_and_pick_together_or_neither_are_refused(client, box_task, work):
    r = client.post(
        "/api/run", data={"task": "boxes", "image": "data/scene.png"}, files={"file": ("a.png", _png_bytes())}
    )
    assert r.status_code == 400 and "one of the two" in r.json()["detail"]
    assert _files_in(work / "uploads") == []
    r = client.post("/api/run", data={"task": "boxes"}, files={"other": (None, "x")})
    assert r.status_code == 400 and "one of the two" in r.json()["detail"]
    r = client.post("/api/run", json={"task": "boxes", "image": "data/scene.png"})
    assert r.status_code == 400 and "multipart/form-data" in r.json()["detail"]
    assert box_task.calls == []


@pytest.mark.parametrize(
    ("name", "status"),
    [
        ("../data/scene.png", 400),  # unknown folder label ".."
        ("data/../data/scene.png", 400),
        ("data/tiles/../../secret.png", 400),
        ("data//etc/passwd", 400),  # absolute after the label
        ("/etc/passwd", 400),
        ("data/tiles\\..\\scene.png", 400),
        ("data/escape.png", 400),  # symbolic link out of the folder
        ("data/notes.txt", 400),  # inside, but not an image
        ("other/scene.png", 400),
        ("data/missing.png", 404),
    ],
)
def test_picked_names_cannot_leave_the_data_folders(client, box_task, data_dir, tmp_path, make_image, name, status):
    os.symlink(make_image(tmp_path / "secret.png"), data_dir / "escape.png")
    r = client.post("/api/run", data={"task": "boxes", "image": name})
    assert r.status_code == status, r.text
    assert box_task.calls == []


def test_unknown_task_is_404_and_its_upload_is_removed(client, work):
    r = client.post("/api/run", data={"task": "nope"}, files={"file": ("a.png", _png_bytes())})
    assert r.status_code == 404 and "unknown task 'nope'" in r.json()["detail"]
    assert _files_in(work / "uploads") == []


def test_task_input_error_is_400_with_its_message_and_a_crash_is_500(client, data_dir):
    r = client.post("/api/run", data={"task": "refuse", "image": "data/scene.png"})
    assert r.status_code == 400
    assert r.json()["detail"] == f"{data_dir.resolve() / 'scene.png'}: no water in this image"
    r = client.post("/api/run", data={"task": "crash", "image": "data/scene.png"})
    assert r.status_code == 500 and "RuntimeError: model weights corrupted" in r.json()["detail"]


def test_files_are_served_only_from_the_run_folder(client, work, tmp_path):
    run_id = client.post("/api/run", data={"task": "boxes", "image": "data/scene.png"}).json()["run_id"]
    client.post("/api/run", data={"task": "boxes"}, files={"file": ("up.png", _png_bytes())})
    upload = _files_in(work / "uploads")[0]
    (tmp_path / "private.txt").write_text("secret")
    os.symlink(tmp_path / "private.txt", work / "runs" / run_id / "link.txt")
    assert client.get(f"/files/{run_id}/boxes.json").status_code == 200
    for url, status in [
        (f"/files/{run_id}/..%2F..%2Fuploads%2F{upload}", 400),
        (f"/files/{run_id}/%2E%2E/%2E%2E/uploads/{upload}", 400),
        (f"/files/{run_id}/%2Fetc%2Fpasswd", 400),
        (f"/files/{run_id}/link.txt", 400),
        (f"/files/{run_id}/missing.png", 404),
        (f"/files/{run_id}/", 400),
        (f"/files/..%2Fuploads/{upload}", 404),
        ("/files/uploads/" + upload, 404),
        ("/files/0123456789abcdef/boxes.json", 404),
    ]:
        r = client.get(url)
        assert r.status_code == status, (url, r.status_code, r.text)
        assert b"secret" not in r.content


def test_other_hosts_and_cross_origin_runs_are_refused(client):
    assert client.get("/api/tasks", headers={"host": "evil.example"}).status_code == 400
    assert client.get("/api/tasks", headers={"host": "localhost:7860"}).status_code == 200
    r = client.post(
        "/api/run", data={"task": "boxes", "image": "data/scene.png"}, headers={"origin": "http://evil.example"}
    )
    assert r.status_code == 403
    r = client.post("/api/run", data={"task": "boxes", "image": "data/scene.png"}, headers={"origin": BASE})
    assert r.status_code == 200


def test_one_run_at_a_time(data_dir, work):
    active, peak, lock = [0], [0], threading.Lock()

    def slow(image: Path, text: str | None, out_dir: Path) -> TaskResult:
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.2)
        with lock:
            active[0] -= 1
        return TaskResult(summary="ok")

    app = create_app([Task("slow", "Slow", None, slow)], data_dirs=[data_dir], work_dir=work)
    codes: list[int] = []

    def post() -> None:
        codes.append(
            TestClient(app, base_url=BASE)
            .post("/api/run", data={"task": "slow", "image": "data/scene.png"})
            .status_code
        )

    threads = [threading.Thread(target=post) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert codes == [200, 200] and peak[0] == 1


def test_bad_configuration_is_an_input_error(box_task_def, tmp_path):
    with pytest.raises(InputError, match="data folder not found"):
        create_app([box_task_def], data_dirs=[tmp_path / "nope"], work_dir=tmp_path / "w")
    with pytest.raises(InputError, match="unique"):
        create_app([box_task_def, box_task_def], data_dirs=[], work_dir=tmp_path / "w")


def test_a_long_image_list_is_truncated(data_dir, work, make_image, monkeypatch):
    from rsvl.app import server

    for i in range(3):
        make_image(data_dir / "more" / f"m{i}.png", 4, 4)
    monkeypatch.setattr(server, "MAX_LISTED_IMAGES", 3)
    client = TestClient(create_app([], data_dirs=[data_dir], work_dir=work), base_url=BASE)
    listing = client.get("/api/images").json()
    assert [i["name"] for i in listing["images"]] == ["data/scene.png", "data/more/m0.png", "data/more/m1.png"]
    assert listing["truncated"] is True
