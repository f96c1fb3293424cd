"""Local model folders in transformers' format: checked before loading, so mistakes read clearly.

Every model rsvl wraps loads from a folder the user points at (nothing is downloaded). A wrong
path, a folder of another model or a half-copied checkpoint gets an :class:`InputError` naming the
folder and what is missing, instead of a transformers traceback deep inside ``from_pretrained``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from rsvl.errors import InputError

__all__ = ["DTYPES", "WEIGHT_FILES", "check_model_folder", "torch_dtype"]

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
