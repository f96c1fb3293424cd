"""What every dataset format module shares: the reader/writer interface, the read report, the
format registry, and the small checked parsers that turn bad input into ``path:line`` errors.

A format module subclasses :class:`DatasetFormat`, implements ``open`` (lazy: returns a
:class:`Dataset` whose iteration parses files one by one) and ``write`` (atomic files), and
registers itself with :func:`register_format`. ``strict=True`` (the default) raises
:class:`~rsvl.errors.DatasetError` at the first bad object; ``strict=False`` skips it, counts it
in :class:`ReadReport` and goes on — nothing is ever dropped without being counted.
"""

from __future__ import annotations

import math
import re
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any, ClassVar

from rsvl.datasets.sample import Category, Sample
from rsvl.errors import DatasetError, InputError, UnsafeDataError


@dataclass
class Problem:
    """One skipped object or line: where it was and why."""

    path: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = self.path if self.line is None else f"{self.path}:{self.line}"
        return f"{where}: {self.message}"


@dataclass
class ReadReport:
    """Counts of what a reader parsed and what it skipped (``strict=False``) with the reasons."""

    samples: int = 0
    objects: int = 0
    categories: Counter[str] = field(default_factory=Counter)
    problems: list[Problem] = field(default_factory=list)

    @property
    def skipped(self) -> int:
        return len(self.problems)

    def add_sample(self, sample: Sample) -> None:
        self.samples += 1
        self.objects += len(sample.instances)
        self.categories.update(inst.category for inst in sample.instances)

    def skip(self, error: DatasetError) -> None:
        self.problems.append(Problem(error.path or "?", error.line, error.message))


class Dataset:
    """A lazily read dataset: iterate it to parse samples one at a time.

    Attributes:
        root: the dataset root folder.
        format: the registered format name.
        categories: the declared categories (empty where the format declares none up front).
        meta: dataset-level extras a writer needs to reproduce the files (COCO ``info``...).
        report: filled while iterating; complete once iteration ends.
    """

    def __init__(
        self,
        root: Path,
        format: str,
        samples: Callable[[ReadReport], Iterator[Sample]],
        categories: Sequence[Category] = (),
        meta: dict[str, Any] | None = None,
    ):
        self.root = root
        self.format = format
        self.categories = list(categories)
        self.meta = dict(meta or {})
        self.report = ReadReport()
        self._samples = samples

    def __iter__(self) -> Iterator[Sample]:
        self.report = ReadReport()
        for sample in self._samples(self.report):
            sample.root = self.root
            self.report.add_sample(sample)
            yield sample

    def load(self) -> list[Sample]:
        """Parse everything into a list (small datasets, tests)."""
        return list(self)

    def category_names(self) -> list[str]:
        return [c.name for c in self.categories]


class DatasetFormat(ABC):
    """A dataset format: how to read a folder in that layout and how to write one.

    Class attributes:
        name: registry key (``dota``, ``coco``...).
        tasks: what the labels serve (``detection``, ``referring``, ``vqa``, ``caption``, ``classification``).
        layout: one line describing the folder layout, shown by ``rsvl data formats``.
        image_dir: folder (relative to the root) where this layout keeps its images.
    """

    name: ClassVar[str]
    tasks: ClassVar[tuple[str, ...]]
    layout: ClassVar[str]
    image_dir: ClassVar[str] = "images"

    @abstractmethod
    def open(self, root: str | PathLike[str], *, strict: bool = True) -> Dataset:
        """Open the dataset at ``root`` lazily; raise :class:`DatasetError` if its layout is wrong."""

    @abstractmethod
    def write(
        self,
        root: str | PathLike[str],
        samples: Iterable[Sample],
        *,
        categories: Sequence[Category] | None = None,
        meta: dict[str, Any] | None = None,
    ) -> None:
        """Write the annotation files for ``samples`` under ``root`` (images are the caller's job:
        they must already be at ``root / sample.image``, or be written there afterwards).

        ``categories`` fixes names, ids and order where the format stores them; when None the
        writer derives them from the samples (sorted names, ids from 1).
        """

    def image_relpath(self, stem: str, suffix: str = ".png", label: str | None = None) -> str:
        """Where this layout keeps the image called ``stem + suffix`` (``label`` for class folders)."""
        return f"{self.image_dir}/{stem}{suffix}"


def derive_categories(samples: Iterable[Sample]) -> list[Category]:
    """The categories a writer uses when none are given: the samples' names sorted, ids from 1."""
    names = sorted({inst.category for sample in samples for inst in sample.instances})
    return [Category(i, name) for i, name in enumerate(names, start=1)]


_FORMATS: dict[str, type[DatasetFormat]] = {}


def register_format(cls: type[DatasetFormat]) -> type[DatasetFormat]:
    """Class decorator: make a format available by ``cls.name`` (``get_format``, ``rsvl data``)."""
    if cls.name in _FORMATS and _FORMATS[cls.name] is not cls:
        raise RuntimeError(f"dataset format {cls.name!r} registered twice")
    _FORMATS[cls.name] = cls
    return cls


def get_format(name: str) -> DatasetFormat:
    """The format registered as ``name``; :class:`InputError` listing the known names otherwise."""
    import rsvl.datasets  # noqa: F401  (importing the package registers every format)

    try:
        return _FORMATS[name.lower()]()
    except KeyError:
        raise InputError(f"unknown dataset format {name!r}; known formats: {', '.join(sorted(_FORMATS))}") from None


def format_names() -> list[str]:
    import rsvl.datasets  # noqa: F401

    return sorted(_FORMATS)


# --------------------------------------------------------------------------------------------
# Checked parsing helpers: every failure names the file, the line and what was expected.


def parse_float(token: str, what: str, path: str | PathLike[str], line: int | None) -> float:
    """``float(token)``, refusing text, NaN and infinities with a ``path:line`` error."""
    if not isinstance(token, str) or not _NUMBER_TEXT.match(token.strip()):
        raise DatasetError(f"{what}: expected a number, got {token!r}", path, line)
    value = float(token)
    if not math.isfinite(value):
        raise DatasetError(f"{what}: expected a finite number, got {token!r}", path, line)
    return value


_NUMBER_TEXT = re.compile(
    r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$|^[+-]?(nan|inf|infinity)$", re.IGNORECASE | re.ASCII
)
"""Plain ASCII decimal numbers as annotation files write them (no ``1_000``, no non-ASCII digits)."""


def parse_int(token: str, what: str, path: str | PathLike[str], line: int | None) -> int:
    """``int(token)`` (also ``"3.0"``), refusing anything else with a ``path:line`` error."""
    if isinstance(token, str) and token.strip().lstrip("+-").isascii() and token.strip().lstrip("+-").isdigit():
        return int(token)
    value = parse_float(token, what, path, line)
    if value != int(value):
        raise DatasetError(f"{what}: expected an integer, got {token!r}", path, line)
    return int(value)


def check_type(value: Any, kind: type | tuple[type, ...], what: str, path: str | PathLike[str]) -> Any:
    """Check a JSON value's type (bools are not numbers); error names the JSON location ``what``."""
    ok = isinstance(value, kind) and not (isinstance(value, bool) and bool not in _as_tuple(kind))
    if not ok:
        names = " or ".join(k.__name__ for k in _as_tuple(kind))
        raise DatasetError(f"{what}: expected {names}, got {type(value).__name__} {value!r:.60}", path)
    return value


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def get_field(
    entry: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str, path: str | PathLike[str]
) -> Any:
    """``entry[key]`` checked with :func:`check_type`; a missing key names ``where`` and the key."""
    if key not in entry:
        raise DatasetError(f"{where}: missing key {key!r}", path)
    return check_type(entry[key], kind, f"{where}.{key}", path)


def as_dict(value: Any, what: str) -> dict[str, Any]:
    """A writer's view of an optional extras dict: ``{}`` for None, a copy for a dict, else an error."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InputError(f"{what} must be a dict, got {type(value).__name__}")
    return dict(value)


def assign_ids(given: list[Any], what: str) -> list[Any]:
    """Keep the ids given (unique ints/strs); give the missing (None) ones the next free integers."""
    used = [g for g in given if g is not None]
    for g in used:
        if not isinstance(g, (int, str)) or isinstance(g, bool):
            raise InputError(f"{what} must be an int or str, got {g!r}")
    if len(set(used)) != len(used):
        raise InputError(f"{what} values must be unique")
    next_id = max((g for g in used if isinstance(g, int)), default=-1) + 1
    out: list[Any] = []
    for g in given:
        if g is None:
            out.append(next_id)
            next_id += 1
        else:
            out.append(g)
    return out


def finite_number(value: Any, what: str, path: str | PathLike[str]) -> float:
    """A JSON number that is finite (not a bool, not NaN/inf), as float."""
    check_type(value, (int, float), what, path)
    try:
        finite = math.isfinite(value)
    except OverflowError:  # an integer too large for a float
        finite = False
    if not finite:
        raise DatasetError(f"{what}: expected a finite number, got {value!r:.40}", path)
    return float(value)


def format_number(value: float) -> str:
    """Shortest text that reads back to the same float (``3`` for 3.0, ``0.1`` for 0.1)."""
    value = float(value)
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def resolve_inside(root: str | PathLike[str], relpath: str, path: str | PathLike[str], line: int | None = None) -> Path:
    """``root / relpath``, refusing absolute paths and ``..`` that would leave the dataset root.

    Annotation files are untrusted: a file name such as ``../../etc/passwd`` must never make a
    reader touch files outside the dataset.
    """
    if not isinstance(relpath, str) or not relpath or "\x00" in relpath:
        raise DatasetError(f"expected a non-empty relative image path, got {relpath!r}", path, line)
    try:
        root_resolved = Path(root).resolve()
        candidate = (root_resolved / relpath).resolve()
    except (OSError, ValueError) as exc:
        raise DatasetError(f"unusable path {relpath!r}: {exc}", path, line) from None
    if Path(relpath).is_absolute() or (candidate != root_resolved and root_resolved not in candidate.parents):
        raise UnsafeDataError(f"path {relpath!r} points outside the dataset root {root_resolved}", path, line)
    return candidate


def read_text_lines(path: Path) -> Iterator[tuple[int, str]]:
    """Stream ``(line_number, text)`` from a UTF-8 text file (BOM and CRLF tolerated).

    Lines are decoded one by one, so an undecodable byte raises :class:`DatasetError` naming the
    exact line instead of a UnicodeDecodeError somewhere in a chunk.
    """
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise DatasetError(f"cannot open: {exc.strerror or exc}", path) from None
    with handle:
        for number, raw in enumerate(handle, start=1):
            if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DatasetError(f"not UTF-8 text ({exc.reason} at byte {exc.start})", path, number) from None
            yield number, text.rstrip("\r\n")


def load_json(path: Path) -> Any:
    """Parse a JSON file; syntax errors become :class:`DatasetError` with the line number.

    NaN/Infinity literals are refused (they are not JSON and would poison every metric).
    """

    def _no_constants(name: str) -> Any:
        raise ValueError(f"{name} is not valid JSON")

    def _finite_float(text: str) -> float:
        value = float(text)
        if not math.isfinite(value):
            raise ValueError(f"number {text} is out of range for a float")
        return value

    import json

    try:
        with path.open("rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise DatasetError(f"cannot open: {exc.strerror or exc}", path) from None
    if not data.strip():
        raise DatasetError("empty file, expected JSON", path)
    try:
        return json.loads(data.decode("utf-8-sig"), parse_constant=_no_constants, parse_float=_finite_float)
    except UnicodeDecodeError as exc:
        raise DatasetError(f"not UTF-8 text ({exc.reason})", path) from None
    except json.JSONDecodeError as exc:
        raise DatasetError(f"invalid JSON: {exc.msg} (column {exc.colno})", path, exc.lineno) from None
    except RecursionError:
        raise DatasetError("invalid JSON: nested too deeply", path) from None
    except ValueError as exc:
        raise DatasetError(f"invalid JSON: {exc}", path) from None
