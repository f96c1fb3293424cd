"""Torch checkpoint files: read safely (tensors and plain containers only, errors naming the file),
and the resumable training state the trainers write (``last.pt``)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = ["comparable_config", "load_training_state", "read_torch_file", "save_training_state"]


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


def comparable_config(config_yaml: str, resumable_changes: Iterable[tuple[str, ...]] = ()) -> Any:
    """The recipe YAML as data without the keys (paths of nested keys) that may change on resume."""
    import yaml

    data = yaml.safe_load(config_yaml)
    for keys in resumable_changes:
        node = data
        for key in keys[:-1]:
            node = node.get(key, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(keys[-1], None)
    return data


def save_training_state(path: str | os.PathLike[str], model: Any, optimizer: Any, step: int, config_yaml: str) -> None:
    """Write ``last.pt`` atomically: model and optimiser states, the step, the recipe, the torch RNG."""
    import torch

    from rsvl.utils.atomic import atomic_path

    payload = {
        "step": int(step),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "config": config_yaml,
        "torch_rng": torch.get_rng_state(),
    }
    with atomic_path(Path(path)) as tmp:
        torch.save(payload, tmp)


def load_training_state(
    path: str | os.PathLike[str],
    model: Any,
    optimizer: Any,
    config_yaml: str,
    resumable_changes: Iterable[tuple[str, ...]] = (),
) -> int:
    """Restore a :func:`save_training_state` file into ``model``/``optimizer`` and return its step.

    Raises:
        InputError: unreadable, written by another recipe (apart from ``resumable_changes``), or not
            fitting the model.
    """
    import torch

    from rsvl.errors import InputError

    changes = list(resumable_changes)
    state = read_torch_file(path, "training checkpoint")
    try:
        same = comparable_config(state["config"], changes) == comparable_config(config_yaml, changes)
    except Exception as exc:
        raise InputError(f"cannot read the checkpoint ({type(exc).__name__}: {exc}); use --no-resume", path) from None
    if not same:
        raise InputError(
            "the run folder holds a checkpoint of a different recipe; use another --out or --no-resume", path
        )
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if "torch_rng" in state:
            torch.set_rng_state(state["torch_rng"])
        return int(state["step"])
    except Exception as exc:
        raise InputError(f"the checkpoint does not fit this model ({type(exc).__name__}: {exc})", path) from None
