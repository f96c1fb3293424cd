"""Resumable batch runs: predictions appended as JSON lines, and the settings they were made with.

A long batch job (grounding a dataset, answering a benchmark's questions) appends one record per
item to a JSON Lines file, flushed and fsynced, so a killed run loses at most the line it was
writing; on restart :func:`read_done` drops that torn last line and returns what is done.
:func:`check_run` keeps ``run.json`` (the data, settings and models a run used) beside it and
refuses to resume predictions made with anything else, so two runs' outputs never mix silently.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import IO, Any

from rsvl.errors import DatasetError, InputError
from rsvl.utils.atomic import write_json

__all__ = ["RUN_FILE", "append_record", "check_run", "read_done"]

logger = logging.getLogger(__name__)

RUN_FILE = "run.json"


def read_done(path: Path, key: str = "id") -> dict[str, dict[str, Any]]:
    """Records already in a JSON Lines file, by ``record[key]``; a torn last line is dropped."""
    done: dict[str, dict[str, Any]] = {}
    if not path.exists():
        return done
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    if text and not text.endswith("\n"):
        _end_last_line(path, lines[-1])
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if n == len(lines):
                logger.warning("%s:%d: dropping a torn last line from an interrupted run", path, n)
                _truncate_last_line(path)
                break
            raise DatasetError("not a JSON record; delete the file to start over", path, n) from None
        if not isinstance(record, dict) or key not in record:
            raise DatasetError(f"record without an {key!r}; delete the file to start over", path, n)
        done[str(record[key])] = record
    return done


def _end_last_line(path: Path, last: str) -> None:
    """A last record without its newline: complete it if it is whole JSON (the next append would
    glue onto it), else leave it for the torn-line rule below."""
    try:
        json.loads(last)
    except json.JSONDecodeError:
        return
    with open(path, "a", encoding="utf-8") as fh:
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())


def _truncate_last_line(path: Path) -> None:
    data = path.read_bytes()
    cut = data.rstrip(b"\n").rfind(b"\n")
    with open(path, "r+b") as fh:
        fh.truncate(cut + 1 if cut >= 0 else 0)


def append_record(fh: IO[str], record: dict[str, Any]) -> None:
    """Append one record as a JSON line and make it durable before going on."""
    fh.write(json.dumps(record, allow_nan=False) + "\n")
    fh.flush()
    os.fsync(fh.fileno())


def check_run(out: Path, run: dict[str, Any], has_predictions: bool) -> None:
    """Refuse to resume predictions made with another ``run`` description; record this one otherwise."""
    path = out / RUN_FILE
    if path.exists():
        try:
            earlier = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise DatasetError("not a JSON run description; use --no-resume to start over", path) from None
        if has_predictions and earlier != run:
            keys = sorted(k for k in set(run) | set(earlier) if run.get(k) != earlier.get(k))
            raise InputError(
                f"the predictions in this folder were made with other {', '.join(keys)}; use another output "
                "folder or --no-resume",
                path,
            )
    elif has_predictions:
        raise InputError(f"predictions without a {RUN_FILE} (unknown settings); use --no-resume", path)
    write_json(path, run)
