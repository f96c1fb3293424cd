"""Torch device names checked before any work: a clear error instead of a CUDA traceback mid-run."""

from __future__ import annotations

import torch

from rsvl.errors import InputError

__all__ = ["check_device"]


def check_device(device: str | torch.device) -> torch.device:
    """``device`` as a :class:`torch.device`, or an :class:`InputError` when this machine lacks it."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise InputError(f"unknown torch device {device!r}: {exc}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {device!r} requested but no CUDA GPU is available (use device: cpu)")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise InputError(f"device {device!r} requested but only {torch.cuda.device_count()} CUDA GPU(s) exist")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise InputError(f"device {device!r} requested but MPS is not available (use device: cpu)")
    return dev
