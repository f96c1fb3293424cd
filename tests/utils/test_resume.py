"""Resumable JSON Lines runs: torn lines, a last record without its newline, and run descriptions."""

from __future__ import annotations

import json

import pytest

from rsvl.errors import DatasetError, InputError
from rsvl.utils.resume import append_record, check_run, read_done


def test_a_whole_last_record_without_newline_is_completed_not_glued(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"id": 1}\n{"id": 2}')  # killed between the record and its newline
    assert set(read_done(path)) == {"1", "2"}
    with open(path, "a", encoding="utf-8") as fh:
        append_record(fh, {"id": 3})
    assert [json.loads(line)["id"] for line in path.read_text().splitlines()] == [1, 2, 3]
    assert set(read_done(path)) == {"1", "2", "3"}


def test_torn_last_line_is_dropped_and_a_corrupt_middle_line_named(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"id": 1}\n{"id": 2, "te')
    assert set(read_done(path)) == {"1"} and path.read_text() == '{"id": 1}\n'
    path.write_text('{"id": 1}\noops\n{"id": 3}\n')
    with pytest.raises(DatasetError, match=r"p\.jsonl:2"):
        read_done(path)


def test_run_description_must_match_to_resume(tmp_path):
    check_run(tmp_path, {"mode": "pyramid"}, has_predictions=False)
    check_run(tmp_path, {"mode": "pyramid"}, has_predictions=True)
    with pytest.raises(InputError, match="other mode"):
        check_run(tmp_path, {"mode": "uniform"}, has_predictions=True)
    (tmp_path / "run.json").unlink()
    with pytest.raises(InputError, match="unknown settings"):
        check_run(tmp_path, {"mode": "pyramid"}, has_predictions=True)
