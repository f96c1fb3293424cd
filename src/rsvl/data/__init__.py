"""Small real remote-sensing samples bundled with rsvl (see ``samples/NOTICE.md`` for licences)."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from rsvl.errors import InputError


def sample_path(name: str) -> Path:
    """Absolute path of a bundled sample, e.g. ``sample_path("deepforest/OSBS_029.tif")``.

    Raises:
        InputError: if no such sample ships with this installation.
    """
    root = Path(str(files("rsvl.data") / "samples"))
    path = (root / name).resolve()
    if root.resolve() not in path.parents or not path.is_file():
        available = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
        raise InputError(f"no bundled sample {name!r}; available: {', '.join(available)}")
    return path
