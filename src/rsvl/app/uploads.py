"""Streaming ``multipart/form-data`` reader for the web app: the upload goes straight to its file.

Starlette's form parser first spools an uploaded file to the system temp folder (often a small
RAM-backed ``/tmp``) and the app would then copy it: two full writes of a multi-gigabyte GeoTIFF.
This reader feeds the request body to ``python-multipart`` chunk by chunk and writes the one file
part directly into the upload folder, through :func:`rsvl.utils.atomic.atomic_path`, so a
half-received or rejected upload never appears under its final name. The size limit is enforced
while the bytes arrive, and the suffix is checked from the part's headers, before any data.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from collections.abc import AsyncIterator, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import IO
from urllib.parse import parse_qsl

from python_multipart import MultipartParser
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import parse_options_header
from starlette.concurrency import run_in_threadpool

from rsvl.errors import InputError
from rsvl.utils.atomic import atomic_path

__all__ = ["UploadError", "UploadForm", "human_bytes", "read_upload_form"]

MAX_FIELD_BYTES = 64 * 1024
MAX_FIELDS = 16


class UploadError(InputError):
    """A request the app refuses; ``status`` is the HTTP status to answer with (400 or 413)."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass
class UploadForm:
    """The text fields of a form, and the uploaded file once it is saved (``None`` if none came)."""

    fields: dict[str, str] = field(default_factory=dict)
    file: Path | None = None
    filename: str | None = None
    size: int = 0


def _safe_name(filename: str, suffix: str) -> str:
    """A fresh file name: random hex, then the client's stem reduced to ``[A-Za-z0-9._-]``, then the suffix.

    The client's name only decorates the result (it helps the user recognise outputs named after
    the image); the hex prefix makes it unique and keeps it from starting with a dot.
    """
    stem = PurePath(filename.replace("\\", "/")).stem
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._")[:40]
    return f"{secrets.token_hex(8)}{'_' + stem if stem else ''}{suffix}"


def human_bytes(n: int) -> str:
    """``2147483648`` -> ``2 GiB`` (for limits in messages)."""
    if n < 1024:
        return f"{n} bytes"
    value = n / 1024
    for unit in ("KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.4g} {unit}"
        value /= 1024
    return f"{value:.4g} TiB"


class _Reader:
    """Callback state for one request; see :func:`read_upload_form`."""

    def __init__(self, upload_dir: Path, max_bytes: int, suffixes: Collection[str]):
        self.upload_dir = upload_dir
        self.max_bytes = max_bytes
        self.suffixes = suffixes
        self.form = UploadForm()
        self.stack = contextlib.ExitStack()
        self.handle: IO[bytes] | None = None
        self.target: Path | None = None
        self.pending: list[bytes] = []
        self._name = ""
        self._is_file = False
        self._data = bytearray()
        self._header_name = b""
        self._header_value = b""
        self._disposition = b""

    # python-multipart callbacks (synchronous; file bytes are queued, written in a thread)
    def on_part_begin(self) -> None:
        self._name, self._is_file, self._data = "", False, bytearray()
        self._disposition = b""

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        if self._header_name.lower() == b"content-disposition":
            self._disposition = self._header_value
        self._header_name, self._header_value = b"", b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        if b"name" not in options:
            raise UploadError("a form part has no name in its Content-Disposition header")
        self._name = options[b"name"].decode("utf-8", "replace")
        if b"filename" not in options:
            if len(self.form.fields) >= MAX_FIELDS:
                raise UploadError(f"too many form fields (at most {MAX_FIELDS})")
            return
        if self.target is not None:
            raise UploadError("send one file per run")
        filename = options[b"filename"].decode("utf-8", "replace")
        suffix = PurePath(filename.replace("\\", "/")).suffix.lower()
        if suffix not in self.suffixes:
            shown = repr(suffix) if suffix else "no suffix"
            raise UploadError(
                f"{filename!r}: unsupported image type ({shown}); expected one of {', '.join(sorted(self.suffixes))}"
            )
        self._is_file = True
        self.form.filename = filename
        self.upload_dir.mkdir(parents=True, exist_ok=True)
        self.target = self.upload_dir / _safe_name(filename, suffix)
        tmp = self.stack.enter_context(atomic_path(self.target))
        self.handle = self.stack.enter_context(open(tmp, "wb"))  # noqa: SIM115 (closed by the stack)

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if self._is_file:
            self.form.size += len(chunk)
            if self.form.size > self.max_bytes:
                raise UploadError(f"the upload is larger than the limit of {human_bytes(self.max_bytes)}", status=413)
            self.pending.append(chunk)
        else:
            if len(self._data) + len(chunk) > MAX_FIELD_BYTES:
                raise UploadError(f"form field {self._name!r} is longer than {MAX_FIELD_BYTES} bytes")
            self._data.extend(chunk)

    def on_part_end(self) -> None:
        if not self._is_file:
            self.form.fields[self._name] = self._data.decode("utf-8", "replace")

    def callbacks(self) -> dict:
        names = ("part_begin", "header_field", "header_value", "header_end", "headers_finished", "part_data")
        callbacks = {f"on_{n}": getattr(self, f"on_{n}") for n in names}
        callbacks["on_part_end"] = self.on_part_end
        return callbacks

    async def flush(self) -> None:
        """Write the queued file bytes in a worker thread (the event loop keeps serving)."""
        if self.pending and self.handle is not None:
            data = b"".join(self.pending)
            self.pending.clear()
            await run_in_threadpool(self.handle.write, data)

    def commit(self) -> None:
        """Flush to disk and move the file to its final name (runs in a worker thread)."""
        if self.handle is not None:
            self.handle.flush()
            os.fsync(self.handle.fileno())
        self.stack.close()


async def _read_urlencoded(stream: AsyncIterator[bytes]) -> dict[str, str]:
    """The fields of a URL-encoded body (bounded in size like multipart text fields)."""
    body = bytearray()
    async for chunk in stream:
        body.extend(chunk)
        if len(body) > MAX_FIELD_BYTES * MAX_FIELDS:
            raise UploadError(f"form body longer than {MAX_FIELD_BYTES * MAX_FIELDS} bytes")
    pairs = parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
    if len(pairs) > MAX_FIELDS:
        raise UploadError(f"too many form fields (at most {MAX_FIELDS})")
    return dict(pairs)


async def read_upload_form(
    headers: Mapping[str, str],
    stream: AsyncIterator[bytes],
    *,
    upload_dir: Path,
    max_bytes: int,
    suffixes: Collection[str],
) -> UploadForm:
    """Parse a ``multipart/form-data`` body; save its file part (at most one) under ``upload_dir``.

    A URL-encoded body (a form without a file) is read too, for its fields only.

    Args:
        headers: the request headers (a mapping with ``content-type``).
        stream: the request body, chunk by chunk (``request.stream()``).
        upload_dir: where the file is saved, under a fresh name keeping its (lower-cased) suffix.
        max_bytes: the largest file accepted.
        suffixes: accepted file suffixes, lower case with the dot (``.tif``).

    Raises:
        UploadError: not multipart, a malformed body, a file over ``max_bytes`` (status 413), an
            unknown suffix, an empty file, or several files. Nothing is left on disk then.
    """
    content_type = headers.get("content-type", "")
    kind, params = parse_options_header(content_type)
    if kind == b"application/x-www-form-urlencoded":  # a form without a file (curl -d, plain HTML forms)
        return UploadForm(fields=await _read_urlencoded(stream))
    if kind != b"multipart/form-data" or b"boundary" not in params:
        raise UploadError("send the run as multipart/form-data (a form with the task, image and text)")
    reader = _Reader(upload_dir, max_bytes, suffixes)
    parser = MultipartParser(params[b"boundary"], reader.callbacks())
    try:
        async for chunk in stream:
            parser.write(chunk)
            await reader.flush()
        parser.finalize()
        await reader.flush()
        if reader.target is not None and reader.form.size == 0:
            raise UploadError(f"{reader.form.filename!r}: the uploaded file is empty")
    except BaseException as exc:
        reader.stack.__exit__(type(exc), exc, exc.__traceback__)  # removes the temporary file
        if isinstance(exc, FormParserError):
            raise UploadError(f"malformed multipart form: {exc}") from exc
        raise
    await run_in_threadpool(reader.commit)
    reader.form.file = reader.target
    return reader.form
