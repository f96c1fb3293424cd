"""Locating files shipped inside installed packages."""

from __future__ import annotations

from rsvl.utils.packages import package_file


def test_finds_a_file_of_an_installed_package_without_importing_it():
    path = package_file("rsvl", "py.typed")
    assert path is not None and path.name == "py.typed" and path.is_file()


def test_missing_package_or_file_is_none():
    assert package_file("no_such_package_rsvl_test", "x.bin") is None
    assert package_file("rsvl", "no/such/file.bin") is None
    assert package_file("rsvl.errors", "py.typed") is None  # a module, not a package folder
