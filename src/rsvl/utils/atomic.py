"""Atomic file writes: write a temporary file beside the target, then ``os.replace`` it.

A reader never sees a half-written output (a crash or an exception leaves the old file, or no
file, plus nothing else): the temporary file lives in the target's directory so the final
``os.replace`` is a same-filesystem rename, which POSIX and Windows both make atomic.

Two shapes cover every writer in rsvl:

* :func:`atomic_write` yields an open file object (text or binary) for code that writes a stream;
* :func:`atomic_path` yields a temporary *path* for libraries that insist on opening the file
  themselves (rasterio, pyogrio/GDAL); it keeps the target's suffix so drivers are still inferred.

:func:`write_text`, :func:`write_bytes` and :func:`write_json` are one-call helpers on top.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_path", "atomic_write", "write_bytes", "write_json", "write_text"]


@lru_cache(maxsize=1)
def _umask() -> int:
    """The process umask (read once: reading it means briefly setting it)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _temp_path(target: Path) -> Path:
    """Create (empty) and return a unique hidden temporary file beside ``target``."""
    fd, name = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=f".tmp{target.suffix}", dir=target.parent)
    os.close(fd)
    return Path(name)


def _final_mode(target: Path) -> int:
    """Permissions for the new file: the old file's, else what ``open()`` would have given."""
    try:
        return os.stat(target).st_mode & 0o7777
    except FileNotFoundError:
        return 0o666 & ~_umask()


def _fsync_dir(directory: Path) -> None:
    """Flush the directory entry so the rename survives a power cut (best effort, POSIX only)."""
    if os.name != "posix":
        return
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _remove_quietly(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.remove(path)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on clean exit move it onto ``path`` atomically.

    The temporary file exists (empty) when yielded; a writer may delete and re-create it. If the
    block raises, the temporary file is removed and ``path`` is left untouched.
    Parent directories are created when missing.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_path(target)
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"{tmp}: the writer did not create the temporary file for {target}")
        os.chmod(tmp, _final_mode(target))
        os.replace(tmp, target)
    except BaseException:
        _remove_quietly(tmp)
        raise
    _fsync_dir(target.parent)


@contextlib.contextmanager
def atomic_write(
    path: str | os.PathLike[str],
    mode: str = "w",
    *,
    encoding: str | None = "utf-8",
    newline: str | None = None,
) -> Iterator[IO[Any]]:
    """Open a temporary file for writing; on clean exit flush, fsync and rename it onto ``path``.

    Args:
        path: the final file.
        mode: ``"w"`` (text) or ``"wb"`` (binary); nothing else makes sense for a fresh file.
        encoding: text encoding (ignored in binary mode).
        newline: passed to :func:`open` in text mode.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write mode must be 'w' or 'wb', got {mode!r}")
    binary = mode == "wb"
    with atomic_path(path) as tmp:
        kwargs: dict[str, Any] = {} if binary else {"encoding": encoding, "newline": newline}
        with open(tmp, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())


def write_text(path: str | os.PathLike[str], text: str, *, encoding: str = "utf-8") -> Path:
    """Atomically replace ``path`` with ``text``; returns the path."""
    with atomic_write(path, "w", encoding=encoding) as fh:
        fh.write(text)
    return Path(path)


def write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Atomically replace ``path`` with ``data``; returns the path."""
    with atomic_write(path, "wb") as fh:
        fh.write(data)
    return Path(path)


def write_json(path: str | os.PathLike[str], obj: Any, *, indent: int | None = 2, **dumps_kwargs: Any) -> Path:
    """Atomically write ``obj`` as UTF-8 JSON (non-ASCII kept readable, trailing newline)."""
    dumps_kwargs.setdefault("ensure_ascii", False)
    text = json.dumps(obj, indent=indent, **dumps_kwargs)
    return write_text(path, text + "\n")
