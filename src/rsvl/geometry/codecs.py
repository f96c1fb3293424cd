"""Box <-> text codecs: how each vision-language model spells boxes inside text.

Every codec has the same shape (:class:`BoxCodec`)::

    text = codec.encode(objects, image_size)      # training targets, prompts
    objs = codec.decode(text, image_size)         # parse what a model generated

* ``objects`` are :class:`TextObject` (``label``, ``box``, ``difficult``) or plain
  ``(label, box)`` / ``(label, box, difficult)`` tuples.
* ``image_size`` is ``(width, height)`` in pixels of the image **as the model sees it**
  (PIL's ``Image.size``, after whatever resize the model's processor applies). Codecs that
  write absolute pixels (Qwen2.5-VL JSON, DOTA) do not need it and accept ``None``.
* Boxes use rsvl's internal conventions (:mod:`rsvl.geometry.boxes`): HBB ``xyxy`` float pixels
  on pixel edges; OBB le90 ``(cx, cy, w, h, angle)`` in radians; 8-point polygons clockwise on
  screen from DOTA's start vertex. ``codec.box_kind`` says which one ``decode`` returns
  (``"hbb"``, ``"poly"`` or ``"le90"``); ``encode`` also accepts the other kinds where the
  conversion is unambiguous (e.g. a le90 box for a polygon codec).

Quantisation bounds (``decode(encode(b))`` versus ``b``, for coordinates inside the image; add
float64 round-off, ~1e-9 relative):

=================  ====================================================================
``florence2_hbb``  ``|dx| <= 0.5 * W / 1000``, ``|dy| <= 0.5 * H / 1000`` per coordinate
``florence2_obb``  same bound on each polygon vertex coordinate
``qwen25vl_json``  ``<= 0.5`` pixel per coordinate (integers in the given frame)
``qwenvl``         ``|dx| <= 0.5 * W / 1000``, ``|dy| <= 0.5 * H / 1000`` (0-1000 grid)
``qwen2vl``        same as ``qwenvl`` (only the token spelling differs)
``geochat``        see :class:`GeoChatCodec` (0-100 grid and whole degrees)
``vrsbench``       ``|dx| <= 0.5 * W / 100``, ``|dy| <= 0.5 * H / 100``
``dota``           exact (shortest round-trip float formatting)
=================  ====================================================================

Empty input: ``encode([])`` is ``""`` (``"[]"`` for the JSON codec) and ``decode`` of an empty
or whitespace-only text is ``[]``. Codecs whose grammar embeds boxes in prose (Qwen-VL, GeoChat,
VRSBench) also return ``[]`` for prose without boxes; Florence-2, JSON and DOTA have no prose, so
anything else that is not a box is a :class:`~rsvl.errors.CodecError`.

Errors: malformed text raises :class:`~rsvl.errors.CodecError` (a ``ValueError``) naming what
was expected and the character offset (or line) with the offending fragment; a label that
contains one of the codec's delimiters is refused at encode time with the same error. Boxes
with the wrong shape or NaN/inf raise :class:`~rsvl.errors.GeometryError`. Text is only ever
parsed with regular expressions and ``json``; nothing is evaluated.

Labels are stripped of surrounding whitespace on both sides, so they round-trip stripped.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

import numpy as np

from rsvl.errors import CodecError, GeometryError, InputError
from rsvl.geometry.boxes import (
    best_begin_poly,
    hbb_to_obb,
    hbb_to_poly,
    normalize_le90,
    obb_to_poly,
    poly_area,
    poly_to_obb,
)

BoxKind = Literal["hbb", "poly", "le90"]
Size = tuple[float, float]

__all__ = [
    "CODECS",
    "BoxCodec",
    "DotaCodec",
    "Florence2Codec",
    "GeoChatCodec",
    "Qwen25JsonCodec",
    "QwenVLCodec",
    "TextObject",
    "VRSBenchCodec",
    "florence_dequantize",
    "florence_loc_tokens",
    "florence_quantize",
    "get_codec",
    "objects_from_arrays",
    "objects_to_arrays",
]


# --------------------------------------------------------------------------- objects and protocol


@dataclass(frozen=True, eq=False)
class TextObject:
    """One labelled box as a codec reads or writes it.

    Attributes:
        label: category or referring phrase ("" where the grammar allows an unlabelled box).
        box: float64 vector: ``(4,)`` xyxy, ``(8,)`` polygon or ``(5,)`` le90 OBB, as the
            codec's ``box_kind`` says.
        difficult: DOTA's difficult flag; other codecs ignore it and decode it as ``False``.
    """

    label: str
    box: np.ndarray
    difficult: bool = False

    def __post_init__(self) -> None:
        box = self.box.detach().cpu().numpy() if hasattr(self.box, "detach") else self.box
        object.__setattr__(self, "box", np.asarray(box, dtype=np.float64).reshape(-1))
        object.__setattr__(self, "difficult", bool(self.difficult))

    def __repr__(self) -> str:
        return f"TextObject(label={self.label!r}, box={self.box.tolist()}, difficult={self.difficult})"


ObjectLike = TextObject | tuple[str, Any] | tuple[str, Any, bool]


@runtime_checkable
class BoxCodec(Protocol):
    """What every codec offers; see the module docstring for the shared conventions."""

    @property
    def name(self) -> str:
        """Registry name (a key of :data:`CODECS`)."""
        ...

    @property
    def box_kind(self) -> BoxKind:
        """Box layout ``decode`` returns: ``"hbb"`` xyxy, ``"poly"`` 8 numbers, ``"le90"``."""
        ...

    def encode(self, objects: Iterable[ObjectLike], image_size: Size | None = None) -> str:
        """Write ``objects`` as this model's text."""
        ...

    def decode(self, text: str, image_size: Size | None = None) -> list[TextObject]:
        """Parse this model's text back into objects; malformed text raises CodecError."""
        ...


def objects_from_arrays(labels: Sequence[str], boxes: Any, difficult: Sequence[bool] | None = None) -> list[TextObject]:
    """Zip parallel ``labels`` and ``(N, k)`` ``boxes`` (numpy, torch or lists) into objects."""
    arr = np.asarray(boxes.detach().cpu() if hasattr(boxes, "detach") else boxes, dtype=np.float64)
    if arr.ndim != 2 and not (arr.ndim == 1 and arr.size == 0):
        raise GeometryError(f"boxes must have shape (N, k); got {arr.shape}")
    n = 0 if arr.size == 0 else arr.shape[0]
    flags = [False] * n if difficult is None else [bool(d) for d in difficult]
    if len(labels) != n or len(flags) != n:
        raise GeometryError(f"got {len(labels)} labels, {n} boxes and {len(flags)} difficult flags")
    return [TextObject(str(lab), arr[i].copy(), flags[i]) for i, lab in enumerate(labels)]


def objects_to_arrays(objects: Sequence[TextObject], width: int) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Split objects into ``(labels, boxes (N, width) float64, difficult (N,) bool)``.

    ``width`` is needed so that an empty list still gives a ``(0, width)`` array.
    """
    boxes = np.zeros((len(objects), width), dtype=np.float64)
    for i, obj in enumerate(objects):
        if obj.box.shape != (width,):
            raise GeometryError(f"object {i} has a box of shape {obj.box.shape}, expected ({width},)")
        boxes[i] = obj.box
    difficult = np.array([o.difficult for o in objects], dtype=bool)
    return [o.label for o in objects], boxes, difficult


# --------------------------------------------------------------------------- shared helpers


def _as_object(obj: ObjectLike) -> TextObject:
    """Accept a TextObject or a ``(label, box[, difficult])`` tuple."""
    if isinstance(obj, TextObject):
        return obj
    if isinstance(obj, tuple) and len(obj) in (2, 3):
        difficult = bool(obj[2]) if len(obj) == 3 else False
        return TextObject(obj[0], obj[1], difficult)
    raise InputError(f"expected a TextObject or a (label, box[, difficult]) tuple; got {obj!r}")


def _box_vector(box: Any, codec: str) -> np.ndarray:
    """A finite 1-D float64 copy of ``box`` (numpy, torch or a list)."""
    if hasattr(box, "detach"):
        box = box.detach().cpu().numpy()
    arr = np.asarray(box, dtype=np.float64).reshape(-1)
    if not np.isfinite(arr).all():
        raise GeometryError(f"{codec}: box holds NaN or inf: {arr.tolist()}")
    return arr


def _as_hbb(box: Any, codec: str) -> np.ndarray:
    """xyxy box for HBB codecs (exactly 4 numbers)."""
    arr = _box_vector(box, codec)
    if arr.shape != (4,):
        raise GeometryError(f"{codec}: expected an xyxy box of 4 numbers; got {arr.size} numbers")
    return arr


def _as_poly(box: Any, codec: str) -> np.ndarray:
    """8-point polygon from a polygon (8), a le90 OBB (5) or an xyxy box (4)."""
    arr = _box_vector(box, codec)
    if arr.size == 8:
        return arr
    if arr.size == 5:
        return np.asarray(obb_to_poly(arr), dtype=np.float64)
    if arr.size == 4:
        return np.asarray(hbb_to_poly(arr), dtype=np.float64)
    raise GeometryError(f"{codec}: expected a polygon (8), le90 OBB (5) or xyxy (4); got {arr.size} numbers")


def _as_le90(box: Any, codec: str) -> np.ndarray:
    """le90 OBB from a le90 OBB (5), a polygon (8, min-area rectangle) or an xyxy box (4)."""
    arr = _box_vector(box, codec)
    if arr.size == 5:
        return np.asarray(normalize_le90(arr), dtype=np.float64)
    if arr.size == 8:
        return np.asarray(poly_to_obb(arr), dtype=np.float64)
    if arr.size == 4:
        return np.asarray(hbb_to_obb(arr), dtype=np.float64)
    raise GeometryError(f"{codec}: expected a le90 OBB (5), polygon (8) or xyxy (4); got {arr.size} numbers")


def _image_wh(image_size: Size | None, codec: str) -> tuple[float, float]:
    """Validate ``(width, height)``: two finite positive numbers."""
    if image_size is None:
        raise InputError(f"{codec} needs image_size=(width, height) of the image the model sees")
    try:
        w, h = (float(v) for v in image_size)
    except (TypeError, ValueError):
        raise InputError(f"{codec}: image_size must be (width, height); got {image_size!r}") from None
    if not (math.isfinite(w) and math.isfinite(h) and w > 0 and h > 0):
        raise InputError(f"{codec}: image_size must be two positive finite numbers; got {image_size!r}")
    return w, h


def _clean_label(label: Any, codec: str, forbidden: Sequence[str], allow_empty: bool) -> str:
    """Strip ``label`` and refuse the codec's delimiters (they would break decoding)."""
    if not isinstance(label, str):
        raise CodecError(f"{codec}: label must be a string; got {type(label).__name__}")
    text = label.strip()
    if not text and not allow_empty:
        raise CodecError(f"{codec}: every object needs a non-empty label; got {label!r}")
    bad = [d for d in forbidden if d in text]
    if bad:
        raise CodecError(f"{codec}: label {label!r} contains the delimiter {bad[0]!r}, which this format reserves")
    return text


def _round_half_up(x: np.ndarray) -> np.ndarray:
    """Round to the nearest integer, halves up (deterministic, unlike banker's rounding)."""
    return np.floor(np.asarray(x, dtype=np.float64) + 0.5).astype(np.int64)


def _snippet(text: str, start: int, end: int | None = None, width: int = 40) -> str:
    """``repr`` of the text around an error, at most ``width`` characters."""
    end = start + width if end is None else min(end, start + width)
    return repr(text[start:end])


def _size_vector(w: float, h: float, n: int) -> np.ndarray:
    """``[w, h, w, h, ...]`` of length ``n`` (x coordinates scale with W, y with H)."""
    return np.tile(np.array([w, h], dtype=np.float64), n // 2)


# --------------------------------------------------------------------------- Florence-2


FLORENCE_BINS = 1000
_FLORENCE_SPECIALS = frozenset({"<s>", "</s>", "<pad>"})
_FLORENCE_TOKEN = re.compile(r"<[^<>]*>")
_LABEL_TEXT = re.compile(r"[^<]+")


def florence_loc_tokens(bins: int = FLORENCE_BINS) -> list[str]:
    """The ``<loc_0>`` ... ``<loc_{bins-1}>`` strings a Florence-2 tokenizer must know."""
    return [f"<loc_{k}>" for k in range(bins)]


def florence_quantize(values: Any, sizes: Any, bins: int = FLORENCE_BINS) -> np.ndarray:
    """Pixel coordinates -> bin indices ``floor(v / (size / bins))`` clipped to ``[0, bins-1]``.

    The same arithmetic as transformers' Florence-2 post-processor (quantize mode ``floor``), so
    targets written here are the bins the released model was trained on.
    """
    v = np.asarray(values, dtype=np.float64)
    per_bin = np.asarray(sizes, dtype=np.float64) / bins
    return np.clip(np.floor(v / per_bin), 0, bins - 1).astype(np.int64)


def florence_dequantize(indices: Any, sizes: Any, bins: int = FLORENCE_BINS) -> np.ndarray:
    """Bin indices -> pixel coordinates at the bin centre, ``(k + 0.5) * size / bins``."""
    k = np.asarray(indices, dtype=np.float64)
    return (k + 0.5) * (np.asarray(sizes, dtype=np.float64) / bins)


@dataclass(frozen=True)
class _Pending:
    """A Florence label being collected with its loc tokens."""

    label: str
    pos: int
    locs: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class Florence2Codec:
    """Florence-2 ``<loc_k>`` tokens: ``label<loc_x1><loc_y1><loc_x2><loc_y2>`` (HBB) or
    ``label`` + 8 loc tokens for the 4 polygon vertices, clockwise (OBB); objects joined by
    ``<sep>`` as in VLM4RSDet.

    Quantisation: ``k = floor(x / W * 1000)`` clipped to ``[0, 999]`` (y with H); decoding
    returns the bin centre ``(k + 0.5) / 1000 * W``, matching transformers' Florence-2
    post-processor. Bound: ``|err| <= 0.5 * W / 1000`` on x and ``0.5 * H / 1000`` on y for
    coordinates in ``[0, W]`` / ``[0, H]`` (coordinates outside are clipped into the image).

    OBB encoding accepts a polygon (8), le90 OBB (5) or xyxy (4) and writes the polygon
    clockwise from DOTA's start vertex (so one rectangle always gives one text); decoding returns
    the 8 dequantised numbers in the order written (``box_kind = "poly"``).

    Decoding also accepts Florence's native output: no ``<sep>``, a label followed by any
    multiple of 4 (8 for OBB) loc tokens meaning several boxes of that label, and ``<s>``,
    ``</s>``, ``<pad>`` anywhere. Any other text is an error (this grammar has no prose).

    Args:
        obb: False for HBB (4 locs per box), True for polygons (8 locs per box).
        sep: ``"<sep>"`` (VLM4RSDet) or ``""`` (Florence's native concatenation) when encoding.
    """

    obb: bool = False
    sep: Literal["<sep>", ""] = "<sep>"

    def __post_init__(self) -> None:
        if self.sep not in ("<sep>", ""):
            raise InputError(f"Florence2Codec: sep must be '<sep>' or ''; got {self.sep!r}")

    @property
    def name(self) -> str:
        return "florence2_obb" if self.obb else "florence2_hbb"

    @property
    def box_kind(self) -> BoxKind:
        return "poly" if self.obb else "hbb"

    @property
    def _per_box(self) -> int:
        return 8 if self.obb else 4

    def _coords(self, box: Any) -> np.ndarray:
        """The numbers written for one box: xyxy, or the canonical clockwise polygon."""
        if not self.obb:
            return _as_hbb(box, self.name)
        poly = _as_poly(box, self.name)
        if poly_area(poly) < 0:  # counter-clockwise on screen: reverse, keeping the first vertex
            pts = poly.reshape(4, 2)
            poly = pts[[0, 3, 2, 1]].reshape(8)
        return np.asarray(best_begin_poly(poly), dtype=np.float64)

    def encode(self, objects: Iterable[ObjectLike], image_size: Size | None = None) -> str:
        """``label<loc_..>...`` per object, joined by ``sep``; ``""`` for no objects."""
        w, h = _image_wh(image_size, self.name)
        parts = []
        for raw in objects:
            obj = _as_object(raw)
            label = _clean_label(obj.label, self.name, ("<", ">"), allow_empty=False)
            coords = self._coords(obj.box)
            bins = florence_quantize(coords, _size_vector(w, h, coords.size))
            parts.append(label + "".join(f"<loc_{k}>" for k in bins))
        return self.sep.join(parts)

    def decode(self, text: str, image_size: Size | None = None) -> list[TextObject]:
        """Parse labels and loc tokens; see the class docstring for the accepted grammar."""
        w, h = _image_wh(image_size, self.name)
        sizes = _size_vector(w, h, self._per_box)
        out: list[TextObject] = []
        pending: _Pending | None = None
        for kind, value, pos in self._tokens(text):
            if kind == "text":
                if pending is not None and pending.locs:
                    out.extend(self._flush(pending, text, sizes))
                    pending = None
                pending = _Pending(value, pos) if pending is None else _Pending(pending.label + value, pending.pos)
            elif kind == "loc":
                if pending is None or not pending.label.strip():
                    raise CodecError(
                        f"{self.name}: missing label before <loc_{value}> at offset {pos}: "
                        f"{_snippet(text, pos)}; expected 'label<loc_k>...'"
                    )
                pending.locs.append(int(value))
            else:  # <sep>
                if pending is not None:
                    out.extend(self._flush(pending, text, sizes))
                pending = None
        if pending is not None:
            out.extend(self._flush(pending, text, sizes))
        return out

    def _tokens(self, text: str) -> Iterable[tuple[str, Any, int]]:
        """Yield ``("text", str, pos)``, ``("loc", int, pos)``, ``("sep", None, pos)``."""
        pos = 0
        while pos < len(text):
            if text[pos] != "<":
                m = _LABEL_TEXT.match(text, pos)
                assert m is not None
                if m.group().strip():
                    yield "text", m.group(), pos
                pos = m.end()
                continue
            m = _FLORENCE_TOKEN.match(text, pos)
            if m is None:
                raise CodecError(
                    f"{self.name}: truncated token at offset {pos}: {_snippet(text, pos)}; "
                    "expected a complete '<loc_k>', '<sep>' or '</s>'"
                )
            token = m.group()
            if token == "<sep>":
                yield "sep", None, pos
            elif token.startswith("<loc_"):
                yield "loc", self._loc_index(token, text, pos), pos
            elif token not in _FLORENCE_SPECIALS:
                raise CodecError(
                    f"{self.name}: unknown token {token!r} at offset {pos}; expected '<loc_k>' "
                    "(k in 0..999), '<sep>', '<s>', '</s>' or '<pad>' (labels may not contain '<')"
                )
            pos = m.end()

    def _loc_index(self, token: str, text: str, pos: int) -> int:
        """The integer ``k`` of a ``<loc_k>`` token, checked to lie in ``[0, 999]``."""
        digits = token[len("<loc_") : -1]
        if not re.fullmatch(r"[0-9]+", digits):
            raise CodecError(
                f"{self.name}: non-numeric loc token {token!r} at offset {pos}; expected <loc_k> "
                "with an integer k in 0..999"
            )
        k = int(digits)
        if k >= FLORENCE_BINS:
            raise CodecError(
                f"{self.name}: loc index {k} out of range [0, {FLORENCE_BINS - 1}] in {token!r} at offset {pos}"
            )
        return k

    def _flush(self, pending: _Pending, text: str, sizes: np.ndarray) -> list[TextObject]:
        """Turn one label and its loc tokens into ``len(locs) / per_box`` objects."""
        label = pending.label.strip()
        n, per = len(pending.locs), self._per_box
        if n == 0 or n % per:
            raise CodecError(
                f"{self.name}: expected a multiple of {per} <loc_k> tokens after label {label!r} "
                f"at offset {pending.pos}, got {n}: {_snippet(text, pending.pos, width=60)}"
            )
        locs = np.asarray(pending.locs).reshape(-1, per)
        return [TextObject(label, florence_dequantize(row, sizes)) for row in locs]


# --------------------------------------------------------------------------- Qwen2.5-VL JSON


_FENCE_OPEN = re.compile(r"^[ \t]*```[A-Za-z0-9_+-]*[ \t]*$", re.MULTILINE)


def _reject_constant(name: str) -> float:
    """json hook for NaN / Infinity / -Infinity: never valid coordinates."""
    raise CodecError(f"qwen25vl_json: non-finite number {name} in JSON; coordinates must be finite")


_JSON_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


@dataclass(frozen=True)
class Qwen25JsonCodec:
    """Qwen2.5-VL grounding JSON: ``[{"bbox_2d": [x1, y1, x2, y2], "label": "plane"}, ...]``.

    Coordinates are absolute integer pixels of the image the model sees (Qwen2.5-VL works on
    its resized image: pass boxes already scaled to it, ``image_size`` is not used). Encoding
    rounds half up, so the bound is ``|err| <= 0.5`` pixel per coordinate; nothing is clipped.

    Decoding tolerates a Markdown ```` ```json ```` fence and prose around the JSON, and a single
    object instead of a list; it parses the first JSON value that starts with ``[`` or ``{``
    (after the first line that opens a fence, if any) and ignores what follows it.
    It checks every item: an object with ``bbox_2d`` (4 finite numbers, ints or floats) and a
    string ``label``; extra keys are ignored. NaN/Infinity are refused. ``encode([])`` is
    ``"[]"``; blank text decodes to ``[]``, other text without JSON is an error.

    Args:
        fenced: wrap the encoded JSON in ```` ```json ... ``` ```` as Qwen2.5-VL prints it.
    """

    fenced: bool = False
    name: ClassVar[str] = "qwen25vl_json"
    box_kind: ClassVar[BoxKind] = "hbb"

    def encode(self, objects: Iterable[ObjectLike], image_size: Size | None = None) -> str:
        """JSON list with integer ``bbox_2d`` and ``label`` per object."""
        items = []
        for raw in objects:
            obj = _as_object(raw)
            label = _clean_label(obj.label, self.name, (), allow_empty=True)
            box = _round_half_up(_as_hbb(obj.box, self.name)).tolist()
            items.append({"bbox_2d": box, "label": label})
        body = json.dumps(items, ensure_ascii=False)
        return f"```json\n{body}\n```" if self.fenced else body

    def decode(self, text: str, image_size: Size | None = None) -> list[TextObject]:
        """Find, parse and validate the JSON; see the class docstring."""
        fence = _FENCE_OPEN.search(text)
        begin = 0 if fence is None else fence.end()
        starts = [i for i in (text.find("[", begin), text.find("{", begin)) if i >= 0]
        if not starts:
            if not text[begin:].replace("```", "").strip():
                return []
            raise CodecError(
                f'{self.name}: expected a JSON list of {{"bbox_2d": [x1, y1, x2, y2], "label": ...}} '
                f"objects; found no '[' or '{{' in {_snippet(text, begin, width=60)}"
            )
        start = min(starts)
        try:
            value, _ = _JSON_DECODER.raw_decode(text, start)
        except json.JSONDecodeError as e:
            raise CodecError(f"{self.name}: invalid JSON at offset {e.pos}: {e.msg}: {_snippet(text, e.pos)}") from None
        items = [value] if isinstance(value, dict) else value
        if not isinstance(items, list):
            raise CodecError(f"{self.name}: expected a JSON list of objects at offset {start}")
        return [self._item(item, i) for i, item in enumerate(items)]

    def _item(self, item: Any, i: int) -> TextObject:
        """Validate one ``{"bbox_2d": [...], "label": ...}`` item."""
        if not isinstance(item, dict):
            raise CodecError(f"{self.name}: item {i}: expected an object with 'bbox_2d' and 'label', got {item!r}")
        if "bbox_2d" not in item:
            raise CodecError(f"{self.name}: item {i}: missing key 'bbox_2d' in {item!r}")
        bbox = item["bbox_2d"]
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_number(v) for v in bbox)):
            raise CodecError(f"{self.name}: item {i}: 'bbox_2d' must be a list of 4 numbers, got {bbox!r}")
        try:
            box = np.asarray(bbox, dtype=np.float64)
        except OverflowError:
            box = np.array([np.inf])
        if not np.isfinite(box).all():
            raise CodecError(f"{self.name}: item {i}: 'bbox_2d' holds a non-finite number: {bbox!r}")
        if "label" not in item:
            raise CodecError(f"{self.name}: item {i}: missing key 'label' in {item!r}")
        if not isinstance(item["label"], str):
            raise CodecError(f"{self.name}: item {i}: 'label' must be a string, got {item['label']!r}")
        return TextObject(item["label"].strip(), box)


# --------------------------------------------------------------------------- Qwen-VL / Qwen2-VL


_QWEN_TAGS: dict[str, tuple[str, str, str, str]] = {
    "qwen-vl": ("<ref>", "</ref>", "<box>", "</box>"),
    "qwen2-vl": ("<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>", "<|box_end|>"),
}
_QWEN_ROLE = {tag: i for tags in _QWEN_TAGS.values() for i, tag in enumerate(tags)}
_QWEN_TAG_RE = re.compile("|".join(re.escape(t) for t in sorted(_QWEN_ROLE, key=len, reverse=True)))
_QWEN_BOX_RE = re.compile(r"\s*\(\s*(-?\d+)\s*,\s*(-?\d+)\s*\)\s*,\s*\(\s*(-?\d+)\s*,\s*(-?\d+)\s*\)\s*")
_REF_OPEN, _REF_CLOSE, _BOX_OPEN, _BOX_CLOSE = range(4)
QWEN_BINS = 1000


@dataclass(frozen=True)
class QwenVLCodec:
    """Qwen-VL / Qwen2-VL boxes on a 0-1000 grid.

    ``<ref>label</ref><box>(x1,y1),(x2,y2)</box>`` (``spelling="qwen-vl"``) or
    ``<|object_ref_start|>label<|object_ref_end|><|box_start|>(x1,y1),(x2,y2)<|box_end|>``
    (``spelling="qwen2-vl"``). Coordinates are ``round(x / W * 1000)`` (halves up) clipped to
    ``[0, 1000]``; decoding gives ``k / 1000 * W``. Bound: ``|err| <= 0.5 * W / 1000`` on x and
    ``0.5 * H / 1000`` on y for coordinates inside the image.

    Encoding writes one ref per object (none for an empty label, or an empty ``<ref></ref>``
    where a previous ref would otherwise label the box). Decoding accepts both
    spellings, prose between tags, and several boxes after one ref: a ref labels every box that
    follows it until the next ref; boxes before any ref get the label ``""``. Unterminated or
    stray tags, malformed box contents and coordinates outside ``[0, 1000]`` are errors.
    """

    spelling: Literal["qwen-vl", "qwen2-vl"] = "qwen-vl"
    box_kind: ClassVar[BoxKind] = "hbb"

    def __post_init__(self) -> None:
        if self.spelling not in _QWEN_TAGS:
            raise InputError(f"QwenVLCodec: spelling must be 'qwen-vl' or 'qwen2-vl'; got {self.spelling!r}")

    @property
    def name(self) -> str:
        return "qwenvl" if self.spelling == "qwen-vl" else "qwen2vl"

    def encode(self, objects: Iterable[ObjectLike], image_size: Size | None = None) -> str:
        """Concatenated ``ref`` + ``box`` spans; ``""`` for no objects."""
        w, h = _image_wh(image_size, self.name)
        ref_open, ref_close, box_open, box_close = _QWEN_TAGS[self.spelling]
        parts = []
        carried = ""  # the label a decoder would give the next box without a ref
        for raw in objects:
            obj = _as_object(raw)
            label = _clean_label(obj.label, self.name, tuple(_QWEN_ROLE), allow_empty=True)
            box = _as_hbb(obj.box, self.name)
            k = np.clip(_round_half_up(box * QWEN_BINS / _size_vector(w, h, 4)), 0, QWEN_BINS)
            ref = f"{ref_open}{label}{ref_close}" if label or carried else ""
            parts.append(f"{ref}{box_open}({k[0]},{k[1]}),({k[2]},{k[3]}){box_close}")
            carried = label
        return "".join(parts)

    def decode(self, text: str, image_size: Size | None = None) -> list[TextObject]:
        """Walk the tags in order, pairing each opener with its closer."""
        w, h = _image_wh(image_size, self.name)
        sizes = _size_vector(w, h, 4)
        tags = list(_QWEN_TAG_RE.finditer(text))
        out: list[TextObject] = []
        label = ""
        i = 0
        while i < len(tags):
            opener = tags[i]
            role = _QWEN_ROLE[opener.group()]
            if role in (_REF_CLOSE, _BOX_CLOSE):
                raise CodecError(
                    f"{self.name}: unexpected {opener.group()} at offset {opener.start()} without its opening tag"
                )
            closer = tags[i + 1] if i + 1 < len(tags) else None
            if closer is None or _QWEN_ROLE[closer.group()] != role + 1:
                found = "end of text" if closer is None else f"{closer.group()} at offset {closer.start()}"
                raise CodecError(
                    f"{self.name}: unterminated {opener.group()} at offset {opener.start()}: expected its "
                    f"closing tag, found {found}: {_snippet(text, opener.start())}"
                )
            inner = text[opener.end() : closer.start()]
            if role == _REF_OPEN:
                label = inner.strip()
            else:
                out.append(TextObject(label, self._box(inner, opener.end()) * sizes / QWEN_BINS))
            i += 2
        return out

    def _box(self, inner: str, pos: int) -> np.ndarray:
        """Parse ``(x1,y1),(x2,y2)`` and check the 0-1000 range."""
        m = _QWEN_BOX_RE.fullmatch(inner)
        if m is None:
            raise CodecError(
                f"{self.name}: expected '(x1,y1),(x2,y2)' with integers in [0, {QWEN_BINS}] inside the box "
                f"at offset {pos}, got {inner[:60]!r}"
            )
        k = np.array([int(g) for g in m.groups()], dtype=np.float64)
        bad = k[(k < 0) | (k > QWEN_BINS)]
        if bad.size:
            raise CodecError(
                f"{self.name}: coordinate {int(bad[0])} out of range [0, {QWEN_BINS}] in box at offset {pos}: "
                f"{inner[:60]!r}"
            )
        return k


# --------------------------------------------------------------------------- GeoChat / VRSBench


_BRACE_SCAN = re.compile(r"<p>|</p>|\{\s*<")
_BRACE_COORDS = re.compile(r"(?:\s*<[^<>{}]*>)+\s*")
_BRACE_VALUE = re.compile(r"<([^<>{}]*)>")
_BRACE_INT = re.compile(r"\s*(-?\d+)\s*")
_BRACE_ANGLE = re.compile(r"\s*<?\s*(-?\d+)\s*>?\s*")
_BRACE_CHAIN = re.compile(r"\s*<delim>\s*(?=\{)")
_BRACE_FORBIDDEN = ("<p>", "</p>", "<delim>", "{", "}")


@dataclass(frozen=True)
class _BraceBox:
    """One ``{<a><b><c><d>|<t>}`` found in text, with the label that owns it."""

    label: str
    values: tuple[int, int, int, int]
    angle: int | None
    pos: int


def _brace_text(values: Sequence[int], angle: int | None) -> str:
    """``{<a><b><c><d>}`` or ``{<a><b><c><d>|<t>}``."""
    body = "".join(f"<{int(v)}>" for v in values)
    return "{" + body + ("" if angle is None else f"|<{int(angle)}>") + "}"


def _brace_groups(labelled: Iterable[tuple[str, str]]) -> str:
    """``<p>label</p> {b1}<delim>{b2}`` per run of equal labels, runs on separate lines."""
    groups: list[tuple[str, list[str]]] = []
    for label, box in labelled:
        if groups and groups[-1][0] == label:
            groups[-1][1].append(box)
        else:
            groups.append((label, [box]))
    return "\n".join((f"<p>{lab}</p> " if lab else "") + "<delim>".join(boxes) for lab, boxes in groups)


def _brace_scan(text: str, codec: str) -> list[_BraceBox]:
    """Find GeoChat-style boxes and their ``<p>label</p>`` owners in free text.

    As in GeoChat's demo parser, a phrase owns the next box and every box chained to it by
    ``<delim>``; other boxes are unlabelled (``""``). Prose anywhere else is ignored.
    """
    out: list[_BraceBox] = []
    pending: str | None = None  # label of a <p>..</p> waiting for its first box
    chained: str | None = None  # label carried to the next box by <delim>
    pos = 0
    while (m := _BRACE_SCAN.search(text, pos)) is not None:
        if m.group() == "</p>":
            raise CodecError(f"{codec}: unexpected '</p>' at offset {m.start()} without '<p>'")
        if m.group() == "<p>":
            end = text.find("</p>", m.end())
            inner = text[m.end() : end]
            if end < 0 or "<p>" in inner:
                raise CodecError(f"{codec}: unterminated '<p>' at offset {m.start()}: {_snippet(text, m.start())}")
            pending, chained, pos = inner.strip(), None, end + len("</p>")
            continue
        close = text.find("}", m.start())
        if close < 0 or "{" in text[m.start() + 1 : close]:
            raise CodecError(
                f"{codec}: unterminated box at offset {m.start()}: expected '}}' after {_snippet(text, m.start())}"
            )
        values, angle = _brace_parse(text[m.start() + 1 : close], text, m.start(), codec)
        label = pending if pending is not None else (chained if chained is not None else "")
        out.append(_BraceBox(label, values, angle, m.start()))
        pending = None
        chained = label if _BRACE_CHAIN.match(text, close + 1) else None
        pos = close + 1
    return out


def _brace_parse(inner: str, text: str, pos: int, codec: str) -> tuple[tuple[int, int, int, int], int | None]:
    """Parse ``<a><b><c><d>`` with an optional ``|<t>`` (the text between the braces)."""
    where = f"in box at offset {pos}: {_snippet(text, pos, pos + len(inner) + 2, width=60)}"
    coords, bar, angle_text = inner.partition("|")
    if not _BRACE_COORDS.fullmatch(coords):
        raise CodecError(f"{codec}: expected '<x1><y1><x2><y2>' {where}")
    raw = _BRACE_VALUE.findall(coords)
    if len(raw) != 4:
        raise CodecError(f"{codec}: expected 4 coordinates <x1><y1><x2><y2>, got {len(raw)} {where}")
    for v in raw:
        if not _BRACE_INT.fullmatch(v):
            raise CodecError(f"{codec}: non-integer coordinate {v!r} {where}; expected integers")
    values = tuple(int(v) for v in raw)
    if not bar:
        return values, None  # type: ignore[return-value]
    am = _BRACE_ANGLE.fullmatch(angle_text)
    if am is None:
        raise CodecError(f"{codec}: expected an integer angle '|<theta>' {where}")
    return values, int(am.group(1))  # type: ignore[return-value]


def _geochat_angle(w: float, h: float, angle: float) -> tuple[int, float, float]:
    """le90 ``(w, h, angle rad)`` -> GeoChat ``(theta deg in 1..90, extent_x, extent_y)``.

    The angle is rounded to whole degrees first; then the same rectangle is re-described with
    its angle in ``(0, 90]`` (OpenCV >= 4.5.1 ``minAreaRect`` range): adding an odd multiple of
    90 degrees swaps which side lies along the rotated x axis.
    """
    a = int(_round_half_up(math.degrees(angle)))
    theta = (a - 1) % 90 + 1
    swap = ((theta - a) // 90) % 2 == 1
    return theta, (h if swap else w), (w if swap else h)


@dataclass(frozen=True)
class GeoChatCodec:
    """GeoChat rotated boxes ``{<x1><y1><x2><y2>|<theta>}`` on a 0-100 grid.

    Conventions (source: GeoChat's ``geochat_demo.py``, ``bbox_and_angle_to_polygon``, and the
    released model's outputs such as ``{<0><53><29><73>|<90>}``; paper: "{<bx_left><by_top>
    <bx_right><by_bottom>|θ}"):

    * ``x1, y1, x2, y2`` are the corners of the box **before rotation**, i.e. its extent
      ``cx -+ w'/2``, ``cy -+ h'/2`` around the centre, each ``round(x / W * 100)`` (halves up,
      y with H). They are not clipped: a rotated box inside the image can have an unrotated
      extent that leaves it, so values below 0 or above 100 are written and read.
    * ``theta`` is in whole degrees, rotation about the centre in image coordinates (y down):
      the ``w'`` side points along ``(cos theta, sin theta)``, i.e. positive = clockwise on
      screen, the same sense as rsvl's le90 and OpenCV's ``RotatedRect``. (GeoChat's demo draws
      with ``cv2.getRotationMatrix2D``, which turns the other way; its ``bbox_and_angle_to_polygon``
      and third-party GeoChat evaluators use this sense.)
    * Encoding writes ``theta`` in ``1..90`` like OpenCV >= 4.5.1 ``minAreaRect``, which the
      released model follows: an axis-aligned box is written with ``theta = 90`` and its extent
      swapped. Decoding accepts any integer angle (``0``, negatives) and a missing ``|<theta>``
      (``theta = 0``, GeoChat's ``[identify]`` input form), and returns a le90 OBB.

    Encoding accepts a le90 OBB (5), a polygon (8, via its minimum-area rectangle) or xyxy (4).
    Objects are written as ``<p>label</p> {box}<delim>{box}`` per run of equal labels (GeoChat's
    grounding answers), one run per line; an empty label writes the bare box (referring answers).
    Decoding finds boxes in free text; a ``<p>`` phrase labels its next box and the boxes chained
    to it by ``<delim>``; other boxes get ``""``.

    Quantisation bound, with ``sx = W / 100``, ``sy = H / 100``: centre ``|dcx| <= sx / 2``,
    ``|dcy| <= sy / 2``; unrotated extent ``|dw'| <= sx``, ``|dh'| <= sy``; angle ``<= 0.5`` deg.
    Hence every corner of the original box lies within
    ``hypot(sx, sy) + (pi / 360) * hypot(w, h) / 2`` of a corner of the decoded box, and the area
    changes by at most ``w' * sy + h' * sx + sx * sy``.
    """

    name: ClassVar[str] = "geochat"
    box_kind: ClassVar[BoxKind] = "le90"

    def encode(self, objects: Iterable[ObjectLike], image_size: Size | None = None) -> str:
        """``<p>label</p> {<x1><y1><x2><y2>|<theta>}`` runs; ``""`` for no objects."""
        w_img, h_img = _image_wh(image_size, self.name)
        labelled = []
        for raw in objects:
            obj = _as_object(raw)
            label = _clean_label(obj.label, self.name, _BRACE_FORBIDDEN, allow_empty=True)
            cx, cy, w, h, a = _as_le90(obj.box, self.name)
            theta, ex, ey = _geochat_angle(w, h, a)
            corners = np.array([cx - ex / 2, cy - ey / 2, cx + ex / 2, cy + ey / 2])
            values = _round_half_up(corners * 100 / _size_vector(w_img, h_img, 4))
            labelled.append((label, _brace_text(values.tolist(), theta)))
        return _brace_groups(labelled)

    def decode(self, text: str, image_size: Size | None = None) -> list[TextObject]:
        """Boxes found in ``text`` as le90 OBBs (see the class docstring)."""
        w_img, h_img = _image_wh(image_size, self.name)
        out = []
        for found in _brace_scan(text, self.name):
            x1, y1, x2, y2 = np.asarray(found.values, dtype=np.float64) * _size_vector(w_img, h_img, 4) / 100
            theta = math.radians(found.angle or 0)
            obb = np.array([(x1 + x2) / 2, (y1 + y2) / 2, abs(x2 - x1), abs(y2 - y1), theta])
            out.append(TextObject(found.label, np.asarray(normalize_le90(obb), dtype=np.float64)))
        return out


@dataclass(frozen=True)
class VRSBenchCodec:
    """VRSBench horizontal boxes ``{<x1><y1><x2><y2>}``: integers ``round(x / W * 100)`` (halves
    up, y with H) clipped to ``[0, 100]``; decoding gives ``k / 100 * W``.

    Bound: ``|err| <= 0.5 * W / 100`` on x and ``0.5 * H / 100`` on y inside the image.
    Same text layout as :class:`GeoChatCodec` (``<p>label</p>`` phrases, ``<delim>`` chains,
    prose ignored) without the angle: a ``|<theta>`` part, or a value outside ``[0, 100]``, is an
    error.
    """

    name: ClassVar[str] = "vrsbench"
    box_kind: ClassVar[BoxKind] = "hbb"

    def encode(self, objects: Iterable[ObjectLike], image_size: Size | None = None) -> str:
        """``<p>label</p> {<x1><y1><x2><y2>}`` runs; ``""`` for no objects."""
        w, h = _image_wh(image_size, self.name)
        labelled = []
        for raw in objects:
            obj = _as_object(raw)
            label = _clean_label(obj.label, self.name, _BRACE_FORBIDDEN, allow_empty=True)
            box = _as_hbb(obj.box, self.name)
            values = np.clip(_round_half_up(box * 100 / _size_vector(w, h, 4)), 0, 100)
            labelled.append((label, _brace_text(values.tolist(), None)))
        return _brace_groups(labelled)

    def decode(self, text: str, image_size: Size | None = None) -> list[TextObject]:
        """Boxes found in ``text`` as xyxy pixels."""
        w, h = _image_wh(image_size, self.name)
        out = []
        for found in _brace_scan(text, self.name):
            if found.angle is not None:
                raise CodecError(
                    f"{self.name}: box at offset {found.pos} has an angle '|<{found.angle}>'; "
                    "VRSBench boxes are '{<x1><y1><x2><y2>}' without one"
                )
            bad = [v for v in found.values if not 0 <= v <= 100]
            if bad:
                raise CodecError(f"{self.name}: coordinate {bad[0]} out of range [0, 100] in box at offset {found.pos}")
            box = np.asarray(found.values, dtype=np.float64) * _size_vector(w, h, 4) / 100
            out.append(TextObject(found.label, box))
        return out


# --------------------------------------------------------------------------- DOTA txt


_DOTA_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_DOTA_HEADER = re.compile(r"(?i)(imagesource|gsd)\s*:")


def _format_number(x: float) -> str:
    """Shortest text that reads back as exactly ``x``; integral values without ``.0``."""
    x = float(x)
    if x.is_integer() and abs(x) < 2**53:
        return str(int(x))
    return repr(x)


@dataclass(frozen=True)
class DotaCodec:
    """DOTA label lines ``x1 y1 x2 y2 x3 y3 x4 y4 category difficult``, one object per line.

    Encoding writes every coordinate at full float64 precision (``repr``, integers without
    ``.0``), so the round trip is exact; the polygon is written in the order given (a le90 OBB
    (5) or xyxy (4) is converted to the canonical polygon first). Lines are joined by ``"\\n"``
    with no trailing newline. Categories must be non-empty and free of whitespace.

    Decoding skips blank lines and DOTA's ``imagesource:`` / ``gsd:`` header lines; the
    ``difficult`` field is optional (missing means 0) and must be ``0`` or ``1``. Errors name the
    1-based line (also set as the error's ``line``). ``image_size`` is not used.
    """

    name: ClassVar[str] = "dota"
    box_kind: ClassVar[BoxKind] = "poly"

    def encode(self, objects: Iterable[ObjectLike], image_size: Size | None = None) -> str:
        """One line per object; ``""`` for no objects."""
        lines = []
        for raw in objects:
            obj = _as_object(raw)
            label = _clean_label(obj.label, self.name, (), allow_empty=False)
            if re.search(r"\s", label):
                raise CodecError(f"{self.name}: category {label!r} contains whitespace, the field separator")
            coords = " ".join(_format_number(v) for v in _as_poly(obj.box, self.name))
            lines.append(f"{coords} {label} {int(bool(obj.difficult))}")
        return "\n".join(lines)

    def decode(self, text: str, image_size: Size | None = None) -> list[TextObject]:
        """Parse every non-blank, non-header line."""
        out = []
        for lineno, line in enumerate(text.splitlines(), start=1):
            stripped = line.strip()
            if stripped and not _DOTA_HEADER.match(stripped):
                out.append(self._line(stripped, lineno))
        return out

    def _line(self, line: str, lineno: int) -> TextObject:
        """Parse one ``x1 y1 ... y4 category [difficult]`` line."""
        fields = line.split()
        if len(fields) not in (9, 10):
            raise CodecError(
                f"{self.name}: line {lineno}: expected 'x1 y1 x2 y2 x3 y3 x4 y4 category [difficult]' "
                f"(9 or 10 fields), got {len(fields)}: {line[:80]!r}",
                line=lineno,
            )
        for j, f in enumerate(fields[:8]):
            if not _DOTA_NUMBER.fullmatch(f) or not math.isfinite(float(f)):
                raise CodecError(
                    f"{self.name}: line {lineno}: field {j + 1} ({f!r}) is not a finite number", line=lineno
                )
        difficult = fields[9] if len(fields) == 10 else "0"
        if difficult not in ("0", "1"):
            raise CodecError(
                f"{self.name}: line {lineno}: difficult flag must be 0 or 1, got {difficult!r}", line=lineno
            )
        box = np.array([float(f) for f in fields[:8]], dtype=np.float64)
        return TextObject(fields[8], box, difficult == "1")


# --------------------------------------------------------------------------- registry


CODECS: dict[str, BoxCodec] = {
    codec.name: codec
    for codec in (
        Florence2Codec(obb=False),
        Florence2Codec(obb=True),
        Qwen25JsonCodec(),
        QwenVLCodec(spelling="qwen-vl"),
        QwenVLCodec(spelling="qwen2-vl"),
        GeoChatCodec(),
        VRSBenchCodec(),
        DotaCodec(),
    )
}
"""Default instance of every codec by name (construct a class yourself for other options)."""


def get_codec(name: str) -> BoxCodec:
    """The codec registered as ``name``; an unknown name lists the known ones."""
    try:
        return CODECS[name]
    except KeyError:
        raise InputError(f"unknown box codec {name!r}; known: {', '.join(sorted(CODECS))}") from None
