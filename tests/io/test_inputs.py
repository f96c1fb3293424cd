"""Batch-command input checks: image files and the output folder."""

from __future__ import annotations

import pytest

from rsvl.errors import InputError
from rsvl.io.inputs import image_files, output_folder


def test_image_files_need_existing_files_with_distinct_stems(tmp_path):
    a, b = tmp_path / "a.png", tmp_path / "sub" / "a.tif"
    b.parent.mkdir()
    a.write_bytes(b"x")
    b.write_bytes(b"x")
    assert image_files([str(a)]) == [a]
    with pytest.raises(InputError, match="share a file name stem"):
        image_files([a, b])
    with pytest.raises(InputError, match="image not found") as err:
        image_files([tmp_path / "missing.png"])
    assert "missing.png" in str(err.value)


def test_output_folder_is_created_but_never_a_file(tmp_path):
    out = output_folder(tmp_path / "x" / "y")
    assert out.is_dir()
    (tmp_path / "f").write_text("")
    with pytest.raises(InputError, match="existing file"):
        output_folder(tmp_path / "f")
