"""The local web app (``rsvl app``): a page to run any task on one image, and the tasks it offers.

:mod:`rsvl.app.tasks` is light (no web stack); :func:`create_app` and :func:`serve` need the
``[app]`` extra (FastAPI, uvicorn, python-multipart) and are imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rsvl.app.tasks import Task, TaskResult, available_tasks

if TYPE_CHECKING:
    from rsvl.app.server import create_app, serve

__all__ = ["Task", "TaskResult", "available_tasks", "create_app", "serve"]


def __getattr__(name: str) -> Any:
    if name in ("create_app", "serve"):
        from rsvl.app import server

        return getattr(server, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
