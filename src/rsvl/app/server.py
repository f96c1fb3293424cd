"""``rsvl app``: a local web page to run any :class:`~rsvl.app.tasks.Task` on one image.

A small FastAPI app serves one offline HTML page (no CDN) and a JSON API:

* ``GET /api/tasks``: the tasks (name, title, text label); ``GET /api/info``: the upload limit
  and accepted suffixes;
* ``GET /api/images``: images the user may pick, found under the data folders given at start-up,
  named ``<folder label>/<relative path>``; a picked name is resolved inside its folder and refused
  (400) if it is absolute, climbs with ``..`` or leads out through a symbolic link;
* ``POST /api/run`` (multipart: ``task``, ``text``, and either ``image`` (a picked name) or
  ``file`` (an upload)): runs the task in a worker thread, one run at a time, into
  ``<work_dir>/runs/<random hex>/``, and answers ``{run_id, summary, rows, overlay_url, files}``;
* ``GET /files/<run id>/<name>``: the outputs of a run, from that run's folder only.

Uploads are streamed to ``<work_dir>/uploads/`` under generated names (see
:mod:`rsvl.app.uploads`); the server never decodes an image itself, tasks do (GeoTIFFs of any size
through the windowed readers). By default only ``127.0.0.1``/``localhost`` Host headers are
accepted (a DNS-rebinding page cannot read the API) and a cross-origin POST is refused.
"""

from __future__ import annotations

import logging
import math
import os
import re
import secrets
import threading
import webbrowser
from collections.abc import Sequence
from importlib.resources import files as package_files
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote, urlsplit

import numpy as np
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.middleware.trustedhost import TrustedHostMiddleware

from rsvl.app.tasks import Task, TaskResult, available_tasks
from rsvl.app.uploads import UploadError, human_bytes, read_upload_form
from rsvl.datasets.classification import IMAGE_SUFFIXES
from rsvl.errors import InputError

__all__ = ["DEFAULT_MAX_UPLOAD_BYTES", "LOCAL_HOSTS", "create_app", "serve"]

logger = logging.getLogger(__name__)

DEFAULT_MAX_UPLOAD_BYTES = 2 * 1024**3
LOCAL_HOSTS = ("127.0.0.1", "localhost", "[::1]")
MAX_FORM_OVERHEAD = 1024 * 1024  # bytes a form may carry beyond its file: boundaries, headers, text fields
MAX_LISTED_IMAGES = 5000
_RUN_ID = re.compile(r"[0-9a-f]{16}")
_STATIC = package_files("rsvl.app") / "static"


def _folder_labels(dirs: Sequence[Path]) -> dict[str, Path]:
    """``{label: resolved folder}``; the label is the folder's name, ``-2``, ``-3``... on a clash."""
    labels: dict[str, Path] = {}
    for d in dirs:
        root = d.resolve()
        base = root.name or "data"
        label, n = base, 1
        while label in labels:
            n += 1
            label = f"{base}-{n}"
        labels[label] = root
    return labels


def _inside(root: Path, relative: str, shown: str | None = None) -> Path:
    """``root/relative`` resolved, or HTTP 400 if ``relative`` is not a plain path that stays in ``root``.

    Refuses absolute paths, backslashes, NUL, ``..`` components, and paths that only leave
    ``root`` once symbolic links are followed. Messages quote ``shown`` (default: ``relative``).
    """
    shown = relative if shown is None else shown
    rel = PurePosixPath(relative)
    if not relative or "\\" in relative or "\x00" in relative or rel.is_absolute() or ".." in rel.parts:
        raise HTTPException(400, f"{shown!r}: not a relative path inside the folder")
    path = (root / rel).resolve()
    if not path.is_relative_to(root):
        raise HTTPException(400, f"{shown!r}: leads outside the folder (symbolic link)")
    return path


def _list_images(roots: dict[str, Path], suffixes: frozenset[str], limit: int) -> list[dict[str, Any]]:
    """Up to ``limit`` images under the folders, ``{name: "<label>/<relative path>", size}``, sorted.

    Hidden files and folders are skipped; linked folders are not entered and linked files that
    lead out of their folder (or nowhere) are left out.
    """
    images: list[dict[str, Any]] = []
    for label, root in roots.items():
        for folder, subdirs, names in os.walk(root):
            subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
            for name in sorted(names):
                path = Path(folder) / name
                if name.startswith(".") or path.suffix.lower() not in suffixes:
                    continue
                if not path.resolve().is_relative_to(root) or not path.is_file():
                    continue
                images.append({"name": f"{label}/{path.relative_to(root).as_posix()}", "size": path.stat().st_size})
                if len(images) >= limit:
                    return images
    return images


def _jsonable(value: Any) -> Any:
    """Table cells as JSON: numpy scalars/arrays as numbers/lists, paths as strings, NaN/inf as null."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        return _jsonable(value.item())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (str, int, bool)):
        return value
    return str(value)


def _file_url(run_id: str, run_dir: Path, path: Path) -> str | None:
    """The ``/files/...`` URL of an output, or None (logged) if the task wrote it outside its run folder."""
    resolved = (run_dir / path).resolve()
    if not resolved.is_relative_to(run_dir.resolve()) or not resolved.is_file():
        logger.warning("task output %s is not a file inside the run folder %s; not served", path, run_dir)
        return None
    return f"/files/{run_id}/{quote(resolved.relative_to(run_dir.resolve()).as_posix())}"


def create_app(
    tasks: Sequence[Task],
    *,
    data_dirs: Sequence[str | os.PathLike[str]],
    work_dir: str | os.PathLike[str],
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
    allowed_hosts: Sequence[str] | None = LOCAL_HOSTS,
) -> FastAPI:
    """The web app: the page, the API and the run outputs (see the module docstring).

    Args:
        tasks: what the page offers (names must be unique).
        data_dirs: folders whose images (:data:`IMAGE_SUFFIXES`) can be picked; nothing else is readable.
        work_dir: where uploads (``uploads/``) and run outputs (``runs/<id>/``) go; created.
        max_upload_bytes: the largest upload accepted (413 above it).
        allowed_hosts: accepted ``Host`` header names; ``None`` accepts any (for a deliberate
            ``--host 0.0.0.0``).

    Raises:
        InputError: a data folder that does not exist, or two tasks with the same name.
    """
    by_name = {t.name: t for t in tasks}
    if len(by_name) != len(tasks):
        raise InputError(f"task names must be unique: {[t.name for t in tasks]}")
    for d in data_dirs:
        if not Path(d).is_dir():
            raise InputError("data folder not found", d)
    roots = _folder_labels([Path(d) for d in data_dirs])
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    uploads, runs = work / "uploads", work / "runs"
    suffixes = frozenset(IMAGE_SUFFIXES)
    run_lock = threading.Lock()

    app = FastAPI(title="rsvl", docs_url=None, redoc_url=None, openapi_url=None)
    if allowed_hosts is not None:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts))
    app.mount("/static", StaticFiles(directory=str(_STATIC)), name="static")

    @app.exception_handler(InputError)
    async def _input_error(request: Request, exc: InputError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=getattr(exc, "status", 400))

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(str(_STATIC / "index.html"), media_type="text/html")

    @app.get("/api/tasks")
    def list_tasks() -> list[dict[str, str | None]]:
        return [{"name": t.name, "title": t.title, "text_label": t.text_label} for t in tasks]

    @app.get("/api/info")
    def info() -> dict[str, Any]:
        return {
            "max_upload_bytes": max_upload_bytes,
            "max_upload": human_bytes(max_upload_bytes),
            "suffixes": sorted(suffixes),
            "data_folders": list(roots),
        }

    @app.get("/api/images")
    def list_images() -> dict[str, Any]:
        images = _list_images(roots, suffixes, MAX_LISTED_IMAGES + 1)
        return {"images": images[:MAX_LISTED_IMAGES], "truncated": len(images) > MAX_LISTED_IMAGES}

    def picked_image(name: str) -> Path:
        label, _, rel = name.partition("/")
        if label not in roots:
            raise HTTPException(400, f"{name!r}: not under a data folder ({', '.join(roots) or 'none given'})")
        path = _inside(roots[label], rel, name)
        if path.suffix.lower() not in suffixes:
            raise HTTPException(400, f"{name!r}: not an image ({', '.join(sorted(suffixes))})")
        if not path.is_file():
            raise HTTPException(404, f"{name!r}: no such image")
        return path

    def run_task(task: Task, image: Path, text: str | None, out_dir: Path) -> TaskResult:
        with run_lock:
            logger.info("running %s on %s into %s", task.name, image, out_dir)
            return task.run(image, text, out_dir)

    @app.post("/api/run")
    async def run(request: Request) -> dict[str, Any]:
        origin = request.headers.get("origin")
        if origin and urlsplit(origin).netloc != request.headers.get("host"):
            raise HTTPException(403, f"cross-origin run refused (origin {origin})")
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > max_upload_bytes + MAX_FORM_OVERHEAD:
            raise UploadError(f"the upload is larger than the limit of {human_bytes(max_upload_bytes)}", status=413)
        form = await read_upload_form(
            request.headers, request.stream(), upload_dir=uploads, max_bytes=max_upload_bytes, suffixes=suffixes
        )
        try:
            task = by_name.get(form.fields.get("task", ""))
            if task is None:
                raise HTTPException(404, f"unknown task {form.fields.get('task', '')!r}; known: {', '.join(by_name)}")
            picked = form.fields.get("image", "")
            if (form.file is None) == (not picked):
                raise UploadError("give either an uploaded file or a picked image (one of the two)")
            image = form.file if form.file is not None else picked_image(picked)
        except BaseException:
            if form.file is not None:
                form.file.unlink(missing_ok=True)
            raise
        text = form.fields.get("text", "").strip() or None
        run_id = secrets.token_hex(8)
        out_dir = runs / run_id
        out_dir.mkdir(parents=True)
        try:
            result = await run_in_threadpool(run_task, task, image, text, out_dir)
        except InputError:
            raise
        except Exception as exc:
            logger.exception("task %s failed on %s", task.name, image)
            raise HTTPException(500, f"task {task.name!r} failed: {type(exc).__name__}: {exc}") from exc
        overlay = _file_url(run_id, out_dir, result.overlay) if result.overlay is not None else None
        urls = [_file_url(run_id, out_dir, f) for f in result.files]
        return {
            "run_id": run_id,
            "task": task.name,
            "image": picked or form.filename,
            "summary": result.summary,
            "rows": _jsonable(result.rows),
            "overlay_url": overlay,
            "files": [u for u in urls if u is not None],
        }

    @app.get("/files/{run_id}/{name:path}")
    def run_file(run_id: str, name: str) -> FileResponse:
        run_dir = runs / run_id
        if not _RUN_ID.fullmatch(run_id) or not run_dir.is_dir():
            raise HTTPException(404, f"no run {run_id!r}")
        path = _inside(run_dir.resolve(), name)
        if not path.is_file():
            raise HTTPException(404, f"run {run_id} has no file {name!r}")
        return FileResponse(str(path), headers={"X-Content-Type-Options": "nosniff"})

    return app


def serve(
    host: str = "127.0.0.1",
    port: int = 7860,
    tasks: Sequence[Task] | None = None,
    data_dirs: Sequence[str | os.PathLike[str]] = (),
    work_dir: str | os.PathLike[str] = "rsvl-app",
    open_browser: bool = False,
    *,
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
) -> None:
    """Serve the app with uvicorn until interrupted (Ctrl-C).

    Args:
        host: interface to bind; ``127.0.0.1`` keeps it on this machine. Any other address makes
            the page, the data folders and the outputs reachable by whoever can reach the port.
        port: TCP port.
        tasks: what to offer; ``None`` means :func:`~rsvl.app.tasks.available_tasks`.
        data_dirs: folders to pick images from; none given means the bundled samples.
        work_dir: uploads and run outputs go here (created).
        open_browser: open the page in the default browser once the server listens.
        max_upload_bytes: the largest upload accepted.
    """
    import uvicorn

    from rsvl.data import sample_path

    tasks = available_tasks() if tasks is None else list(tasks)
    dirs = list(data_dirs) or [sample_path("NOTICE.md").parent]
    local = host in ("127.0.0.1", "localhost", "::1")
    if not local:
        logger.warning("binding %s: anyone who can reach port %d can run tasks and read the data folders", host, port)
    app = create_app(
        tasks,
        data_dirs=dirs,
        work_dir=work_dir,
        max_upload_bytes=max_upload_bytes,
        allowed_hosts=LOCAL_HOSTS if local else None,
    )
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="info"))
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    url = f"http://{'[' + shown + ']' if ':' in shown else shown}:{port}/"

    def announce() -> None:
        while not server.started and not server.should_exit:
            threading.Event().wait(0.1)
        if server.started:
            logger.info("rsvl app on %s (work folder %s)", url, Path(work_dir).resolve())
            if open_browser:
                webbrowser.open(url)

    threading.Thread(target=announce, daemon=True).start()
    server.run()
