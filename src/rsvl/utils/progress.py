"""One look for every progress bar: Rich on stderr, ``n/total`` and time left, gone when done."""

from __future__ import annotations

from typing import Any

__all__ = ["progress_bar"]


def progress_bar(enabled: bool = True, *, console: Any = None, label: str = "", transient: bool = True) -> Any:
    """A Rich ``Progress`` (use as a context manager); ``enabled=False`` gives a silent one.

    Args:
        enabled: False disables drawing (quiet runs, tests); the object still accepts updates.
        console: a Rich console; default a new one on stderr, so stdout stays clean for results.
        label: markup put before each task's description (e.g. ``"[bold]SynthRS[/]"``).
        transient: remove the bar when it finishes.
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    prefix = f"{label} " if label else ""
    return Progress(
        TextColumn(prefix + "[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console if console is not None else Console(stderr=True),
        transient=transient,
        disable=not enabled,
    )
