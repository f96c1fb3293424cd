"""Atomic writes: all-or-nothing replacement, no temp files left behind, sane permissions."""

from __future__ import annotations

import json
import os
import stat

import pytest

from rsvl.utils.atomic import atomic_path, atomic_write, write_bytes, write_json, write_text


def _leftovers(directory):
    return [p.name for p in directory.iterdir() if p.name.startswith(".")]


def test_helpers_write_and_replace(tmp_path):
    target = tmp_path / "sub" / "out.txt"
    assert write_text(target, "héllo") == target
    assert target.read_text(encoding="utf-8") == "héllo"
    write_bytes(target, b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"
    write_json(tmp_path / "o.json", {"a": [1, 2], "é": None})
    text = (tmp_path / "o.json").read_text(encoding="utf-8")
    assert json.loads(text) == {"a": [1, 2], "é": None} and text.endswith("\n") and "é" in text
    assert _leftovers(tmp_path) == [] and _leftovers(target.parent) == []


def test_exception_keeps_old_content_and_removes_temp(tmp_path):
    target = tmp_path / "keep.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_write(target) as fh:
        fh.write("new, half written")
        raise RuntimeError("crash")
    assert target.read_text() == "old"
    assert _leftovers(tmp_path) == []
    with pytest.raises(KeyboardInterrupt), atomic_path(tmp_path / "never.bin") as tmp:
        tmp.write_bytes(b"x")
        raise KeyboardInterrupt
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]


def test_atomic_path_keeps_suffix_and_needs_a_file(tmp_path):
    with atomic_path(tmp_path / "layer.gpkg") as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == ".gpkg" and tmp.exists()
        tmp.write_bytes(b"data")
    assert (tmp_path / "layer.gpkg").read_bytes() == b"data"
    with pytest.raises(FileNotFoundError), atomic_path(tmp_path / "gone.txt") as tmp:
        tmp.unlink()
    assert not (tmp_path / "gone.txt").exists()


def test_binary_mode_and_bad_mode(tmp_path):
    with atomic_write(tmp_path / "b.bin", "wb") as fh:
        fh.write(b"abc")
    assert (tmp_path / "b.bin").read_bytes() == b"abc"
    with pytest.raises(ValueError, match="mode"), atomic_write(tmp_path / "a.txt", "a"):
        pass


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_permissions_follow_umask_or_existing_file(tmp_path):
    fresh = write_text(tmp_path / "fresh.txt", "x")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o666 & ~umask
    existing = tmp_path / "exec.sh"
    existing.write_text("#!/bin/sh\n")
    existing.chmod(0o750)
    write_text(existing, "#!/bin/sh\necho hi\n")
    assert stat.S_IMODE(existing.stat().st_mode) == 0o750
