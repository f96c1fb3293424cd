"""Fixtures for the web app tests: a data folder with small images and fake tasks built on ``Task``.

The fake task does what a real one does, on a scale that runs in milliseconds: it reads the image
(Pillow), draws a box with :func:`rsvl.io.overlay.draw_overlay`, writes the overlay and a JSON file
into its output folder and returns table rows, echoing the text it was given.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rsvl.app.tasks import Task, TaskResult
from rsvl.io.overlay import draw_overlay, save_png
from rsvl.utils.atomic import write_json

BOX_COLOUR = (255, 0, 255)


def write_image(path: Path, width: int = 60, height: int = 40, seed: int = 0) -> Path:
    """A small RGB picture (a gradient with noise, so it is not one colour) in any Pillow format."""
    rng = np.random.default_rng(seed)
    x = np.linspace(0, 200, width)[None, :, None]
    y = np.linspace(0, 50, height)[:, None, None]
    img = np.clip(x + y + rng.integers(0, 30, (height, width, 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path)
    return path


def box_of(width: int, height: int) -> list[float]:
    """The box the fake task finds: the middle half of the image."""
    return [width / 4, height / 4, 3 * width / 4, 3 * height / 4]


class BoxTask:
    """A fake detector; records every call as ``(image, text, out_dir)``."""

    colour = BOX_COLOUR
    box = staticmethod(box_of)

    def __init__(self) -> None:
        self.calls: list[tuple[Path, str | None, Path]] = []

    def __call__(self, image: Path, text: str | None, out_dir: Path) -> TaskResult:
        self.calls.append((image, text, out_dir))
        with Image.open(image) as im:
            rgb = np.asarray(im.convert("RGB"))
        h, w = rgb.shape[:2]
        box = box_of(w, h)
        overlay = save_png(out_dir / "overlay.png", draw_overlay(rgb, boxes=[box], box_colour=BOX_COLOUR))
        boxes = write_json(out_dir / "boxes.json", {"boxes": [box], "text": text})
        rows = [
            {"label": text or "thing", "score": np.float32(0.875), "box": np.array(box)},
            {"label": "unsure", "score": float("nan")},
        ]
        return TaskResult(summary=f"1 {text or 'thing'} in {w}x{h} pixels", overlay=overlay, rows=rows, files=[boxes])


@pytest.fixture
def make_image():
    """:func:`write_image`: ``make_image(path, width=60, height=40, seed=0) -> path``."""
    return write_image


@pytest.fixture
def box_task() -> BoxTask:
    return BoxTask()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """``data/`` with ``scene.png`` and ``tiles/t1.tif`` (pickable) and a ``notes.txt`` (not an image)."""
    root = tmp_path / "data"
    write_image(root / "scene.png", 600, 400)
    write_image(root / "tiles" / "t1.tif", 32, 32, seed=1)
    (root / "notes.txt").write_text("not an image")
    return root


@pytest.fixture
def box_task_def(box_task: BoxTask) -> Task:
    return Task(name="boxes", title="Find boxes (fake)", text_label="What to find", run=box_task)
