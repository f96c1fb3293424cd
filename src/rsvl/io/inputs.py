"""Checks on the image files and output folder a batch command is given, made before any work."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from rsvl.errors import InputError

__all__ = ["image_files", "output_folder"]


def image_files(paths: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """The paths as files that exist, with distinct stems (per-image outputs are named by stem).

    Raises:
        InputError: a missing file (named), or two files sharing a stem.
    """
    files = [Path(p) for p in paths]
    for f in files:
        if not f.is_file():
            raise InputError("image not found", f)
    stems = [f.stem for f in files]
    if len(set(stems)) != len(stems):
        raise InputError("two input images share a file name stem; outputs would overwrite each other")
    return files


def output_folder(path: str | os.PathLike[str]) -> Path:
    """``path`` as an existing folder (created if missing); an existing file there is an error."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise InputError("the output folder is an existing file", out)
    out.mkdir(parents=True, exist_ok=True)
    return out
