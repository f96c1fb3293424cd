"""``rsvl demo``: rsvl end to end on the bundled real data, with no argument and no download.

Steps:

* **core**: raster facts, the display stretch of a 16-bit GeoTIFF, map <-> pixel geometry,
  oriented boxes fitted to real building footprints, and a tile split -> merge round trip of real
  tree-crown annotations (the path sliced inference takes), with georeferenced GeoJSON;
* **detection** with the zoo's ``trees-lite0`` detector (trained by rsvl, shipped in the package)
  on the bundled real NEON images: the OSBS GeoTIFF (GeoJSON in its CRS, scored against its
  annotations by the evaluation harness, protocol recorded) and the SOAP PNG;
* **captioning, VQA and scene classification** with the zoo's MF-RSVLM miniature (when its
  SmolLM2 language model is installed, else the step says what to install): words on the bundled
  real images, and scores on ten fresh SynthRS scenes;
* **VQA on a large GeoTIFF** with the zoo's LRS-VQA model (the same LLaVA read through the
  Dynamic Image Pyramid, tokens ranked by its distilled Region Focus Module);
* **referring grounding** (RSVG-ZeroOV, training-free) with no downloaded weights: the
  expression's attention in the same miniature's LLaVA, the real EfficientNet-Lite0 for the
  Focus stage (``configs/zeroov/cpu_zoo_llava.yaml``): mask, box and GeoJSON on the OSBS GeoTIFF.

Everything lands in one folder with ``summary.json`` and ``report.html``, a single self-contained
page (pictures embedded) that opens offline.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rsvl.data import sample_path
from rsvl.geometry import box_iou, hbb_to_poly, min_area_rect, obb_to_poly, rotated_iou
from rsvl.io import Detections, MergeConfig, RasterSource, TileSpec, iter_windows, merge_detections
from rsvl.io.cropping import crop_to_window
from rsvl.io.html_report import HtmlReport
from rsvl.io.overlay import draw_overlay, save_png
from rsvl.io.vector import write_geojson
from rsvl.utils.atomic import write_json

logger = logging.getLogger(__name__)

#: Detections drawn and written by the demo (all of them are scored).
SCORE_THRESHOLD = 0.5
DETECTED = f"detections (score >= {SCORE_THRESHOLD})"


@dataclass
class DemoReport:
    """Where the demo wrote its outputs and one line per step for the console table."""

    out_dir: Path
    summary_path: Path = Path()
    html_path: Path = Path()
    rows: list[tuple[str, str]] = field(default_factory=list)
    html: HtmlReport = field(default_factory=lambda: HtmlReport("rsvl demo"))


def _deepforest_boxes(path: Path) -> tuple[np.ndarray, list[str]]:
    """Boxes ``(N, 4)`` and labels of a deepforest CSV, read with the datasets module's reader."""
    from rsvl.datasets import get_format

    samples = get_format("deepforest").open(path).load()
    instances = [inst for sample in samples for inst in sample.instances]
    boxes = np.asarray([inst.bbox for inst in instances], dtype=np.float64).reshape(-1, 4)
    return boxes, [inst.category for inst in instances]


def _draw(image: np.ndarray, polygons: np.ndarray, colour: tuple[int, int, int], path: Path) -> None:
    boxes = [poly.reshape(-1) for poly in polygons]
    save_png(path, draw_overlay(image, boxes=boxes, box_colour=colour))


def _buildings(out: Path, report: DemoReport, summary: dict) -> None:
    tif = sample_path("solaris/sample_geotiff.tif")
    labels = json.loads(sample_path("solaris/geotiff_labels.geojson").read_text())
    with RasterSource(tif) as src:
        rgb, valid = src.read_display(src.full_window)
        footprints = []
        for feature in labels["features"]:
            geom = feature["geometry"]
            rings = [geom["coordinates"][0]] if geom["type"] == "Polygon" else [p[0] for p in geom["coordinates"]]
            footprints.extend(src.map_to_pixel(np.asarray(ring, dtype=np.float64)[:, :2]) for ring in rings)
        obbs = np.stack([min_area_rect(ring) for ring in footprints])
        dets = Detections(obbs, np.ones(len(obbs)), np.zeros(len(obbs), int), names=["building"] * len(obbs))
        geojson = write_geojson(out / "buildings_obb.geojson", dets, src)
        overlaps = rotated_iou(obbs, obbs)
        np.fill_diagonal(overlaps, 0)
        _draw(rgb, obb_to_poly(obbs), (255, 64, 64), out / "buildings_obb.png")
        summary["buildings"] = {
            "image": tif.name,
            "size": [src.width, src.height],
            "dtype": src.dtypes[0],
            "crs": src.crs.to_string(),
            "valid_fraction": float(valid.mean()),
            "footprints": len(footprints),
            "max_iou_between_buildings": float(overlaps.max()) if len(obbs) > 1 else 0.0,
            "geojson": geojson.name,
        }
    report.rows.append(
        (
            "16-bit GeoTIFF -> display RGB",
            f"{tif.name} {src.width}x{src.height} {src.dtypes[0]} {summary['buildings']['crs']}",
        )
    )
    report.rows.append(
        ("footprints -> oriented boxes", f"{len(footprints)} min-area OBBs in map coordinates -> {geojson.name}")
    )
    html = report.html
    html.heading("Core: a 16-bit GeoTIFF, building footprints as oriented boxes")
    html.paragraph(
        f"{tif.name}: {summary['buildings']['size'][0]} x {summary['buildings']['size'][1]} px, "
        f"{summary['buildings']['dtype']}, {summary['buildings']['crs']}. The {len(footprints)} labelled footprints "
        f"(map coordinates) become minimum-area oriented boxes, written to {geojson.name}. No model: the boxes "
        "come from the bundled labels."
    )
    html.image(out / "buildings_obb.png", "building footprints as oriented boxes (red)")


def _trees(out: Path, report: DemoReport, summary: dict) -> None:
    tif = sample_path("deepforest/OSBS_029.tif")
    boxes, labels = _deepforest_boxes(sample_path("deepforest/OSBS_029.csv"))
    names = sorted(set(labels))
    truth = Detections(boxes, np.ones(len(boxes)), [names.index(n) for n in labels])
    spec = TileSpec(size=160, overlap=64, edge="shift")
    with RasterSource(tif) as src:
        parts = []
        n_tiles = 0
        for win in iter_windows(src.width, src.height, spec):
            # stand-in detector: sees the annotated crowns, confidence = visible fraction
            tile_dets = crop_to_window(truth, win, min_visible=0.3, scale_scores=True)
            parts.append(tile_dets.translate(win.col_off, win.row_off))
            n_tiles += 1
        per_tile = Detections.concat(parts, kind="hbb")
        merged = merge_detections(per_tile, MergeConfig("nms", threshold=0.5, metric="ios"))
        iou = box_iou(merged.boxes, truth.boxes)
        recovered = int((iou.max(axis=0) > 0.999).sum()) if len(merged) else 0
        geojson = write_geojson(out / "trees.geojson", merged, src, class_names=names)
        rgb, _ = src.read_display(src.full_window)
        _draw(rgb, hbb_to_poly(merged.boxes), (255, 255, 0), out / "trees.png")
        summary["trees"] = {
            "image": tif.name,
            "crs": src.crs.to_string(),
            "annotated": len(truth),
            "tiles": n_tiles,
            "tile_spec": {"size": 160, "overlap": 64, "edge": "shift"},
            "boxes_over_all_tiles": len(per_tile),
            "after_merge": len(merged),
            "recovered_exactly": recovered,
            "geojson": geojson.name,
        }
    report.rows.append(
        (
            "tile split -> merge round trip",
            f"{len(truth)} tree crowns -> {len(per_tile)} boxes on {n_tiles} tiles -> {len(merged)} merged, "
            f"{recovered}/{len(truth)} recovered exactly",
        )
    )
    report.rows.append(("GeoJSON in the image CRS", f"{geojson.name} ({summary['trees']['crs']})"))
    html = report.html
    html.heading("Core: sliced inference round trip on tree crowns")
    html.paragraph(
        f"{len(truth)} annotated crowns of {tif.name} cut over {n_tiles} overlapping tiles "
        f"({len(per_tile)} boxes), merged back to {len(merged)}: {recovered}/{len(truth)} recovered exactly. "
        "A stand-in predictor returns the annotations each tile sees; no model."
    )
    html.image(out / "trees.png", "merged tree-crown boxes (yellow)")


def _detection(out: Path, report: DemoReport, summary: dict, progress: bool) -> None:
    """The zoo detector on the bundled real NEON images: GeoJSON, overlays, harness scores."""
    from rsvl.datasets.training import DataConfig, DetectionTrainSet
    from rsvl.io.sliced import predict_file
    from rsvl.methods.vlm4rsdet.infer import evaluate_detector, load_detector, predict_image
    from rsvl.zoo import get_model, weights_path

    entry = get_model("trees-lite0")
    detector = load_detector(weights_path(entry.name))
    html = report.html
    html.heading(f"Detection: zoo model {entry.name}")
    html.paragraph(f"{entry.summary}. Model card: rsvl models show {entry.name}.")
    results = []
    for name, labels in (("deepforest/OSBS_029.tif", "deepforest/OSBS_029.csv"), ("deepforest/SOAP_061.png", None)):
        image = sample_path(name)
        pred = predict_file(image, lambda rgb: predict_image(detector, rgb), progress=progress)
        dets = pred.detections.select(np.flatnonzero(pred.detections.scores >= SCORE_THRESHOLD))
        with RasterSource(image) as src:
            rgb, _ = src.read_display(src.full_window)
            geojson = write_geojson(out / f"{image.stem}.detections.geojson", dets, src, class_names=detector.classes)
        overlay = out / f"{image.stem}.detections.png"
        picture = np.asarray(draw_overlay(rgb, boxes=[p.reshape(-1) for p in hbb_to_poly(dets.boxes)],
                                          box_colour=(255, 255, 0)))  # fmt: skip
        if labels is not None:  # the annotations too, to judge by eye
            truth_boxes, _ = _deepforest_boxes(sample_path(labels))
            picture = np.asarray(draw_overlay(picture, boxes=[p.reshape(-1) for p in hbb_to_poly(truth_boxes)],
                                              box_colour=(0, 200, 255)))  # fmt: skip
        save_png(overlay, picture)
        row = {"image": image.name, "size": f"{pred.width} x {pred.height}", DETECTED: len(dets)}
        row["georeferenced"] = "yes" if pred.georef is not None else "no (pixel coordinates)"
        row["output"] = geojson.name
        results.append(row)
        legend = " and the annotated crowns (cyan)" if labels is not None else ""
        html.image(overlay, f"{image.name}: {len(dets)} detections with score >= {SCORE_THRESHOLD} (yellow){legend}")
        if labels is not None:
            data = DataConfig(format="deepforest", root=str(sample_path(labels)))
            truth = DetectionTrainSet(data, "hbb", detector.classes)
            scored = evaluate_detector(detector, truth, "coco", progress=False)
            report.rows.append(
                ("detection, scored", f"{image.name}: AP {scored.metrics['AP']:.3f}, AP50 {scored.metrics['AP50']:.3f}")
            )
            summary.setdefault("detection", {})["evaluation"] = scored.to_dict()
            html.evaluation(scored, f"{image.name}: all detections scored against its bundled annotations")
    html.table(results, caption="detections written")
    summary.setdefault("detection", {})["images"] = results
    counts = ", ".join(f"{r['image']}: {r[DETECTED]}" for r in results)
    report.rows.append((f"detection (zoo {entry.name})", counts))


def _vision_language(out: Path, report: DemoReport, summary: dict, progress: bool) -> object | None:
    """The zoo's MF-RSVLM miniature: captions and answers on real images, scores on fresh SynthRS scenes.

    Returns the loaded model (the grounding step reuses its LLaVA), or None when it cannot load.
    """
    from rsvl.errors import InputError
    from rsvl.zoo import get_model

    entry = get_model("mfrsvlm-synth-mini")
    html = report.html
    html.heading(f"Captioning, VQA and scene classification: zoo model {entry.name}")
    try:
        from rsvl.methods.mfrsvlm.data import Source, model_image_size, read_image
        from rsvl.methods.mfrsvlm.prompts import caption_prompt, vqa_prompt
        from rsvl.methods.mfrsvlm.train import evaluate
        from rsvl.zoo import load_mfrsvlm

        model = load_mfrsvlm(entry.name)
    except (InputError, ImportError) as exc:
        reason = f"skipped: {exc}" if isinstance(exc, InputError) else f"skipped: needs {entry.requires}"
        html.paragraph(reason, note=True)
        report.rows.append((f"VLM (zoo {entry.name})", reason))
        summary["vision_language"] = {"skipped": reason}
        return None
    from rsvl.synth import generate_dataset

    html.paragraph(
        f"{entry.summary}. A CPU miniature trained on synthetic scenes: on real images its words show the "
        "pipeline running, not reliable content."
    )
    rows = []
    for name in ("deepforest/SOAP_061.png", "solaris/sample_geotiff.tif"):
        image = sample_path(name)
        pixels = read_image(image, model_image_size(model))[None]
        said = model.generate(pixels, [caption_prompt()], max_new_tokens=32)[0]
        question = "Is there any water in the image?"
        answer = model.generate(pixels, [vqa_prompt(question)], max_new_tokens=8)[0]
        rows.append({"image": image.name, "caption": said, "question": question, "answer": answer})
    html.table(rows, caption="generated on the bundled real images")
    data = out / "synthrs_eval"
    formats = (("captions", "caption"), ("rsvqa", "vqa"), ("classification", "classification"))
    for fmt, _task in formats:  # seeded: the same scenes every run, none of them seen in training
        generate_dataset(fmt, data / fmt, 10, seed=2026, size=224, progress=False)
    sources = [Source(format=fmt, root=data / fmt, task=task) for fmt, task in formats]
    scores = evaluate(model, sources, max_new_tokens=24, progress=progress)
    for task, scored in scores.items():
        shown = {k: v for k, v in scored.metrics.items() if "/" not in k}
        scored_view = type(scored)(scored.task, scored.preset, shown, scored.protocol)
        html.evaluation(scored_view, f"{task} on 10 fresh SynthRS scenes (seed 2026)")
    summary["vision_language"] = {
        "real_images": rows,
        "synthrs": {task: {k: v for k, v in r.metrics.items() if "/" not in k} for task, r in scores.items()},
    }
    headline = ", ".join(
        f"{t} {k} {r.metrics.get(k, float('nan')):.3f}"
        for t, r in scores.items()
        for k in ["CIDEr" if t == "caption" else "OA"]
    )
    report.rows.append((f"VLM (zoo {entry.name})", f"{len(rows)} real images captioned; SynthRS: {headline}"))
    return model


def _large_image_vqa(out: Path, report: DemoReport, summary: dict, model: object, progress: bool) -> None:
    """The zoo's LRS-VQA model on the bundled 16-bit GeoTIFF: pyramid, RFM-ranked tiles, tokens used."""
    from rsvl.methods.lrsvqa.infer import answer_file
    from rsvl.methods.lrsvqa.pipeline import LargeImageVQA
    from rsvl.zoo import get_model, lrsvqa_config

    entry = get_model("lrsvqa-rfm-mini")
    vqa = LargeImageVQA(lrsvqa_config(entry.name), bundle=model.bundle)  # type: ignore[attr-defined]
    image = sample_path("solaris/sample_geotiff.tif")
    question = "Are there any buildings in the image?"
    record = answer_file(vqa, image, question, out / "lrsvqa", progress=progress)
    html = report.html
    html.heading(f"VQA on large images: zoo model {entry.name} (LRS-VQA)")
    html.paragraph(
        f"{entry.summary}. The Dynamic Image Pyramid reads {image.name} level by level; the Region Focus "
        "Module ranks the vision tokens against the question, keeps the top 25 % and follows the most "
        "relevant tiles to the next finer level. On a real 20,000 px scene the same search keeps the tokens "
        "to a few hundred (docs/lrsvqa.md). The miniature's answers are not reliable (see its model card)."
    )
    if "tiles" in record["outputs"]:
        html.image(Path(record["outputs"]["tiles"]), f"{image.name}: the tiles looked at (finest level red)")
    row = {
        "image": image.name,
        "question": question,
        "answer": record["answer"],
        "vision tokens into the LLM": record["vision_tokens"],
        "full-resolution tiling": record["full_resolution_tokens"],
        "tiles encoded": record["tiles_encoded"],
    }
    html.table([row], caption="LRS-VQA pyramid + token pruning")
    summary["large_image_vqa"] = row
    report.rows.append(
        (
            f"large-image VQA (zoo {entry.name})",
            f"{record['vision_tokens']} vision tokens instead of {record['full_resolution_tokens']}, "
            f"{record['tiles_encoded']} tiles encoded -> lrsvqa/",
        )
    )


#: The grounding step's image and expressions (the OSBS scene is mostly tree crowns on bare ground).
GROUNDING_IMAGE = "deepforest/OSBS_029.tif"
GROUNDING_EXPRESSIONS = ("the bare sandy ground", "the largest tree crown")


def _grounding(out: Path, report: DemoReport, summary: dict, model: object) -> None:
    """RSVG-ZeroOV on the OSBS GeoTIFF: the zoo LLaVA's attention + Lite0 affinities -> mask, box, GeoJSON."""
    from rsvl.methods.zeroov.infer import ground_file
    from rsvl.methods.zeroov.overview_llava import zoo_grounder

    grounder = zoo_grounder(model.bundle)  # type: ignore[attr-defined]
    html = report.html
    html.heading("Referring grounding: RSVG-ZeroOV, training-free")
    html.paragraph(
        "The expression's attention over the image in the zoo MF-RSVLM miniature's LLaVA (Overview), "
        "sharpened by the self-similarity of the real EfficientNet-Lite0 features (Focus), grown into a mask "
        "(configs/zeroov/cpu_zoo_llava.yaml). The miniature was never trained to ground, so its maps are weak: "
        "the step shows the pipeline on CPU; rsvl ground --vlm-path with a real Qwen2.5-VL or LLaVA gives real maps."
    )
    image = sample_path(GROUNDING_IMAGE)
    rows = []
    folder = out / "grounding"
    for i, expression in enumerate(GROUNDING_EXPRESSIONS):
        record = ground_file(grounder, image, expression, folder, name=f"{image.stem}.{i}")
        outputs = record["outputs"]
        html.image(Path(outputs["overlay"]), f'{image.name}: "{expression}" (fused map, mask, box, seed points)')
        rows.append(
            {
                "expression": expression,
                "box xyxy": ", ".join(f"{v:.0f}" for v in record["box_xyxy"]),
                "score": round(float(record["score"]), 3),
                "fallback": record["fallback"] or "",
                "outputs": ", ".join(Path(p).name for k, p in outputs.items() if k in ("mask", "geojson")),
            }
        )
    html.table(rows, caption=f"grounded on {image.name}")
    summary["grounding"] = {"image": image.name, "providers": grounder.describe(), "results": rows}
    report.rows.append(("grounding (RSVG-ZeroOV)", f"{len(rows)} expressions on {image.name} -> {folder.name}/"))


def run_demo(out_dir: str | Path = "rsvl-demo", progress: bool = True, vision_language: bool = True) -> DemoReport:
    """Run every demo step, write outputs, ``summary.json`` and ``report.html`` into ``out_dir``.

    ``vision_language=False`` leaves out the steps that run the MF-RSVLM miniature's LLaVA (captioning,
    VQA, classification, large-image VQA and grounding: the slowest, a language model on CPU).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = DemoReport(out_dir=out)
    summary: dict = {"note": "core steps use the bundled annotations; detection runs the zoo model trees-lite0"}
    _buildings(out, report, summary)
    _trees(out, report, summary)
    _detection(out, report, summary, progress)
    if vision_language:
        model = _vision_language(out, report, summary, progress)
        if model is not None:
            _large_image_vqa(out, report, summary, model, progress)
            _grounding(out, report, summary, model)
    report.summary_path = write_json(out / "summary.json", summary)
    report.html_path = report.html.write(out / "report.html")
    return report
