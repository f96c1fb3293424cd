"""Reading torch checkpoint files safely: tensors and plain containers only, errors naming the file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

__all__ = ["read_torch_file"]


def read_torch_file(path: str | os.PathLike[str], what: str = "checkpoint") -> Any:
    """``torch.load(path, weights_only=True)`` onto the CPU; no pickled code ever runs.

    Raises:
        InputError: the file is missing (``"<what> not found"``) or unreadable
            (``"not a readable PyTorch checkpoint"``: corrupt, truncated, not a torch file, or holding
            objects ``weights_only`` refuses).
    """
    import torch

    from rsvl.errors import InputError

    file = Path(path)
    if not file.is_file():
        raise InputError(f"{what} not found", file)
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InputError(f"{what}: not a readable PyTorch checkpoint (corrupt or truncated?): {exc}", file) from None
