"""Image captions in Karpathy's ``dataset_<name>.json`` (RSICD, UCM-captions, Sydney-captions).

Layout::

    root/
      dataset_rsicd.json   {"images": [{"filename", "imgid", "split", "sentids",
                                         "sentences": [{"tokens", "raw", "imgid", "sentid"}]}],
                            "dataset": "rsicd"}
      images/              the images (``RSICD_images/`` and ``imgs/``, the folder names the RSICD
                           and UCM/Sydney downloads use, are found too)

The annotation file is ``dataset.json`` or the single ``dataset_*.json`` in the root (choose one
with ``file=`` when there are several). An image entry's optional ``filepath`` (COCO's Karpathy
split) is a subfolder of the image folder.

Each image entry is a :class:`Sample`: ``captions`` = the sentences' ``raw`` strings (verbatim,
trailing `` .`` included), ``image_id`` = ``imgid``, ``split`` = ``split``. What the writer cannot
regenerate is kept, so writing reproduces the file: ``Sample.meta["karpathy_sentences"]`` (one dict
per caption, present only when some sentence needs it) holds ``tokens`` when they differ from
:func:`karpathy_tokens` of ``raw``, ``sentid`` when it is not the sentence's running index among the
sentences read, ``imgid`` when it differs from the image's, and unknown keys; ``Sample.meta["karpathy"]``
holds unknown image keys (``filepath``, ``cocoid``...) and ``sentids`` when it is not the list of
the sentences' ids; ``Dataset.meta`` holds ``dataset``, the file name (``file``) and unknown
top-level keys. Missing ``imgid`` values are assigned on writing (next free integer).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Iterator, Sequence
from os import PathLike
from pathlib import Path
from typing import Any

from rsvl.datasets.base import (
    Dataset,
    DatasetFormat,
    ReadReport,
    as_dict,
    check_type,
    get_field,
    load_json,
    register_format,
    resolve_inside,
)
from rsvl.datasets.sample import Category, Sample
from rsvl.errors import DatasetError, InputError
from rsvl.utils.atomic import write_text

log = logging.getLogger(__name__)

__all__ = ["CaptionsFormat", "karpathy_tokens"]

_IMAGE_DIRS = ("images", "RSICD_images", "imgs")
_IMAGE_KEYS = ("filename", "imgid", "split", "sentids", "sentences")
_SENT_KEYS = ("tokens", "raw", "imgid", "sentid")
_TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z0-9]+)*")


def karpathy_tokens(raw: str) -> list[str]:
    """Lower-case word tokens without punctuation, the way the Karpathy files tokenise ``raw``."""
    return _TOKEN.findall(raw.lower())


@register_format
class CaptionsFormat(DatasetFormat):
    """Karpathy-style caption json (RSICD / UCM-captions / Sydney-captions); see the module docstring.

    Args:
        file: annotation file name in the root; ``None`` finds ``dataset.json`` / ``dataset_*.json``
            when reading and writes ``dataset_<meta["dataset"]>.json`` (or ``dataset.json``).
        image_dir: image folder; ``None`` picks the first of ``images``, ``RSICD_images``, ``imgs``
            that exists when reading and writes ``images``.
    """

    name = "captions"
    tasks = ("caption",)
    layout = "dataset_<name>.json (Karpathy: images[].filename/sentences[].raw) + images/"
    image_dir = "images"

    def __init__(self, file: str | None = None, image_dir: str | None = None):
        self.file = file
        self._image_dir = image_dir
        if image_dir is not None:
            self.image_dir = image_dir

    def _annotation_file(self, root: Path) -> Path:
        if self.file is not None:
            path = root / self.file
            if not path.is_file():
                raise DatasetError(f"not a {self.name} dataset: {self.file} is missing", root)
            return path
        if (root / "dataset.json").is_file():
            return root / "dataset.json"
        found = sorted(p for p in root.glob("dataset_*.json") if p.is_file()) if root.is_dir() else []
        if len(found) == 1:
            return found[0]
        if not found:
            raise DatasetError(f"not a {self.name} dataset: no dataset.json or dataset_<name>.json in the root", root)
        names = ", ".join(p.name for p in found)
        raise DatasetError(f"several caption files ({names}); choose one with file=", root)

    # ------------------------------------------------------------------------- reading

    def open(self, root: str | PathLike[str], *, strict: bool = True) -> Dataset:
        root = Path(root)
        path = self._annotation_file(root)
        data = load_json(path)
        check_type(data, dict, "top level", path)
        entries = get_field(data, "images", list, "top level", path)
        image_dir = self._image_dir or next((d for d in _IMAGE_DIRS if (root / d).is_dir()), _IMAGE_DIRS[0])
        meta = {"file": path.name, **{k: v for k, v in data.items() if k != "images"}}

        def samples(report: ReadReport) -> Iterator[Sample]:
            counter = 0
            for k, entry in enumerate(entries):
                try:
                    sample = self._image(root, image_dir, entry, f"images[{k}]", path, counter)
                except DatasetError as exc:
                    if strict:
                        raise
                    report.skip(exc)
                    continue
                counter += len(sample.captions)
                yield sample

        return Dataset(root, self.name, samples, meta=meta)

    @staticmethod
    def _image(root: Path, image_dir: str, entry: Any, where: str, path: Path, counter: int) -> Sample:
        check_type(entry, dict, where, path)
        filename = get_field(entry, "filename", str, where, path)
        image_meta = {k: v for k, v in entry.items() if k not in _IMAGE_KEYS}
        sub = image_meta.get("filepath")
        if sub is not None:
            check_type(sub, str, f"{where}.filepath", path)
        rel = f"{image_dir}/{sub}/{filename}" if sub else f"{image_dir}/{filename}"
        resolve_inside(root, rel, path)
        imgid = get_field(entry, "imgid", (int, str), where, path) if "imgid" in entry else None
        split = get_field(entry, "split", str, where, path) if "split" in entry else None
        sentences = get_field(entry, "sentences", list, where, path) if "sentences" in entry else []
        captions: list[str] = []
        sent_meta: list[dict[str, Any]] = []
        sent_ids: list[Any] = []
        for j, sent in enumerate(sentences):
            sw = f"{where}.sentences[{j}]"
            check_type(sent, dict, sw, path)
            raw = get_field(sent, "raw", str, sw, path)
            extra = {k: v for k, v in sent.items() if k not in _SENT_KEYS}
            if "tokens" in sent:
                tokens = get_field(sent, "tokens", list, sw, path)
                for t, tok in enumerate(tokens):
                    check_type(tok, str, f"{sw}.tokens[{t}]", path)
                if tokens != karpathy_tokens(raw):
                    extra["tokens"] = tokens
            else:
                extra["tokens"] = None
            sentid = get_field(sent, "sentid", (int, str), sw, path) if "sentid" in sent else None
            if sentid != counter + j:
                extra["sentid"] = sentid
            sent_ids.append(sentid)
            if "imgid" in sent:
                s_imgid = get_field(sent, "imgid", (int, str), sw, path)
                if s_imgid != imgid:
                    extra["imgid"] = s_imgid
            else:
                extra["imgid"] = None
            captions.append(raw)
            sent_meta.append(extra)
        if "sentids" in entry:
            listed = get_field(entry, "sentids", list, where, path)
            if listed != sent_ids:
                image_meta["sentids"] = listed
        else:
            image_meta["sentids"] = None
        meta: dict[str, Any] = {}
        if image_meta:
            meta["karpathy"] = image_meta
        if any(sent_meta):
            meta["karpathy_sentences"] = sent_meta
        return Sample(image=rel, image_id=imgid, captions=captions, split=split, meta=meta)

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
        meta = dict(meta or {})
        name = meta.get("dataset")
        file = (
            self.file
            or meta.get("file")
            or (f"dataset_{name}.json" if isinstance(name, str) and name else "dataset.json")
        )
        used = [s.image_id for s in samples if s.image_id is not None]
        if any(not isinstance(g, (int, str)) or isinstance(g, bool) for g in used) or len(set(used)) != len(used):
            raise InputError("Sample.image_id values must be unique ints or strings")
        next_id = max((g for g in used if isinstance(g, int)), default=-1) + 1
        prefix = self.image_dir.rstrip("/") + "/"
        images: list[dict[str, Any]] = []
        counter = 0
        for s_idx, sample in enumerate(samples):
            image_meta = as_dict(sample.meta.get("karpathy"), "meta['karpathy']")
            sub = image_meta.get("filepath")
            folder = f"{prefix}{sub}/" if sub else prefix
            if not sample.image.startswith(folder) or len(sample.image) == len(folder):
                raise InputError(f"sample {s_idx}: image {sample.image!r} must lie in {folder}")
            imgid = sample.image_id
            if imgid is None:
                imgid, next_id = next_id, next_id + 1
            sent_meta = sample.meta.get("karpathy_sentences")
            if sent_meta is None:
                sent_meta = [{} for _ in sample.captions]
            if not isinstance(sent_meta, list) or len(sent_meta) != len(sample.captions):
                raise InputError(f"sample {s_idx}: meta['karpathy_sentences'] must hold one dict per caption")
            sentences = []
            for j, (raw, extra) in enumerate(zip(sample.captions, sent_meta, strict=True)):
                extra = as_dict(extra, "meta['karpathy_sentences'] items")
                sentence: dict[str, Any] = {}
                tokens = extra.pop("tokens", karpathy_tokens(raw))
                if tokens is not None:
                    sentence["tokens"] = tokens
                sentence["raw"] = raw
                s_imgid = extra.pop("imgid", imgid)
                if s_imgid is not None:
                    sentence["imgid"] = s_imgid
                sentid = extra.pop("sentid", counter + j)
                if sentid is not None:
                    sentence["sentid"] = sentid
                sentence.update({k: v for k, v in extra.items() if k not in _SENT_KEYS})
                sentences.append(sentence)
            counter += len(sample.captions)
            entry: dict[str, Any] = {"filename": sample.image[len(folder) :], "imgid": imgid, "sentences": sentences}
            if sample.split is not None:
                entry["split"] = sample.split
            sentids = image_meta.pop("sentids", [s.get("sentid") for s in sentences])
            if sentids is not None:
                entry["sentids"] = sentids
            entry.update({k: v for k, v in image_meta.items() if k not in _IMAGE_KEYS})
            images.append(entry)
        top: dict[str, Any] = {"images": images}
        top.update({k: v for k, v in meta.items() if k not in ("images", "file")})
        try:
            text = json.dumps(top, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise InputError(f"cannot write {file}: a value is not plain JSON ({exc})") from None
        (root / self.image_dir).mkdir(parents=True, exist_ok=True)
        write_text(root / file, text + "\n")
