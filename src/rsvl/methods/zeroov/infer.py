"""Grounding files and datasets: read imagery, run :class:`ZeroOVGrounder`, write outputs, resume.

One image + expression (``rsvl ground IMAGE "expression"``) writes, under the output folder and
named after the image (plus ``--name``):

* ``<stem>.mask.png``: the mask (255 inside), at the size the image was grounded at;
* ``<stem>.json``: the box in original image pixels (and map coordinates when georeferenced), the
  score, fallbacks, the providers (and whether they had real weights), timings;
* ``<stem>.overlay.png``: the image with the fused attention, the mask, the box and the seeds;
* ``<stem>.geojson`` when the image is georeferenced: the mask (MultiPolygon) and box (Polygon)
  in the image's CRS.

Images larger than ``max_side`` on their long side are grounded on a decimated whole-image read
(the attention models see a few hundred pixels anyway); the box is mapped back to full resolution.

A dataset (``rsvl ground --dataset rrsisd --root X``) appends one JSON line per expression to
``predictions.jsonl`` as it goes (flushed and fsynced), so an interrupted run resumes where it
stopped; then it writes ``boxes.json`` and ``masks.json`` (``rsvl eval`` inputs) and ``eval.json``
(box and mask scores with the requested grounding preset).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rsvl.errors import DatasetError, InputError
from rsvl.geometry import masks as mask_codec
from rsvl.io.georef import GeoRef
from rsvl.io.overlay import draw_overlay, save_png
from rsvl.io.raster import RasterSource
from rsvl.io.vector import feature_collection, mask_geometry
from rsvl.methods.zeroov.pipeline import GroundingResult, ZeroOVGrounder
from rsvl.utils.atomic import write_json, write_text
from rsvl.utils.progress import progress_bar
from rsvl.utils.resume import RUN_FILE, append_record, check_run, read_done

logger = logging.getLogger(__name__)

__all__ = ["GroundedImage", "ground_dataset", "ground_file", "read_image", "referring_items"]

DEFAULT_MAX_SIDE = 1024


@dataclass(frozen=True)
class GroundedImage:
    """An image read for grounding: RGB at working size, its georeferencing, and the scale back."""

    image: np.ndarray
    georef: GeoRef
    scale: tuple[float, float]  # original pixels per working pixel (x, y)
    path: Path
    valid: np.ndarray | None = None  # (h, w) bool at working size; None = every pixel valid

    @property
    def full_size(self) -> tuple[int, int]:
        """``(width, height)`` of the original image."""
        return self.georef.width, self.georef.height


def read_image(path: str | os.PathLike[str], max_side: int = DEFAULT_MAX_SIDE) -> GroundedImage:
    """The whole image as display RGB, decimated so its long side is at most ``max_side``."""
    if max_side < 16:
        raise InputError(f"max_side must be at least 16 px, got {max_side}")
    with RasterSource(path) as src:
        if min(src.width, src.height) < 1:
            raise InputError("the image is empty", src.path)
        shape = src.overview_shape(max_side)
        image, valid = src.read_display(src.full_window, out_shape=shape, resampling="bilinear")
        georef = src.georef
        scale = (src.width / shape[1], src.height / shape[0])
    if not valid.any():
        raise InputError("the image has no valid pixel (all nodata or NaN)", path)
    t = georef.transform
    if georef.is_georeferenced and not (np.isfinite(list(t)[:6]).all() and abs(t.determinant) > 0):
        raise InputError(f"the geotransform {tuple(t)[:6]} is singular or not finite", path)
    return GroundedImage(np.ascontiguousarray(image), georef, scale, Path(path), None if valid.all() else valid)


def _full_box(result: GroundingResult, scale: tuple[float, float]) -> list[float]:
    x1, y1, x2, y2 = result.box
    return [x1 * scale[0], y1 * scale[1], x2 * scale[0], y2 * scale[1]]


def result_record(result: GroundingResult, read: GroundedImage, expression: str) -> dict[str, Any]:
    """The JSON description of one grounding (box in original pixels; map box when georeferenced)."""
    box = _full_box(result, read.scale)
    sx, sy = read.scale
    record: dict[str, Any] = {
        "image": str(read.path),
        "expression": expression,
        "box_xyxy": [round(v, 3) for v in box],
        "score": round(result.score, 6),
        "mask_pixels": int(result.mask.sum()),
        "mask_shape": list(result.mask.shape),
        "mask_scale": [read.scale[0], read.scale[1]],
        "fallback": result.fallback,
        "refined": result.refined,
        "seeds_xy": [[round(float(c + 0.5) * sx, 2), round(float(r + 0.5) * sy, 2)] for r, c in result.seeds],
        "providers": result.providers,
        "seconds": {k: round(v, 4) for k, v in result.seconds.items()},
        "image_size": list(read.full_size),
    }
    if read.georef.is_georeferenced:
        x1, y1, x2, y2 = box
        corners = read.georef.pixel_to_map([[x1, y1], [x2, y1], [x2, y2], [x1, y2]])
        record["crs"] = read.georef.crs_name
        # the envelope of the box's four corners in map coordinates: (xmin, ymin, xmax, ymax)
        record["box_map"] = [float(v) for v in (*corners.min(axis=0), *corners.max(axis=0))]
    return record


def grounding_geojson(result: GroundingResult, read: GroundedImage, expression: str) -> dict[str, Any]:
    """Mask and box as GeoJSON features in the image's CRS (pixels when not georeferenced)."""
    props = {"expression": expression, "score": result.score, "fallback": result.fallback}
    features = []
    geometry, on_map = mask_geometry(result.mask, read.georef, read.scale)
    if geometry is not None:
        features.append({"type": "Feature", "id": 0, "geometry": geometry, "properties": {**props, "kind": "mask"}})
    x1, y1, x2, y2 = _full_box(result, read.scale)
    ring = np.array([[x1, y1], [x1, y2], [x2, y2], [x2, y1], [x1, y1]], dtype=np.float64)
    if on_map:
        ring = read.georef.pixel_to_map(ring)
    if ring[:, 0] @ np.roll(ring[:, 1], -1) - np.roll(ring[:, 0], -1) @ ring[:, 1] < 0:
        ring = ring[::-1]
    box_feature = {"type": "Polygon", "coordinates": [ring.tolist()]}
    features.append({"type": "Feature", "id": 1, "geometry": box_feature, "properties": {**props, "kind": "box"}})
    return feature_collection(features, read.georef, name="grounding")


def ground_file(
    grounder: ZeroOVGrounder,
    path: str | os.PathLike[str],
    expression: str,
    out_dir: str | os.PathLike[str],
    *,
    name: str | None = None,
    max_side: int = DEFAULT_MAX_SIDE,
) -> dict[str, Any]:
    """Ground ``expression`` in the image at ``path`` and write the outputs; returns the JSON record
    with an ``outputs`` entry listing the files written."""
    read = read_image(path, max_side)
    result = grounder.ground(read.image, expression, read.valid)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = name or read.path.stem
    record = result_record(result, read, expression)
    outputs = {
        "mask": save_png(out / f"{stem}.mask.png", result.mask),
        "overlay": save_png(
            out / f"{stem}.overlay.png",
            draw_overlay(
                read.image,
                heat=result.fused,
                mask=result.mask,
                boxes=[result.box],
                points=[(c, r) for r, c in result.seeds],
            ),
        ),
    }
    if read.georef.is_georeferenced:
        collection = grounding_geojson(result, read, expression)
        outputs["geojson"] = write_text(out / f"{stem}.geojson", json.dumps(collection, allow_nan=False) + "\n")
    outputs["json"] = out / f"{stem}.json"
    record["outputs"] = {k: str(v) for k, v in outputs.items()}
    write_json(outputs["json"], record)
    return record


# --------------------------------------------------------------------------- datasets


def referring_items(samples: list[Any], all_sentences: bool = False) -> Iterator[tuple[Any, str, str, int]]:
    """``(sample, item id, expression, ref index)`` for every referring expression of ``samples``.

    The id matches :func:`rsvl.metrics.grounding.grounding_from_samples` (``Referring.id``, else
    ``"<image>#<index>"``); with ``all_sentences`` each sentence is its own item, ``"<id>/s<j>"``.
    """
    for sample in samples:
        for i, ref in enumerate(sample.refs):
            key = str(ref.id) if ref.id is not None else f"{sample.image}#{i}"
            sentences = [s for s in ref.sentences if s and s.strip()]
            if not sentences:
                raise DatasetError(f"referring expression {key!r} has no sentence", sample.image)
            if all_sentences:
                for j, sentence in enumerate(sentences):
                    yield sample, f"{key}/s{j}", sentence, i
            else:
                yield sample, key, sentences[0], i


def ground_dataset(
    grounder: ZeroOVGrounder,
    format_name: str,
    root: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    split: str | None = None,
    limit: int | None = None,
    all_sentences: bool = False,
    resume: bool = True,
    preset: str = "zeroov",
    max_side: int = DEFAULT_MAX_SIDE,
    progress: bool = True,
) -> dict[str, Any]:
    """Ground every referring expression of a dataset, resumably, and score boxes and masks.

    Args:
        format_name: a registered dataset format with referring expressions (``rrsisd``).
        split: keep samples of this split only (None: all).
        limit: stop after this many expressions (in dataset order).
        resume: keep the records of an earlier run in ``out_dir``; False starts over.
        preset: grounding preset of the scores (``zeroov``: strict ``IoU > t``).

    Returns:
        ``{"n", "new", "box": metrics, "mask": metrics | None, "outputs": {...}}``.
    """
    from rsvl.datasets import get_format
    from rsvl.metrics.grounding import evaluate_grounding

    dataset = get_format(format_name).open(root)
    samples = [s for s in dataset if split is None or s.split == split]
    items = list(referring_items(samples, all_sentences))
    if limit is not None:
        items = items[: max(0, limit)]
    if not items:
        raise InputError(f"no referring expressions in {root}" + (f" (split {split!r})" if split else ""), Path(root))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    jsonl = out / "predictions.jsonl"
    if not resume:
        for old in (jsonl, out / RUN_FILE, out / "boxes.json", out / "masks.json", out / "eval.json"):
            old.unlink(missing_ok=True)
    run = _run_fingerprint(grounder, format_name, root, all_sentences, max_side)
    check_run(out, run, jsonl.exists())
    done = read_done(jsonl)
    wanted = {key for _, key, _, _ in items}
    stale = sorted(set(done) - wanted)
    if stale:
        raise InputError(
            f"{len(stale)} earlier predictions (e.g. {stale[0]!r}) are not items of this run; use another "
            "output folder or --no-resume",
            jsonl,
        )
    for _, key, expression, _ in items:
        if key in done and done[key].get("expression") != expression:
            raise InputError(f"earlier prediction {key!r} answers another expression; use --no-resume", jsonl)
    todo = [item for item in items if item[1] not in done]
    new = 0
    cache: tuple[Any, GroundedImage] | None = None
    with open(jsonl, "a", encoding="utf-8") as fh, progress_bar(progress, label="[bold]ground[/]") as bar:
        task = bar.add_task("expressions", total=len(items), completed=len(items) - len(todo))
        for sample, key, expression, _ in todo:
            if cache is None or cache[0] is not sample:
                cache = (sample, _read_sample_image(sample, max_side))
            read = cache[1]
            result = grounder.ground(read.image, expression, read.valid)
            record = result_record(result, read, expression)
            record["id"] = key
            record["image"] = sample.image
            record["segmentation"] = mask_codec.encode(_full_mask(result.mask, read))
            append_record(fh, record)
            done[key] = record
            new += 1
            bar.advance(task)

    gt_box, gt_mask = _ground_truth(samples, items, format_name)
    ids = [key for _, key, _, _ in items]
    boxes = {k: done[k]["box_xyxy"] for k in ids}
    segs = {k: done[k]["segmentation"] for k in ids}
    outputs = {"predictions": jsonl, "boxes": write_json(out / "boxes.json", boxes)}
    outputs["masks"] = write_json(out / "masks.json", segs)
    box_report = evaluate_grounding(gt_box, boxes, preset=preset)
    mask_report = None
    if gt_mask is not None:
        mask_report = evaluate_grounding(gt_mask, segs, preset=preset)
    summary = {
        "n": len(items),
        "new": new,
        "providers": grounder.describe(),
        "box": box_report.to_dict(),
        "mask": mask_report.to_dict() if mask_report is not None else None,
    }
    outputs["eval"] = write_json(out / "eval.json", summary)
    summary["outputs"] = {k: str(v) for k, v in outputs.items()}
    return summary


def _run_fingerprint(
    grounder: ZeroOVGrounder, format_name: str, root: str | os.PathLike[str], all_sentences: bool, max_side: int
) -> dict[str, Any]:
    """What decides every prediction of a batch run: data, settings, providers, working size."""
    return {
        "format": format_name,
        "root": str(Path(root).resolve()),
        "all_sentences": all_sentences,
        "max_side": max_side,
        "settings": grounder.config.model_dump(mode="json"),
        "providers": grounder.describe(),
    }


def _read_sample_image(sample: Any, max_side: int) -> GroundedImage:
    """A dataset image, refused when its size differs from the annotation's (the masks would not fit)."""
    read = read_image(sample.image_path, max_side)
    if sample.width is not None and sample.height is not None and read.full_size != (sample.width, sample.height):
        width, height = read.full_size
        raise DatasetError(
            f"image is {width} x {height} but its annotation says {sample.width} x {sample.height}",
            sample.image_path,
        )
    return read


def _full_mask(mask: np.ndarray, read: GroundedImage) -> np.ndarray:
    """The working-size mask at the original image size (nearest), for scoring against masks."""
    width, height = read.full_size
    if mask.shape == (height, width):
        return mask
    rows = np.minimum((np.arange(height) * mask.shape[0] / height).astype(int), mask.shape[0] - 1)
    cols = np.minimum((np.arange(width) * mask.shape[1] / width).astype(int), mask.shape[1] - 1)
    return mask[rows][:, cols]


def _target_rle(sample: Any, ref_index: int) -> dict[str, Any] | None:
    """The target's mask as compressed RLE at the image size (one mask decoded at a time)."""
    ref = sample.refs[ref_index]
    target = sample.instances[ref.target] if ref.target is not None else None
    if target is None or target.mask is None:
        return None
    seg = target.mask
    if isinstance(seg, dict) and isinstance(seg.get("size"), list | tuple):
        height, width = (int(v) for v in seg["size"])
    elif sample.height is not None and sample.width is not None:
        height, width = sample.height, sample.width
    else:
        with RasterSource(sample.image_path) as src:
            height, width = src.height, src.width
    return mask_codec.encode(mask_codec.decode(seg, height, width))


def _ground_truth(
    samples: list[Any], items: list[tuple[Any, str, str, int]], format_name: str
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Boxes, and masks as RLE when every target has one, keyed like the items."""
    from rsvl.metrics.grounding import grounding_from_samples

    boxes_by_ref = grounding_from_samples(samples, "box")
    gt_box: dict[str, Any] = {}
    gt_mask: dict[str, Any] | None = {}
    for sample, key, _, ref_index in items:
        ref_key = key if key in boxes_by_ref else key.rsplit("/s", 1)[0]
        gt_box[key] = boxes_by_ref[ref_key]
        if gt_mask is not None:
            rle = _target_rle(sample, ref_index)
            if rle is None:
                logger.info("%s: target of %r has no mask; scoring boxes only", format_name, key)
                gt_mask = None
            else:
                gt_mask[key] = rle
    return gt_box, gt_mask
