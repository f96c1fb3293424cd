"""Read untrusted pickle files (RefCOCO / RRSIS-D ``refs(unc).p``) without ever running code.

``pickle.load`` on a downloaded file executes whatever the file asks for: a pickle can name any
importable callable (``os.system``, ``subprocess.Popen``...) and have it called while loading.
:func:`safe_load_pickle` uses a :class:`pickle.Unpickler` whose ``find_class`` refuses every
global outside a tiny allow-list, so a pickle can only rebuild plain data.

What the real files hold: ``refs(unc).p`` is a list of dicts (``ref_id``, ``ann_id``,
``image_id``, ``category_id``, ``split``, ``file_name``, ``sent_ids``, ``sentences``: a list of
dicts with ``sent``, ``raw``, ``tokens``, ``sent_id``) — only dicts, lists, strings and ints,
which pickle encodes with opcodes that need no global at all. The allow-list covers the only
containers a Python 2 or 3 pickle of plain data may still reach through a global: ``set`` and
``frozenset`` (``__builtin__``/``builtins``) and ``collections.OrderedDict``. Everything else —
functions, classes, ``copy_reg._reconstructor``, ``_codecs.encode`` — raises
:class:`~rsvl.errors.UnsafeDataError` naming the file and the refused global, before anything
is called.

Text encoding (Python 2 pickles): Python 2 ``str`` values are byte strings with no declared
encoding. The unpickler runs with ``encoding="bytes"`` so they arrive as ``bytes``, and each one
(dict keys included) is then decoded as UTF-8 — ASCII, which is what RefCOCO and RRSIS-D use, is
a subset — falling back to Latin-1 (which maps every byte, so it never fails) with a logged
warning counting the strings that needed it. ``unicode`` values and every Python 3 ``str`` are
stored as UTF-8 by pickle itself and need no guessing. A consequence: a genuine ``bytes`` value
in a Python 3 pickle also comes back as ``str``; refs files have none.

Anything else wrong with the file — empty, truncated, corrupt opcodes, trailing bytes after the
pickle's STOP opcode, nesting deeper than :data:`MAX_DEPTH`, integers wider than
:data:`MAX_INT_BITS` bits, a cycle, or a structure that refers to the same container so often that
copying it would take far longer than the file is big — raises
:class:`~rsvl.errors.DatasetError` naming the file. The result is always a fresh tree (nothing
shared), so code walking it cannot loop or explode.
"""

from __future__ import annotations

import builtins
import collections
import io
import logging
import pickle
from os import PathLike
from pathlib import Path
from typing import Any

from rsvl.errors import DatasetError, UnsafeDataError

log = logging.getLogger(__name__)

__all__ = ["ALLOWED_GLOBALS", "MAX_DEPTH", "MAX_INT_BITS", "safe_load_pickle", "safe_loads_pickle"]

ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("builtins", "set"): builtins.set,
    ("builtins", "frozenset"): builtins.frozenset,
    ("__builtin__", "set"): builtins.set,
    ("__builtin__", "frozenset"): builtins.frozenset,
    ("collections", "OrderedDict"): collections.OrderedDict,
}
"""The only globals a pickle may name, keyed by ``(module, name)`` as the file spells them."""


class _RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only :data:`ALLOWED_GLOBALS` and refuses persistent ids."""

    def __init__(self, file: io.BytesIO, source: str):
        super().__init__(file, encoding="bytes")
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafeDataError(
                f"refused to load: the pickle asks for the global {module}.{name}; a data file may only "
                "hold plain lists, dicts, strings and numbers",
                self._source,
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafeDataError("refused to load: the pickle uses a persistent id", self._source)


MAX_DEPTH = 100
"""Deepest container nesting accepted (refs files nest 4 levels)."""

MAX_INT_BITS = 4096
"""Largest integer accepted, in bits (refs hold small ids; huge ints cannot even be printed)."""


class _Converter:
    """Copies the unpickled data into plain trees: byte strings decoded (UTF-8, else Latin-1),
    nesting limited to :data:`MAX_DEPTH`, and at most ``budget`` values visited.

    Shared containers are copied, not shared: the result is a tree that any later walk (or
    ``repr`` in an error message) visits in time proportional to the file. A pickle that refers
    to the same container many times (an exponential "billion laughs" DAG) or builds a cycle
    runs out of budget or depth and is refused.
    """

    def __init__(self, source: str, budget: int) -> None:
        self.source = source
        self.budget = budget
        self.latin1 = 0

    def text(self, value: bytes | bytearray) -> str:
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            self.latin1 += 1
            return bytes(value).decode("latin-1")

    def convert(self, obj: Any, depth: int = 0) -> Any:
        self.budget -= 1
        if self.budget < 0:
            raise DatasetError("pickle refers to the same data too many times to be a data file", self.source)
        if isinstance(obj, (bytes, bytearray)):
            return self.text(obj)
        if isinstance(obj, int) and not isinstance(obj, bool) and obj.bit_length() > MAX_INT_BITS:
            raise DatasetError(f"pickle holds an integer of more than {MAX_INT_BITS} bits", self.source)
        if not isinstance(obj, (list, tuple, dict, set, frozenset)):
            return obj
        if depth >= MAX_DEPTH:
            raise DatasetError(f"pickle nests data deeper than {MAX_DEPTH} levels (or holds a cycle)", self.source)
        if isinstance(obj, dict):
            out: dict[Any, Any] = collections.OrderedDict() if isinstance(obj, collections.OrderedDict) else {}
            for k, v in obj.items():
                out[self.convert(k, depth + 1)] = self.convert(v, depth + 1)
            return out
        items = [self.convert(v, depth + 1) for v in obj]
        return items if isinstance(obj, list) else type(obj)(items)


def safe_loads_pickle(data: bytes, source: str | PathLike[str] = "<bytes>") -> Any:
    """Unpickle ``data`` with the restrictions described in the module docstring.

    Args:
        data: the pickle bytes.
        source: the file name used in error messages.
    """
    where = str(source)
    if not data:
        raise DatasetError("empty file, expected a pickle", where)
    stream = io.BytesIO(data)
    try:
        obj = _RestrictedUnpickler(stream, where).load()
    except UnsafeDataError:
        raise
    except RecursionError:
        raise DatasetError("not a readable pickle: nested too deeply", where) from None
    except MemoryError:
        raise DatasetError("not a readable pickle: it asks for more memory than is available", where) from None
    except Exception as exc:  # corrupt input surfaces as many exception types (EOFError, ValueError, ...)
        raise DatasetError(f"not a readable pickle ({type(exc).__name__}: {exc})"[:300], where) from None
    if stream.tell() != len(data):
        raise DatasetError(
            f"not a readable pickle: {len(data) - stream.tell()} trailing bytes after the end of the pickle", where
        )
    converter = _Converter(where, budget=4 * len(data) + 10_000)
    try:
        result = converter.convert(obj)
    except TypeError as exc:  # a container pickled as a dict key or set member cannot be rebuilt hashable
        raise DatasetError(f"pickle holds data that cannot be rebuilt: {exc}", where) from None
    if converter.latin1:
        log.warning("%s: %d byte strings were not UTF-8 and were decoded as Latin-1", where, converter.latin1)
    return result


def safe_load_pickle(path: str | PathLike[str]) -> Any:
    """Read the pickle file at ``path`` without running any code it names.

    Returns plain Python data (lists, dicts, str, int, float, bool, None, sets). Raises
    :class:`~rsvl.errors.UnsafeDataError` for a pickle that names a global outside
    :data:`ALLOWED_GLOBALS` (nothing is called), :class:`~rsvl.errors.DatasetError` for a missing,
    empty, truncated or corrupt file.
    """
    file = Path(path)
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise DatasetError(f"cannot open: {exc.strerror or exc}", file) from None
    return safe_loads_pickle(data, file)
