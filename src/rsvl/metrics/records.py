"""Small helpers every task metric shares: ids compared as strings, JSON / JSON Lines records,
``id -> value`` files, and the missing-prediction policy."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from os import PathLike
from pathlib import Path
from typing import Any, TypeVar

from rsvl.datasets.base import load_json
from rsvl.errors import DatasetError, InputError

V = TypeVar("V")


def id_key(value: Any, what: str = "id") -> str:
    """The string form ids are compared in; ints and strings only (bools and None refused)."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise InputError(f"{what}: expected an int or str id, got {type(value).__name__} {value!r:.60}")
    return str(value)


def keyed(mapping: Mapping[Any, V], what: str) -> dict[str, V]:
    """``mapping`` with string keys; two keys with the same string form (``1`` and ``"1"``) raise."""
    if not isinstance(mapping, Mapping):
        raise InputError(f"{what}: expected a mapping id -> value, got {type(mapping).__name__}")
    out: dict[str, V] = {}
    for key, value in mapping.items():
        k = id_key(key, f"{what} key")
        if k in out:
            raise InputError(f"{what}: ids {key!r} and another key both read as {k!r}")
        out[k] = value
    return out


def split_ids(gt: Mapping[str, Any], pred: Mapping[str, Any], what: str) -> list[str]:
    """Ground-truth ids without a prediction (sorted); predictions for unknown ids raise."""
    unknown = [k for k in pred if k not in gt]
    if unknown:
        shown = ", ".join(repr(k) for k in sorted(unknown)[:5])
        raise InputError(
            f"{what}: {len(unknown)} prediction(s) for ids absent from the ground truth "
            f"(e.g. {shown}); predictions must use the ground truth's ids"
        )
    return sorted(k for k in gt if k not in pred)


def check_missing_policy(missing: str) -> None:
    if missing not in ("wrong", "error"):
        raise InputError(f"missing must be 'wrong' or 'error', got {missing!r}")


def missing_message(missing_ids: Sequence[str], total: int, consequence: str) -> str:
    shown = ", ".join(repr(k) for k in missing_ids[:5])
    more = "" if len(missing_ids) <= 5 else ", ..."
    return f"{len(missing_ids)} of {total} ground-truth items have no prediction ({shown}{more}); {consequence}"


def read_json_records(path: str | PathLike[str]) -> tuple[Any, bool]:
    """Parse ``path`` as JSON, or as JSON Lines when its name ends in ``.jsonl``.

    Returns ``(data, is_lines)``: for JSON Lines, ``data`` is a list of ``(line_number, value)``.
    Syntax errors raise :class:`DatasetError` naming the file and line.
    """
    p = Path(path)
    if p.suffix.lower() != ".jsonl":
        return load_json(p), False
    from rsvl.datasets.base import read_text_lines

    rows: list[tuple[int, Any]] = []
    for number, text in read_text_lines(p):
        if not text.strip():
            continue
        try:
            rows.append((number, json.loads(text, parse_constant=_no_constant)))
        except ValueError as exc:
            raise DatasetError(f"invalid JSON: {exc}", p, number) from None
    return rows, True


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _records(data: Any, is_lines: bool, path: Path) -> list[tuple[str, int | None, Any]]:
    """``(location, line, record)`` for a JSON list / JSON Lines file."""
    if is_lines:
        return [(f"line {n}", n, rec) for n, rec in data]
    if not isinstance(data, list):
        raise DatasetError(f"expected a JSON object id -> value or a list of records, got {type(data).__name__}", path)
    return [(f"[{i}]", None, rec) for i, rec in enumerate(data)]


def load_id_mapping(
    path: str | PathLike[str],
    value_key: str | Sequence[str],
    id_keys: Sequence[str] = ("id", "question_id", "image_id"),
) -> dict[str, Any]:
    """Read ``id -> value`` from JSON or JSON Lines.

    Accepted shapes: a JSON object ``{id: value}``; a JSON list (or ``.jsonl`` lines) of records
    each holding one of ``id_keys`` and ``value_key`` (several names: the first a record has is
    used). Duplicate ids raise with their location.
    """
    value_keys = [value_key] if isinstance(value_key, str) else list(value_key)
    p = Path(path)
    data, is_lines = read_json_records(p)
    if not is_lines and isinstance(data, dict):
        return {id_key(k, f"key {k!r}"): v for k, v in data.items()}
    out: dict[str, Any] = {}
    for where, line, record in _records(data, is_lines, p):
        if not isinstance(record, dict):
            raise DatasetError(f"{where}: expected an object, got {type(record).__name__}", p, line)
        key_name = next((k for k in id_keys if k in record), None)
        if key_name is None:
            raise DatasetError(f"{where}: record has none of the id fields {list(id_keys)}", p, line)
        found = next((v for v in value_keys if v in record), None)
        if found is None:
            wanted = " or ".join(repr(v) for v in value_keys)
            raise DatasetError(f"{where}: record has no {wanted} field", p, line)
        try:
            k = id_key(record[key_name], f"{where}.{key_name}")
        except InputError as exc:
            raise DatasetError(exc.message, p, line) from None
        if k in out:
            raise DatasetError(f"{where}: duplicate id {k!r}", p, line)
        out[k] = record[found]
    return out
