"""Error types shared by the whole toolkit.

Every error caused by bad user input derives from :class:`InputError`; the CLI turns it into a
one-line message and exit code 2. Errors that point into a file carry ``path`` and ``line`` so the
message reads ``path:line: what was expected``.
"""

from __future__ import annotations

from os import PathLike


class RsvlError(Exception):
    """Base class of every error rsvl raises on purpose."""


class InputError(RsvlError, ValueError):
    """Bad input from the user: a malformed file, an unreadable image, an impossible option.

    Args:
        message: what is wrong and what was expected.
        path: the offending file, if there is one.
        line: 1-based line number inside ``path``, if it applies.
    """

    def __init__(self, message: str, path: str | PathLike[str] | None = None, line: int | None = None):
        self.message = message
        self.path = None if path is None else str(path)
        self.line = line
        super().__init__(self._format())

    def _format(self) -> str:
        if self.path is None:
            return self.message
        where = self.path if self.line is None else f"{self.path}:{self.line}"
        return f"{where}: {self.message}"


class GeometryError(InputError):
    """Box or polygon arrays of the wrong shape, or holding NaN/inf."""


class CodecError(InputError):
    """Text that does not follow a box <-> text codec's grammar."""


class RasterError(InputError):
    """An image that cannot be read, is empty, or lacks what the operation needs (bands, CRS)."""


class DatasetError(InputError):
    """An annotation file that does not follow its dataset format (the message names file and line)."""


class UnsafeDataError(DatasetError):
    """A data file that tries something a dataset must never do: run code while unpickling, or
    point at a path outside the dataset root."""
