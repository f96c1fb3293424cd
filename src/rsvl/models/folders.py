"""Local model folders in transformers' format: checked before loading, so mistakes read clearly.

Every model rsvl wraps loads from a folder the user points at (nothing is downloaded). A wrong
path, a folder of another model or a half-copied checkpoint gets an :class:`InputError` naming the
folder and what is missing, instead of a transformers traceback deep inside ``from_pretrained``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from rsvl.errors import InputError

__all__ = ["DTYPES", "WEIGHT_FILES", "check_model_folder", "load_pretrained", "torch_dtype"]

#: The files a transformers checkpoint keeps its weights in (one is enough).
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def check_model_folder(folder: Path, label: str, model_type: str | None = None, hint: str = "") -> None:
    """Raise unless ``folder`` holds ``config.json`` (of ``model_type`` when given) and weights.

    Args:
        folder: the local checkpoint folder.
        label: the model's name in messages ("LLaVA", "SAM"...).
        model_type: the ``model_type`` config.json must declare (None: any).
        hint: appended to the messages about a wrong model or missing weights.
    """
    if not folder.is_dir():
        raise InputError(f"{label} model folder not found (expected a local transformers folder)", folder)
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise InputError(f"{label} model folder has no config.json", folder)
    if model_type is not None:
        try:
            found = json.loads(config_file.read_text(encoding="utf-8")).get("model_type")
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError) as exc:
            raise InputError(f"config.json is not a JSON object: {exc}", config_file) from None
        if found != model_type:
            raise InputError(
                f"not a {label} checkpoint: config.json has model_type {found!r}, expected {model_type!r}{hint}", folder
            )
    if not any((folder / name).is_file() for name in WEIGHT_FILES):
        raise InputError(
            f"{label} model folder has no weights (expected one of {', '.join(WEIGHT_FILES)}){hint}", folder
        )


def torch_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """``"float32"``/``"float16"``/``"bfloat16"`` (or a dtype) as a torch dtype; an InputError otherwise."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise InputError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    return DTYPES[dtype]


def load_pretrained(
    cls: Any, folder: Path, label: str, *, ignore_missing: Sequence[str] = (), hint: str = "", **kwargs: Any
) -> Any:
    """``cls.from_pretrained`` from a local folder, refusing a checkpoint that does not fit ``cls``.

    transformers only logs missing or mismatched weights and initialises them at random, so a
    wrong checkpoint would run as noise; here that is an :class:`InputError` naming the folder, as
    is any load failure (corrupt safetensors, a config of another model). ``ignore_missing``:
    substrings of weights a checkpoint may lack (e.g. a tied ``lm_head``).
    """
    try:
        model, info = cls.from_pretrained(folder, local_files_only=True, output_loading_info=True, **kwargs)
    except Exception as exc:  # corrupt safetensors, shapes that do not fit...: all input errors here
        raise InputError(f"cannot load the {label} model: {type(exc).__name__}: {exc}", folder) from exc
    missing = sorted(k for k in info.get("missing_keys", []) if not any(part in k for part in ignore_missing))
    mismatched = list(info.get("mismatched_keys", []))
    if missing or mismatched:
        raise InputError(
            f"the checkpoint does not fit {cls.__name__}: {len(missing)} missing weights (e.g. {missing[:3]}), "
            f"mismatched {mismatched[:3]}{hint}",
            folder,
        )
    return model
