"""Scene classification as one folder per class (UC Merced, AID, NWPU-RESISC45, WHU-RS19).

Layout (torchvision's ``ImageFolder``; ``root`` is the folder holding the class folders, e.g.
``UCMerced_LandUse/Images``)::

    root/
      agricultural/agricultural00.tif
      airplane/airplane00.tif
      ...
      classes.txt          optional: class names, one per line, in label-index order
      train.txt, val.txt, test.txt   optional split lists: one image per line, ``class/file``
                                     (or a bare file name, as torchgeo's UC Merced / RESISC45
                                     split files have it)

A plain folder tree with no extra file reads fine: classes are the folder names sorted, ids
``0..n-1`` (ImageFolder's label indices). With ``classes.txt`` the classes and their order come
from it (a folder it does not list is an error if it holds images, else ignored and reported;
a listed class may have no folder).

Each image file is a :class:`Sample` with ``image`` = ``class/file`` and ``label`` = the folder
name, in class order then file-name order; ``split`` comes from the split lists (an image in
none of them has ``split=None``; in two is an error; a listed image that does not exist is an
error naming the list file and line). Files that are not images (by extension, see
:data:`IMAGE_SUFFIXES`) and files directly in the root other than the list files are ignored,
never an error: each is recorded in ``Dataset.report.problems`` ("not an image: ignored") so
``rsvl data check`` shows them, and the count is logged. Nested folders inside a class folder are
reported the same way.

The writer creates the class folders and writes ``classes.txt`` and, when some sample has a
split, one ``<split>.txt`` per split (a stale split list of a split no sample has is removed);
the images themselves are the caller's (see :meth:`ClassificationFormat.image_relpath`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from os import PathLike
from pathlib import Path
from typing import Any

from rsvl.datasets.base import (
    Dataset,
    DatasetFormat,
    Problem,
    ReadReport,
    read_text_lines,
    register_format,
)
from rsvl.datasets.sample import Category, Sample
from rsvl.errors import DatasetError, InputError
from rsvl.utils.atomic import write_text

log = logging.getLogger(__name__)

__all__ = ["CLASSES_FILE", "IMAGE_SUFFIXES", "SPLIT_FILES", "ClassificationFormat"]

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".gif", ".webp", ".jp2"})
"""File extensions (lower case) read as images."""

CLASSES_FILE = "classes.txt"
SPLIT_FILES = ("train.txt", "val.txt", "test.txt")


def _bad_name(name: str) -> bool:
    return not name or name in (".", "..") or "/" in name or "\\" in name or "\x00" in name or name != name.strip()


@register_format
class ClassificationFormat(DatasetFormat):
    """One folder per scene class; see the module docstring."""

    name = "classification"
    tasks = ("classification",)
    layout = "<class>/<image> folders (+ optional classes.txt, train.txt / val.txt / test.txt)"
    image_dir = ""

    def image_relpath(self, stem: str, suffix: str = ".png", label: str | None = None) -> str:
        if label is None or _bad_name(label):
            raise InputError(f"a classification image needs a class label usable as a folder name, got {label!r}")
        return f"{label}/{stem}{suffix}"

    # ------------------------------------------------------------------------- reading

    def open(self, root: str | PathLike[str], *, strict: bool = True) -> Dataset:
        root = Path(root)
        if not root.is_dir():
            raise DatasetError(f"not a {self.name} dataset: not a folder", root)
        folders = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        listed = self._listed_classes(root)
        if listed is None:
            names = folders
        else:
            unlisted = [f for f in folders if f not in listed and _has_images(root / f)]
            if unlisted:
                raise DatasetError(f"class folders not listed in {CLASSES_FILE}: {', '.join(unlisted[:10])}", root)
            names = listed
        if not names:
            raise DatasetError(f"not a {self.name} dataset: no class folders", root)
        categories = [Category(k, n) for k, n in enumerate(names)]

        def samples(report: ReadReport) -> Iterator[Sample]:
            yield from self._samples(root, names, report, strict)

        return Dataset(root, self.name, samples, categories)

    @staticmethod
    def _listed_classes(root: Path) -> list[str] | None:
        path = root / CLASSES_FILE
        if not path.is_file():
            return None
        names: list[str] = []
        for line, text in read_text_lines(path):
            name = text.strip()
            if not name:
                continue
            if _bad_name(name):
                raise DatasetError(f"class name {name!r} cannot be a folder name", path, line)
            if name in names:
                raise DatasetError(f"class {name!r} listed twice", path, line)
            names.append(name)
        return names

    def _samples(self, root: Path, names: list[str], report: ReadReport, strict: bool) -> Iterator[Sample]:
        ignored = 0

        def ignore(path: Path, why: str) -> None:
            nonlocal ignored
            ignored += 1
            report.problems.append(Problem(str(path), None, why))

        for child in sorted(root.iterdir()):
            if child.is_file() and child.name not in (CLASSES_FILE, *SPLIT_FILES):
                ignore(child, "not in a class folder: ignored")
            elif child.is_dir() and child.name not in names and not child.name.startswith("."):
                ignore(child, f"folder without images, not listed in {CLASSES_FILE}: ignored")
        images: list[tuple[str, str]] = []  # (relative path, label)
        for label in names:
            folder = root / label
            if not folder.is_dir():
                continue
            for item in sorted(folder.iterdir()):
                if item.is_dir():
                    ignore(item, "nested folder inside a class folder: ignored")
                elif item.suffix.lower() not in IMAGE_SUFFIXES:
                    ignore(item, "not an image: ignored")
                else:
                    images.append((f"{label}/{item.name}", label))
        splits = self._splits(root, images, report, strict)
        if ignored:
            log.warning(
                "%s: ignored %d files that are not images in class folders (see the read report)", root, ignored
            )
        for rel, label in images:
            yield Sample(image=rel, label=label, split=splits.get(rel))

    @staticmethod
    def _splits(root: Path, images: list[tuple[str, str]], report: ReadReport, strict: bool) -> dict[str, str]:
        known = {rel for rel, _ in images}
        by_name: dict[str, list[str]] = {}
        for rel in known:
            by_name.setdefault(rel.rsplit("/", 1)[1], []).append(rel)
        out: dict[str, str] = {}
        for file in SPLIT_FILES:
            path = root / file
            if not path.is_file():
                continue
            split = file[: -len(".txt")]
            for line, text in read_text_lines(path):
                entry = text.strip()
                if not entry:
                    continue
                try:
                    if "/" in entry:
                        rel = entry
                    else:
                        matches = by_name.get(entry, [])
                        if len(matches) > 1:
                            raise DatasetError(f"{entry!r} names files in several class folders", path, line)
                        rel = matches[0] if matches else entry
                    if rel not in known:
                        raise DatasetError(f"listed image {entry!r} is not in any class folder", path, line)
                    if rel in out:
                        raise DatasetError(f"{entry!r} is already in the {out[rel]} split", path, line)
                    out[rel] = split
                except DatasetError as exc:
                    if strict:
                        raise
                    report.skip(exc)
        return out

    # ------------------------------------------------------------------------- writing

    def write(
        self,
        root: str | PathLike[str],
        samples: Iterable[Sample],
        *,
        categories: Sequence[Category] | None = None,
        meta: dict[str, Any] | None = None,
    ) -> None:
        root = Path(root)
        samples = list(samples)
        labels: list[str] = []
        splits: dict[str, list[str]] = {}
        seen: set[str] = set()
        for s_idx, sample in enumerate(samples):
            label = sample.label
            if label is None or _bad_name(label):
                raise InputError(f"sample {s_idx}: a classification sample needs a folder-safe label, got {label!r}")
            folder, _, file = sample.image.partition("/")
            if folder != label or not file or "/" in file:
                raise InputError(f"sample {s_idx}: image {sample.image!r} must be {label}/<file> (its class folder)")
            if Path(file).suffix.lower() not in IMAGE_SUFFIXES:
                raise InputError(
                    f"sample {s_idx}: {file!r} has no image extension ({', '.join(sorted(IMAGE_SUFFIXES))})"
                )
            if sample.image in seen:
                raise InputError(f"sample {s_idx}: image {sample.image!r} appears twice")
            seen.add(sample.image)
            if label not in labels:
                labels.append(label)
            if sample.split is not None:
                if f"{sample.split}.txt" not in SPLIT_FILES:
                    raise InputError(f"sample {s_idx}: split {sample.split!r} is not one of train, val, test")
                splits.setdefault(sample.split, []).append(sample.image)
        if categories:
            names = [c.name for c in sorted(categories, key=lambda c: c.id)]
            missing = [n for n in labels if n not in names]
            if missing:
                raise InputError(f"labels not among the categories given: {', '.join(missing[:10])}")
            for name in names:
                if _bad_name(name):
                    raise InputError(f"category {name!r} cannot be a folder name")
        else:
            names = sorted(labels)
        root.mkdir(parents=True, exist_ok=True)
        for name in names:
            (root / name).mkdir(exist_ok=True)
        write_text(root / CLASSES_FILE, "".join(f"{n}\n" for n in names))
        for file in SPLIT_FILES:
            split = file[: -len(".txt")]
            if split in splits:
                write_text(root / file, "".join(f"{rel}\n" for rel in splits[split]))
            elif (root / file).is_file():
                (root / file).unlink()


def _has_images(folder: Path) -> bool:
    return any(p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES for p in folder.iterdir())
