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

Some of that must be caught before the unpickler runs at all: it hashes every dict key and set
member while loading, and a tuple nested by sharing (``DUP``, ``TUPLE2`` repeated) is 2**n
elements to hash for 2n bytes. :class:`_OpcodeScan` replays the opcodes on a model stack first
and refuses such files (and huge integers, and floods of keys with colliding hashes) in time
proportional to the file.
"""

from __future__ import annotations

import builtins
import collections
import io
import logging
import pickle
import pickletools
import sys
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


def _allowed_global(module: str, name: str, source: str) -> Any:
    """The allow-listed object for ``module.name``, else :class:`~rsvl.errors.UnsafeDataError`."""
    try:
        return ALLOWED_GLOBALS[(module, name)]
    except KeyError:
        raise UnsafeDataError(
            f"refused to load: the pickle asks for the global {module}.{name}; a data file may only "
            "hold plain lists, dicts, strings and numbers",
            source,
        ) from None


class _RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only :data:`ALLOWED_GLOBALS` and refuses persistent ids."""

    def __init__(self, file: io.BytesIO, source: str):
        super().__init__(file, encoding="bytes")
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        return _allowed_global(module, name, self._source)

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafeDataError("refused to load: the pickle uses a persistent id", self._source)


MAX_DEPTH = 100
"""Deepest container nesting accepted (refs files nest 4 levels)."""

MAX_INT_BITS = 4096
"""Largest integer accepted, in bits (refs hold small ids; huge ints cannot even be printed)."""

MAX_PREDICTABLE_KEYS = 1000
"""Most dict keys / set members whose hash the file itself can choose (tuples, frozensets,
integers of 2**61 - 1 or more), counted over the whole file. Integers that differ by a multiple of
2**61 - 1 share a hash, and tuple hashes can be solved for, so a few thousand such keys can make
dict insertion quadratic; string hashes are salted per process and cannot be aimed at. Refs
files key every dict by short strings."""


def _budget(size: int) -> int:
    """How much expanded structure (and hashing) a pickle of ``size`` bytes may ask for."""
    return 4 * size + 10_000


_HASH_MODULUS = sys.hash_info.modulus  # ints equal modulo this share a hash
_NAME = {ord(op.code): op.name for op in pickletools.opcodes}
_ARG = {ord(op.code): op.arg.name for op in pickletools.opcodes if op.arg is not None}
_FIXED_WIDTH = {"uint1": 1, "uint2": 2, "int4": 4, "uint4": 4, "uint8": 8, "float8": 8}
_LENGTH_PREFIX = {  # argument format -> (width of the length field, signed)
    "string1": (1, False),
    "bytes1": (1, False),
    "unicodestring1": (1, False),
    "string4": (4, True),
    "bytes4": (4, False),
    "unicodestring4": (4, False),
    "bytes8": (8, False),
    "bytearray8": (8, False),
    "unicodestring8": (8, False),
}
_TEXT_LINES = {
    "decimalnl_short": 1,
    "decimalnl_long": 1,
    "stringnl": 1,
    "stringnl_noescape": 1,
    "unicodestringnl": 1,
    "floatnl": 1,
    "stringnl_noescape_pair": 2,
}
_INT_OPS = {"INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4"}
_TEXT_OPS = {"STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8"}
_TEXT_OPS |= {"BINBYTES", "SHORT_BINBYTES", "BINBYTES8", "BYTEARRAY8"}  # all push a string of known length
_PLAIN_OPS = {"NONE", "NEWTRUE", "NEWFALSE", "FLOAT", "BINFLOAT", "GLOBAL", "EXT1", "EXT2", "EXT4", "PERSID"}
_PLAIN_OPS |= {"EMPTY_LIST", "EMPTY_TUPLE", "EMPTY_DICT", "EMPTY_SET"}  # all push a value of weight 1
_NO_STACK_OPS = {"PROTO", "FRAME"}
_BINPUT, _BINGET, _MEMOIZE = (ord(pickle.BINPUT), ord(pickle.BINGET), ord(pickle.MEMOIZE))
_MEMO_PUTS = {_BINPUT, _MEMOIZE}
_SHORT_TEXT = {ord(pickle.SHORT_BINUNICODE), ord(pickle.SHORT_BINSTRING), ord(pickle.SHORT_BINBYTES)}


class _OpcodeScan:
    """Replays a pickle's opcodes on a model stack before :class:`pickle.Unpickler` runs them.

    Why: the unpickler hashes every dict key and set member as it inserts it, and a tuple's hash
    walks the whole tuple. Two bytes (``DUP``, ``TUPLE2``) double a tuple by sharing, so a
    64-byte file can make one key cost 2**28 steps and a few bytes more, centuries — inside
    ``load()``, long before :class:`_Converter` could count anything. The scan never builds a
    value: each stack entry is a cell ``[weight, predictable]``, where ``weight`` is the size of
    the value with shared parts counted every time they are reached (what hashing, comparing or
    copying it costs; long strings and ints weigh more) and ``predictable`` counts the tuples,
    frozensets and large ints inside it (keys whose hash the file can aim). The memo keeps cells,
    so a ``GET`` of a container brings its whole weight along. The file is refused, before
    anything is built, when a value outweighs :func:`_budget`, when everything hashed together
    does, when an integer is wider than :data:`MAX_INT_BITS`, or when more than
    :data:`MAX_PREDICTABLE_KEYS` predictable keys are hashed. The replay follows the C
    unpickler's rules (marks fence off the stack below them, memo misses and odd ``SETITEMS``
    are errors) and refuses, as "not a readable pickle", anything it cannot follow; well-formed
    pickles of plain data always replay.
    """

    def __init__(self, data: bytes, source: str) -> None:
        self.data = data
        self.source = source
        self.limit = _budget(len(data))
        self.stack: list[list[int]] = []
        self.marks: list[int] = []  # stack heights where a MARK was pushed
        self.memo: dict[int, list[int]] = {}
        self.hashed = 0
        self.predictable = 0
        self.at = 0  # offset of the opcode being replayed, for messages

    # -- errors -------------------------------------------------------------------------------
    def malformed(self, why: str) -> DatasetError:
        return DatasetError(f"not a readable pickle: {why} (opcode at byte {self.at})", self.source)

    def too_shared(self) -> DatasetError:
        return DatasetError(
            f"pickle refers to the same data too many times to be a data file (opcode at byte {self.at})",
            self.source,
        )

    # -- arguments ----------------------------------------------------------------------------
    def read_arg(self, fmt: str, pos: int) -> tuple[Any, int]:
        """Decode the argument in format ``fmt`` at ``pos``; returns (value, next position).

        Values: integers for numbers and memo indices, the byte length for strings, a line (bytes)
        for the text formats. Nothing is decoded that the scan does not need.
        """
        data = self.data
        if fmt in _FIXED_WIDTH:
            end = pos + _FIXED_WIDTH[fmt]
            if end > len(data):
                raise self.malformed("truncated")
            if fmt == "float8":
                return None, end
            return int.from_bytes(data[pos:end], "little", signed=fmt == "int4"), end
        if fmt in _LENGTH_PREFIX:
            width, signed = _LENGTH_PREFIX[fmt]
            size = int.from_bytes(data[pos : pos + width], "little", signed=signed)
            end = pos + width + size
            if size < 0 or end > len(data):
                raise self.malformed("truncated or negative length")
            return size, end
        if fmt in ("long1", "long4"):
            width = 1 if fmt == "long1" else 4
            size = int.from_bytes(data[pos : pos + width], "little", signed=fmt == "long4")
            end = pos + width + size
            if size < 0 or end > len(data):
                raise self.malformed("truncated or negative length")
            if 8 * size > MAX_INT_BITS + 8:
                raise DatasetError(f"pickle holds an integer of more than {MAX_INT_BITS} bits", self.source)
            return int.from_bytes(data[pos + width : end], "little", signed=True), end
        lines = []
        for _ in range(_TEXT_LINES[fmt]):
            end = data.find(b"\n", pos)
            if end < 0:
                raise self.malformed("no newline after a text argument")
            lines.append(data[pos:end])
            pos = end + 1
        return (lines[0] if len(lines) == 1 else lines), pos

    def check_global(self, lines: list[bytes]) -> None:
        """A ``GLOBAL``/``INST`` naming anything outside the allow-list is refused here already, as
        the unpickler would (``STACK_GLOBAL`` takes its names from the stack: the unpickler checks it)."""
        try:
            module, name = (line.decode("utf-8") for line in lines)
        except UnicodeDecodeError:
            raise self.malformed("a global's name is not UTF-8") from None
        _allowed_global(module, name, self.source)

    def text_int(self, line: bytes, name: str) -> int:
        """The integer of an ``INT``/``LONG``/``GET``/``PUT`` text argument (decimal; ``00``/``01`` are bools)."""
        if name == "INT" and line in (b"00", b"01"):
            return line == b"01"
        digits = line[:-1] if name == "LONG" and line.endswith(b"L") else line
        if len(digits) > MAX_INT_BITS // 3 + 2:
            raise DatasetError(f"pickle holds an integer of more than {MAX_INT_BITS} bits", self.source)
        try:
            return int(digits, 10)
        except ValueError:
            try:
                return int(digits, 0)
            except ValueError:
                raise self.malformed(f"{name} argument {line[:40]!r} is not an integer") from None

    # -- stack --------------------------------------------------------------------------------
    def need(self, count: int) -> None:
        """Require ``count`` entries above the innermost mark (the C unpickler's fence)."""
        if len(self.stack) - count < (self.marks[-1] if self.marks else 0):
            raise self.malformed("stack underflow")

    def pop(self, count: int) -> list[list[int]]:
        self.need(count)
        items = self.stack[-count:]
        del self.stack[-count:]
        return items

    def pop_mark(self) -> list[list[int]]:
        if not self.marks:
            raise self.malformed("no MARK to pop to")
        height = self.marks.pop()
        items = self.stack[height:]
        del self.stack[height:]
        return items

    def push(self, weight: int, predictable: int) -> None:
        if weight > self.limit:
            raise self.too_shared()
        self.stack.append([weight, predictable])

    def grow(self, cell: list[int], items: list[list[int]]) -> None:
        """An in-place update (APPEND, SETITEM, BUILD...): ``cell`` now also holds ``items``."""
        cell[0] += sum(item[0] for item in items)
        cell[1] += sum(item[1] for item in items)
        if cell[0] > self.limit:
            raise self.too_shared()

    def hash(self, items: list[list[int]], *, keys: bool) -> None:
        """``items`` get hashed: as dict keys / set members (``keys``), or as constructor arguments
        whose insides a callable (``set``, ``OrderedDict``) may insert anywhere."""
        self.hashed += sum(item[0] for item in items)
        self.predictable += sum(1 for item in items if item[1]) if keys else sum(item[1] for item in items)
        if self.hashed > self.limit:
            raise DatasetError(
                f"pickle makes the loader hash the same data too many times to be a data file "
                f"(opcode at byte {self.at})",
                self.source,
            )
        if self.predictable > MAX_PREDICTABLE_KEYS:
            raise DatasetError(
                f"pickle has more than {MAX_PREDICTABLE_KEYS} dict keys or set members whose hash a file can "
                "choose (tuples, frozensets, integers of 2**61 or more): refused, inserting them could take "
                "quadratic time",
                self.source,
            )

    def container_below(self, height: int) -> list[int]:
        """The list/dict/set that APPENDS/SETITEMS/ADDITEMS update: the entry just below ``height``."""
        if height <= (self.marks[-1] if self.marks else 0):
            raise self.malformed("stack underflow")
        return self.stack[height - 1]

    # -- the replay ---------------------------------------------------------------------------
    def run(self) -> None:
        data, stack, memo = self.data, self.stack, self.memo
        size = len(data)
        pos = 0
        while True:
            self.at = pos
            if pos >= size:
                raise self.malformed("ended before the STOP opcode")
            code = data[pos]
            # fast paths for what fills real refs files: memo traffic and short strings
            if code in _MEMO_PUTS and pos + 1 < size and len(stack) > (self.marks[-1] if self.marks else 0):
                if code == _BINPUT:
                    memo[data[pos + 1]] = stack[-1]
                    pos += 2
                    continue
                if code == _MEMOIZE:
                    memo[len(memo)] = stack[-1]
                    pos += 1
                    continue
            if code == _BINGET and pos + 1 < size and data[pos + 1] in memo:
                stack.append(memo[data[pos + 1]])
                pos += 2
                continue
            if code in _SHORT_TEXT and pos + 1 < size and pos + 2 + data[pos + 1] <= size:
                stack.append([1 + data[pos + 1] // 64, 0])  # at most 255 bytes: far below the budget
                pos += 2 + data[pos + 1]
                continue
            name = _NAME.get(code)
            if name is None:
                raise self.malformed(f"unknown opcode {bytes([code])!r}")
            arg, pos = self.read_arg(_ARG[code], pos + 1) if code in _ARG else (None, pos + 1)
            if name == "STOP":
                self.need(1)
                return
            if name in ("GLOBAL", "INST"):
                self.check_global(arg)
            self.step(name, arg)

    def step(self, name: str, arg: Any) -> None:
        stack = self.stack
        if name in ("BINPUT", "LONG_BINPUT", "PUT", "MEMOIZE"):
            self.need(1)
            if name == "MEMOIZE":
                index = len(self.memo)
            else:
                index = self.text_int(arg, name) if name == "PUT" else arg
                if index < 0:
                    raise self.malformed("negative memo index")
            self.memo[index] = stack[-1]
        elif name in ("BINGET", "LONG_BINGET", "GET"):
            index = self.text_int(arg, name) if name == "GET" else arg
            if index not in self.memo:
                raise self.malformed(f"memo entry {index} was never stored")
            stack.append(self.memo[index])
        elif name in _TEXT_OPS:
            self.push(1 + (len(arg) if isinstance(arg, bytes) else arg) // 64, 0)
        elif name in _INT_OPS:
            value = self.text_int(arg, name) if isinstance(arg, bytes) else arg
            if value.bit_length() > MAX_INT_BITS:
                raise DatasetError(f"pickle holds an integer of more than {MAX_INT_BITS} bits", self.source)
            self.push(1 + value.bit_length() // 512, int(abs(value) >= _HASH_MODULUS))
        elif name in _PLAIN_OPS:
            self.push(1, 0)
        elif name == "MARK":
            self.marks.append(len(stack))
        elif name in ("APPENDS", "SETITEMS", "ADDITEMS"):
            height = self.marks[-1] if self.marks else -1
            items = self.pop_mark()
            container = self.container_below(height)
            if name == "SETITEMS":
                if len(items) % 2:
                    raise self.malformed("odd number of items for SETITEMS")
                self.hash(items[0::2], keys=True)
            elif name == "ADDITEMS":
                self.hash(items, keys=True)
            self.grow(container, items)
        elif name in ("APPEND", "SETITEM", "BUILD"):
            self.need(3 if name == "SETITEM" else 2)
            items = self.pop(2 if name == "SETITEM" else 1)
            if name == "SETITEM":
                self.hash(items[:1], keys=True)
            elif name == "BUILD":
                self.hash(items, keys=False)
            self.grow(stack[-1], items)
        elif name in ("LIST", "TUPLE", "DICT", "FROZENSET", "INST", "OBJ"):
            items = self.pop_mark()
            if name == "DICT":
                if len(items) % 2:
                    raise self.malformed("odd number of items for DICT")
                self.hash(items[0::2], keys=True)
            elif name == "OBJ":
                if not items:
                    raise self.malformed("OBJ without a class")
                items = items[1:]
            if name in ("FROZENSET", "INST", "OBJ"):
                self.hash(items, keys=name == "FROZENSET")
            hashable = name in ("TUPLE", "FROZENSET", "INST", "OBJ")
            self.push(1 + sum(i[0] for i in items), hashable + sum(i[1] for i in items))
        elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
            items = self.pop(int(name[-1]))
            self.push(1 + sum(i[0] for i in items), 1 + sum(i[1] for i in items))
        elif name in ("REDUCE", "NEWOBJ", "NEWOBJ_EX"):
            items = self.pop(3 if name == "NEWOBJ_EX" else 2)[1:]  # the callable / class weighs nothing
            self.hash(items, keys=False)
            self.push(1 + sum(i[0] for i in items), 1 + sum(i[1] for i in items))
        elif name == "POP":
            if self.marks and self.marks[-1] == len(stack):
                self.marks.pop()
            else:
                self.pop(1)
        elif name == "POP_MARK":
            self.pop_mark()
        elif name == "DUP":
            self.need(1)
            stack.append(stack[-1])
        elif name in ("STACK_GLOBAL", "BINPERSID"):
            self.pop(2 if name == "STACK_GLOBAL" else 1)
            self.push(1, 0)
        elif name == "READONLY_BUFFER":
            self.need(1)
        elif name not in _NO_STACK_OPS:  # NEXT_BUFFER: out-of-band data, which a file cannot supply
            raise self.malformed(f"{name} is not supported")


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
    _OpcodeScan(data, where).run()  # refuses hashing/sharing bombs before the unpickler can hang on them
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
    converter = _Converter(where, budget=_budget(len(data)))
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
