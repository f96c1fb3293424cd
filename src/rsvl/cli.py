"""The ``rsvl`` command line: thin wrappers that parse options, call the library, print with Rich.

Every command turns rsvl's input errors into a one-line message on stderr and exit code 2
(the same code Typer uses for usage errors); anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from rsvl import __version__
from rsvl.errors import InputError

app = typer.Typer(
    name="rsvl",
    help="Remote-sensing vision-language toolkit: geometry, huge-raster IO, datasets, evaluation, methods.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])


class _State:
    quiet = False


def _fails_cleanly(fn: F) -> F:
    """Map :class:`InputError` (bad files, bad options) to ``error: ...`` and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except InputError as exc:
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def _version(value: bool) -> None:
    if value:
        console.print(f"rsvl {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or info logs.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """rsvl: remote-sensing vision-language methods over one shared, tested core."""
    _State.quiet = quiet
    _configure_logging(logging.WARNING if quiet else (logging.DEBUG if verbose else logging.INFO))


def _configure_logging(level: int) -> None:
    """Send rsvl's log records to stderr through Rich, once per process.

    The handler's console resolves ``sys.stderr`` at each write, so it keeps working when a test
    runner swaps the stream; the root logger is left alone for the embedding application.
    """
    from rich.logging import RichHandler

    logger = logging.getLogger("rsvl")
    if not any(isinstance(h, RichHandler) for h in logger.handlers):
        logger.addHandler(RichHandler(console=Console(stderr=True), show_path=False, show_time=False))
    logger.setLevel(level)


def _progress():
    from rsvl.utils.progress import progress_bar

    return progress_bar(not _State.quiet, console=err_console)


def _spinner(message: str) -> contextlib.AbstractContextManager[Any]:
    """A spinner on stderr for work with no countable steps (nothing with --quiet)."""
    return contextlib.nullcontext() if _State.quiet else err_console.status(message)


@app.command()
@_fails_cleanly
def info(
    image: Annotated[Path, typer.Argument(help="PNG, JPEG, TIFF or GeoTIFF.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Print an image's size, bands, dtypes, nodata, CRS and geotransform (reads no pixels)."""
    from rsvl.io import RasterSource

    with RasterSource(image) as src:
        facts = {
            "path": str(image),
            "width": src.width,
            "height": src.height,
            "bands": src.count,
            "dtypes": list(src.dtypes),
            "nodata": src.nodata,
            "crs": src.crs.to_string() if src.crs else None,
            "transform": list(src.transform)[:6] if src.is_georeferenced else None,
            "georeferenced": src.is_georeferenced,
            "colorinterp": list(src.colorinterp),
        }
    if as_json:
        console.print_json(json.dumps(facts))
        return
    table = Table(title=str(image), show_header=False)
    for key, value in facts.items():
        if key != "path":
            table.add_row(key, "-" if value is None else str(value))
    console.print(table)


@app.command()
@_fails_cleanly
def tiles(
    image: Annotated[Path, typer.Argument(help="Image to cut.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (created).")],
    size: Annotated[int, typer.Option(help="Tile size in pixels.")] = 1024,
    overlap: Annotated[int, typer.Option(help="Overlap between neighbouring tiles, pixels.")] = 128,
    edge: Annotated[str, typer.Option(help="Leftover strip policy: shift, pad or drop.")] = "shift",
    fmt: Annotated[str, typer.Option("--format", help="png (display RGB) or tif (bands kept, georeferenced).")] = "png",
) -> None:
    """Cut IMAGE into overlapping tiles plus an index.json; reruns skip tiles already written."""
    from rsvl.io import RasterSource, TileSpec, count_windows
    from rsvl.io.export import export_tiles

    spec = TileSpec(size, overlap, edge)  # type: ignore[arg-type]
    with RasterSource(image) as src:
        total = count_windows(src.width, src.height, spec)
    with _progress() as progress:
        task = progress.add_task(f"tiles of {image.name}", total=total)
        result = export_tiles(image, out, spec, fmt, on_tile=lambda: progress.advance(task))  # type: ignore[arg-type]
    console.print(
        f"{result.written} tiles written, {result.skipped_existing} already present, "
        f"{result.total} in all -> {result.out_dir} (index: {result.index_path})"
    )


@app.command()
@_fails_cleanly
def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="Where the demo writes its outputs.")] = Path("rsvl-demo"),
    vlm: Annotated[
        bool, typer.Option("--vlm/--no-vlm", help="MF-RSVLM miniature steps: captions, VQA, grounding (slow).")
    ] = True,
) -> None:
    """Run rsvl on the bundled real aerial images and GeoTIFFs with the zoo's models; write an HTML report."""
    from rsvl.demo import run_demo

    report = run_demo(out, progress=not _State.quiet, vision_language=vlm)
    table = Table(title="rsvl demo on bundled real data")
    table.add_column("step")
    table.add_column("result")
    for step, result in report.rows:
        table.add_row(step, result)
    console.print(table)
    console.print(f"outputs in [bold]{report.out_dir.resolve()}[/] (summary: {report.summary_path.name})")
    console.print(f"report: [bold]{report.html_path.resolve()}[/] (one file, opens offline)")


def _detect_ray(
    images: list[Path],
    model_path: Path,
    method: str,
    out: Path,
    formats: str | None,
    tile: int,
    overlap: int,
    device: str,
    coco_gt: Path | None,
    score_threshold: float,
    names_path: Path | None,
    workers: int,
    ray_address: str | None,
    retries: int,
    resume: bool,
) -> None:
    """``rsvl detect --engine ray``: archive-scale inference (see docs/archive_inference.md)."""
    from rsvl.engines import PredictorSpec, detect_archive

    if coco_gt is not None:
        raise InputError("--engine ray writes geojson / parquet per image; --coco-gt does not apply")
    if method not in ("vlm4rsdet", "opendet"):
        raise InputError(f"unknown --method {method!r}; choose vlm4rsdet or opendet")
    wanted = [f.strip() for f in (formats or "geojson").split(",") if f.strip()]
    threshold = score_threshold if method == "opendet" else None
    spec = PredictorSpec(method, model_path, device, score_threshold=threshold, names_path=names_path)  # type: ignore[arg-type]
    result = detect_archive(
        images, spec, out, tile=tile, overlap=overlap, workers=workers, formats=wanted, retries=retries,
        address=ray_address, progress=not _State.quiet, resume=resume,
    )  # fmt: skip
    earlier = f" ({result.images_resumed} done by an earlier run)" if result.images_resumed else ""
    console.print(
        f"{len(result.written)} image(s){earlier}, {result.tiles_done} tiles ({result.tiles_empty} empty) in "
        f"{result.seconds:.1f} s: {result.tiles_per_s:.2f} tiles/s on {result.workers} worker(s); outputs in {out}",
        highlight=False,
    )
    if result.tiles_failed:
        err_console.print(
            f"[red]{result.tiles_failed} tile(s) failed after {retries} retries:[/] see {result.failed_tiles_path}"
        )
        raise typer.Exit(1)


def _zoo_or_path(model: Path, method: str) -> Path:
    """A model file, or the shipped weights of a zoo model of that name (checked against ``method``)."""
    from rsvl.zoo import get_model, is_zoo_name, weights_path

    if model.exists() or not is_zoo_name(str(model)):
        return model
    entry = get_model(str(model))
    if entry.method != method:
        raise InputError(f"zoo model {entry.name!r} is a {entry.method} model; use --method {entry.method}")
    return weights_path(entry.name)


@app.command("app")
@_fails_cleanly
def app_command(
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 7860,
    host: Annotated[str, typer.Option(help="Interface (127.0.0.1: this machine only; 0.0.0.0 has no login).")] = (
        "127.0.0.1"
    ),
    data: Annotated[
        list[Path] | None, typer.Option("--data", help="A folder of images / GeoTIFFs to pick from (repeatable).")
    ] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Work folder: uploads and each run's outputs.")] = Path(
        "rsvl-app"
    ),
    detector: Annotated[
        Path | None, typer.Option(help="Also offer detection with this detector.pt (rsvl train vlm4rsdet).")
    ] = None,
    open_: Annotated[bool, typer.Option("--open", help="Open the page in a browser.")] = False,
    max_upload_mb: Annotated[int, typer.Option(min=1, help="Largest upload in MB.")] = 2048,
) -> None:
    """A local web page: upload an image or pick a GeoTIFF, run a method, see the overlay and tables."""
    try:
        from rsvl.app import available_tasks, serve
    except ImportError as exc:
        raise InputError(f"rsvl app needs {exc.name}: pip install 'rsvl[app]'") from None
    for folder in data or []:
        if not folder.is_dir():
            raise InputError("--data must be a folder", folder)
    if detector is not None and not detector.is_file():
        raise InputError("detector file not found", detector)
    tasks = available_tasks(detector)
    console.print(f"rsvl app on [bold]http://{host}:{port}/[/] ({len(tasks)} tasks; work folder {out.resolve()})")
    console.print("Ctrl-C stops it.")
    serve(host, port, tasks, list(data or []), out, open_browser=open_, max_upload_bytes=max_upload_mb * 1024**2)


models_app = typer.Typer(help="The model zoo: small models trained by rsvl, shipped inside the package.")
app.add_typer(models_app, name="models")


@models_app.command("list")
def models_list() -> None:
    """List the zoo models (usable by name wherever a command takes a model file)."""
    from rsvl.zoo import ZOO, _root

    table = Table(title="rsvl model zoo")
    for col in ("name", "method", "task", "MB", "recipe"):
        table.add_column(col)
    for entry in ZOO.values():
        file = _root() / "weights" / entry.weights
        size = f"{file.stat().st_size / 1e6:.1f}" if file.is_file() else "missing"
        table.add_row(entry.name, entry.method, entry.task, size, entry.recipe)
    console.print(table)
    console.print("details: rsvl models show NAME")


@models_app.command("show")
@_fails_cleanly
def models_show(name: Annotated[str, typer.Argument(help="A zoo model name (rsvl models list).")]) -> None:
    """Print a zoo model's card: data, recipe, measured metrics, limits."""
    from rich.markdown import Markdown

    from rsvl.zoo import card_path, weights_path

    card = card_path(name)
    if not card.is_file():
        raise InputError(f"zoo model {name!r} has no model card in this installation", card)
    console.print(Markdown(card.read_text(encoding="utf-8")))
    console.print(f"weights: {weights_path(name)}", highlight=False)


data_app = typer.Typer(
    help="Datasets in the real public formats: generate synthetic ones, check, convert, list formats.",
    no_args_is_help=True,
)
app.add_typer(data_app, name="data")


@data_app.command("formats")
def data_formats() -> None:
    """List the dataset formats rsvl reads and writes, with their folder layouts."""
    from rsvl.datasets import format_names, get_format

    table = Table(title="dataset formats")
    table.add_column("format")
    table.add_column("tasks")
    table.add_column("layout")
    for name in format_names():
        fmt = get_format(name)
        table.add_row(name, ", ".join(fmt.tasks), fmt.layout)
    console.print(table)


@data_app.command("check")
@_fails_cleanly
def data_check(
    root: Annotated[Path, typer.Argument(help="Dataset folder.")],
    fmt: Annotated[
        str | None, typer.Option("--format", "-f", help="Dataset format (see `rsvl data formats`); guessed if omitted.")
    ] = None,
    images: Annotated[bool, typer.Option("--images/--no-images", help="Also check image files and sizes.")] = True,
    max_problems: Annotated[int, typer.Option(help="How many problems to print (all are counted).")] = 20,
) -> None:
    """Parse every annotation of ROOT, print counts, and exit 0 when clean, 2 otherwise."""
    from rsvl.datasets.check import check_dataset, guess_format

    if fmt is None:
        fmt = guess_format(root)
        console.print(f"format: {fmt} (guessed from the layout; pass --format to choose)", highlight=False)
    result = check_dataset(root, fmt, check_images=images, progress=not _State.quiet)
    table = Table(title=f"{result.format} dataset at {root}", show_header=False)
    for key in ("samples", "objects", "captions", "questions", "expressions", "labelled"):
        table.add_row(key, str(getattr(result, key)))
    table.add_row("categories", str(len(result.categories)))
    table.add_row("problems", str(len(result.problems)))
    console.print(table)
    if result.categories:
        top = ", ".join(f"{name} {count}" for name, count in result.categories.most_common(12))
        console.print(f"objects per category: {top}", highlight=False)
    for problem in result.problems[:max_problems]:
        err_console.print(f"[red]problem:[/] {problem}", highlight=False, soft_wrap=True)
    if len(result.problems) > max_problems:
        err_console.print(f"... and {len(result.problems) - max_problems} more problems", highlight=False)
    if not result.ok:
        raise typer.Exit(2)


@data_app.command("synth")
@_fails_cleanly
def data_synth(
    fmt: Annotated[str, typer.Option("--format", "-f", help="Dataset format to write (see `rsvl data formats`).")],
    n: Annotated[int, typer.Option("--n", help="Number of images.", min=1)],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output dataset folder (created).")],
    seed: Annotated[int, typer.Option(help="Random seed: the same seed gives the same dataset.")] = 0,
    size: Annotated[
        int | None, typer.Option(help="Image side in pixels (default: 512; 8192 for lrsvqa).", min=64)
    ] = None,
    novel: Annotated[
        str | None,
        typer.Option(help="Comma-separated novel classes for an open-vocabulary split (out/train, out/test)."),
    ] = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes (default: 2 for 16+ images).", min=1)] = None,
) -> None:
    """Generate a seeded SynthRS dataset (synthetic aerial scenes with labels) in a real format."""
    from rsvl.synth import generate_dataset

    novel_classes = [c.strip() for c in novel.split(",") if c.strip()] if novel else None
    summary = generate_dataset(
        fmt, out, n, seed=seed, size=size, novel_classes=novel_classes, progress=not _State.quiet, workers=workers
    )
    table = Table(title=f"SynthRS -> {summary.format}", show_header=False)
    table.add_row("images", f"{summary.images} ({summary.written} written, {summary.skipped} already there)")
    table.add_row("objects", str(summary.instances))
    for kind, count in summary.texts.items():
        if count:
            table.add_row(kind, str(count))
    table.add_row("splits", ", ".join(f"{k} {v}" for k, v in summary.splits.items()))
    table.add_row("image side", f"{summary.size} px")
    table.add_row("time", f"{summary.seconds:.1f} s")
    if summary.novel_classes:
        table.add_row("novel classes", ", ".join(summary.novel_classes))
    console.print(table)
    roots = ", ".join(str(r) for r in summary.roots) or str(out)
    console.print(f"dataset written to [bold]{roots}[/]; check it with `rsvl data check <folder> --format {fmt}`")


@data_app.command("convert")
@_fails_cleanly
def data_convert(
    src: Annotated[Path, typer.Argument(help="Source dataset folder.")],
    dst: Annotated[Path, typer.Argument(help="Destination folder (annotations written; images copied).")],
    src_format: Annotated[str, typer.Option("--from", help="Source format.")],
    dst_format: Annotated[str, typer.Option("--to", help="Destination format.")],
) -> None:
    """Convert annotations between formats (images are copied into the destination layout)."""
    from rsvl.datasets.convert import convert_dataset

    summary = convert_dataset(src, src_format, dst, dst_format, progress=not _State.quiet)
    console.print(str(summary), highlight=False)


@app.command("eval")
@_fails_cleanly
def eval_command(
    task: Annotated[str, typer.Option(help="det, grounding, vqa, caption or classification.")],
    pred: Annotated[Path, typer.Option(help="Predictions: a file (COCO results, json, jsonl) or folder.")],
    gt: Annotated[Path | None, typer.Option(help="Ground truth: an annotation file or a dataset folder.")] = None,
    preset: Annotated[
        str | None,
        typer.Option(
            help="Protocol: det coco|aitod|visdrone|lvis|dota; grounding rrsisd|zeroov|vrsbench; "
            "vqa exact|rsvqa|rsvqa_lr|lrsvqa|vrsbench."
        ),
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Write the JSON report here (atomically).")] = None,
    gt_format: Annotated[str | None, typer.Option(help="Dataset format of a --gt folder (default: guessed).")] = None,
    pred_format: Annotated[
        str | None, typer.Option(help="Dataset format of a --pred folder (default: guessed).")
    ] = None,
    box_type: Annotated[str, typer.Option(help="det: hbb or obb (COCO-family presets).")] = "hbb",
    ap_method: Annotated[str | None, typer.Option(help="det/dota: voc07 (11-point) or voc12 (all-point).")] = None,
    mask: Annotated[bool, typer.Option("--mask", help="grounding: score masks instead of boxes.")] = False,
    no_wordnet: Annotated[
        bool, typer.Option("--no-wordnet", help="vqa/lrsvqa: exact match only (recorded in the protocol).")
    ] = False,
    lenient: Annotated[
        bool, typer.Option("--lenient", help="det: drop predictions on unknown images/categories (counted).")
    ] = False,
) -> None:
    """Score predictions against ground truth with an official protocol; print a table, write JSON."""
    from rsvl.metrics.evaluate import evaluate_files

    options: dict[str, Any] = {}
    if ap_method is not None:
        options["ap_method"] = ap_method
    if mask:
        options["kind"] = "mask"
    if no_wordnet:
        options["wordnet"] = False
    with _spinner(f"scoring {task} predictions ({pred.name})"):
        report = evaluate_files(
            task,
            preset,
            gt,
            pred,
            gt_format=gt_format,
            pred_format=pred_format,
            box_type=box_type,
            strict=not lenient,
            options=options,
        )
    table = Table(title=f"{report.task} / {report.preset}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in report.metrics.items():
        table.add_row(key, "-" if value == -1 else f"{value:.4f}")
    console.print(table)
    reference = report.protocol.get("reference")
    if reference:
        console.print(f"protocol validated against: {reference}", highlight=False)
    for warning in report.warnings:
        err_console.print(f"[yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)
    if out is not None:
        report.write(out)
        console.print(f"report written to [bold]{out}[/]")


train_app = typer.Typer(help="Train a method from a YAML recipe (configs/<method>/).", no_args_is_help=True)
app.add_typer(train_app, name="train")


@train_app.command("lrsvqa-rfm")
@_fails_cleanly
def train_lrsvqa_rfm(
    root: Annotated[Path, typer.Option(help="A VQA dataset root (lrsvqa format) whose questions are the data.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder (rfm.safetensors, report.json).")] = Path(
        "runs/lrsvqa_rfm"
    ),
    config: Annotated[Path | None, typer.Option("--config", "-c", help="Settings YAML (configs/lrsvqa/).")] = None,
    model_path: Annotated[Path | None, typer.Option(help="Local LLaVA (or Qwen2.5-VL) folder: the teacher.")] = None,
    gguf: Annotated[Path | None, typer.Option(help="A GGUF language model under a LLaVA head.")] = None,
    steps: Annotated[int, typer.Option(min=1, help="Distillation steps.")] = 200,
    batch_size: Annotated[
        int, typer.Option(min=1, help="Questions per step, shared by the processes under torchrun.")
    ] = 1,
    mixed_precision: Annotated[str, typer.Option(help="Autocast: no, bf16, fp16 (CUDA) or auto.")] = "no",
    lr: Annotated[float, typer.Option(help="AdamW learning rate.")] = 1e-4,
    tiny: Annotated[bool, typer.Option("--tiny", help="Allow a tiny random model (testing only).")] = False,
    device: Annotated[str | None, typer.Option(help="torch device.")] = None,
    resume: Annotated[bool, typer.Option("--resume/--no-resume", help="Continue from the run folder.")] = True,
    overrides: Annotated[
        list[str] | None, typer.Option("--set", help="Override a setting, e.g. rfm.teacher_layers=[2,8].")
    ] = None,
) -> None:
    """Distil LRS-VQA's Region Focus Module from the LLM's own text-to-image attention."""
    from rsvl.methods.lrsvqa.distill import distill_on_dataset
    from rsvl.methods.lrsvqa.pipeline import LargeImageVQA, check_weights
    from rsvl.utils.distributed import is_main_process

    cfg = _lrsvqa_config(config, overrides, model_path, gguf, None, device)
    check_weights(cfg, allow_random=tiny)
    if mixed_precision not in ("no", "bf16", "fp16", "auto"):
        raise InputError(f"--mixed-precision must be no, bf16, fp16 or auto, got {mixed_precision!r}")
    report = distill_on_dataset(
        LargeImageVQA(cfg), root, out, steps=steps, lr=lr, batch_size=batch_size, mixed_precision=mixed_precision,
        resume=resume, progress=not _State.quiet,
    )  # fmt: skip
    if not is_main_process():  # under torchrun / accelerate launch rank 0 reports
        return
    console.print(
        f"RFM distilled for {report['steps']} steps: held-out loss {report['held_out_loss_before']:.4f} -> "
        f"{report['held_out_loss_after']:.4f} ({report['held_out_questions']} questions)",
        highlight=False,
    )
    console.print(f"weights: {report['weights']}  (use with rsvl vqa --rfm-path)", highlight=False)
    console.print(f"report: {Path(report['weights']).parent / 'report.json'}", highlight=False)


@train_app.command("mfrsvlm")
@_fails_cleanly
def train_mfrsvlm(
    config: Annotated[Path, typer.Option("--config", "-c", help="Recipe YAML, e.g. configs/mfrsvlm/synth_mini.yaml.")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Run folder (default runs/<name>).")] = None,
    resume: Annotated[bool, typer.Option("--resume/--no-resume", help="Continue from the run's last.pt.")] = True,
    evaluate_after: Annotated[bool, typer.Option("--eval/--no-eval", help="Score eval_sources at the end.")] = True,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a recipe key, e.g. train.steps=50.")] = None,
) -> None:
    """Train one MF-RSVLM stage (projector + fusion + injector; stage 2 adds LoRA) from a recipe."""
    from rsvl.methods.mfrsvlm.recipe import MFRSVLMRecipe, build_model
    from rsvl.methods.mfrsvlm.train import evaluate, train
    from rsvl.utils.config import load_config
    from rsvl.utils.distributed import is_main_process

    recipe = load_config(MFRSVLMRecipe, config, list(set_ or []))
    model = build_model(recipe.model, seed=recipe.train.seed)
    if recipe.init is not None:  # e.g. stage 1's trained parts for stage 2 (LoRA tensors bring their adapters)
        model.load_trainable(recipe.init)
    run_dir = out or Path("runs") / recipe.name
    result = train(model, recipe.sources, recipe.train, run_dir, resume=resume, progress=not _State.quiet)
    if not is_main_process():  # under torchrun / accelerate launch rank 0 reports and scores
        return
    console.print(
        f"stage {recipe.train.stage}: {result.steps} steps, final loss {result.final_loss:.4f}, "
        f"{result.seconds:.0f} s; trained parts: {result.trainable_path}",
        highlight=False,
    )
    if evaluate_after and recipe.eval_sources:
        if recipe.train.strategy == "fsdp":  # its frozen blocks were sharded over the processes: score a whole copy
            model = build_model(recipe.model, seed=recipe.train.seed)
            if recipe.init is not None:
                model.load_trainable(recipe.init)
            model.load_trainable(result.trainable_path)
        reports = evaluate(model, recipe.eval_sources, recipe.max_new_tokens, progress=not _State.quiet)
        from rsvl.utils.atomic import write_json

        eval_path = write_json(run_dir / "eval.json", {task: report.to_dict() for task, report in reports.items()})
        for task, report in reports.items():
            shown = ", ".join(f"{k} {v:.4f}" for k, v in report.metrics.items() if isinstance(v, float))
            console.print(f"{task}: {shown}", highlight=False)
        console.print(f"evaluation: {eval_path}", highlight=False)


def _mfrsvlm_for_inference(config: Path | None, weights: Path | None) -> Any:
    """A recipe (+ trained parts), or a zoo model: ``-c mfrsvlm-synth-mini`` or no ``-c`` at all."""
    from rsvl.zoo import is_zoo_name, load_mfrsvlm

    if config is None or (not config.exists() and is_zoo_name(str(config))):
        if weights is not None:
            raise InputError("--weights goes with -c RECIPE; a zoo model brings its own")
        return load_mfrsvlm(str(config) if config is not None else "mfrsvlm-synth-mini")
    from rsvl.methods.mfrsvlm.recipe import MFRSVLMRecipe, build_model
    from rsvl.utils.config import load_config

    recipe = load_config(MFRSVLMRecipe, config, [])
    model = build_model(recipe.model, seed=recipe.train.seed)
    if weights is not None:
        model.load_trainable(weights)  # a stage-2 file's LoRA tensors bring their adapters
    else:
        err_console.print(
            "[yellow]warning:[/] no --weights: projector, fusion and gates are untrained", highlight=False
        )
    return model.eval()


def _mfrsvlm_answer(model: Any, image: Path, prompt: str, max_new_tokens: int) -> str:
    from rsvl.methods.mfrsvlm.data import model_image_size, read_image

    pixels = read_image(image, model_image_size(model))[None]
    return model.generate(pixels, [prompt], max_new_tokens=max_new_tokens)[0]


@app.command()
@_fails_cleanly
def caption(
    image: Annotated[Path, typer.Argument(help="An image or GeoTIFF.")],
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="An MF-RSVLM run recipe or a zoo name (default mfrsvlm-synth-mini)."),
    ] = None,
    weights: Annotated[Path | None, typer.Option(help="trainable.safetensors of a training run.")] = None,
    instruction: Annotated[str | None, typer.Option(help="Captioning instruction.")] = None,
    max_new_tokens: Annotated[int, typer.Option(min=1, help="Longest caption in tokens.")] = 64,
) -> None:
    """MF-RSVLM: describe an image."""
    from rsvl.methods.mfrsvlm.prompts import caption_prompt

    model = _mfrsvlm_for_inference(config, weights)
    prompt = caption_prompt(instruction) if instruction else caption_prompt()
    console.print(_mfrsvlm_answer(model, image, prompt, max_new_tokens), highlight=False)


@app.command()
@_fails_cleanly
def classify(
    image: Annotated[Path, typer.Argument(help="An image or GeoTIFF.")],
    classes: Annotated[str, typer.Option(help="Comma-separated class names, e.g. forest,harbor,airport.")],
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="An MF-RSVLM run recipe or a zoo name (default mfrsvlm-synth-mini)."),
    ] = None,
    weights: Annotated[Path | None, typer.Option(help="trainable.safetensors of a training run.")] = None,
) -> None:
    """MF-RSVLM: scene classification with the answer constrained to the class list."""
    from rsvl.methods.mfrsvlm.prompts import classification_prompt, match_class

    names = [c.strip() for c in classes.split(",") if c.strip()]
    if len(names) < 2 or len(set(names)) != len(names):
        raise InputError(f"--classes needs at least two distinct names, got {names}")
    model = _mfrsvlm_for_inference(config, weights)
    answer = _mfrsvlm_answer(model, image, classification_prompt(names), 16)
    label = match_class(answer, names)
    console.print(f"{label if label is not None else '(none of the classes)'}  [dim](model said: {answer!r})[/]")


#: Options shared by the detectors' `rsvl train` commands.
_ResumeRun = Annotated[bool, typer.Option("--resume/--no-resume", help="Continue from the run folder's last.pt.")]
_RecipeOverrides = Annotated[
    list[str] | None, typer.Option("--set", help="Override a recipe key, e.g. --set optim.steps=200 (repeatable).")
]


@train_app.command("opendet")
@_fails_cleanly
def train_opendet(
    config: Annotated[Path, typer.Option("--config", "-c", help="Recipe YAML, e.g. configs/opendet/synth_tiny.yaml.")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Run folder (default runs/<name>).")] = None,
    names_path: Annotated[
        Path | None, typer.Option("--names-path", help="Local FlanT5 folder (overrides names.path / names.tiny).")
    ] = None,
    text_encoder: Annotated[
        str | None, typer.Option("--text-encoder", help="'minilm' or a local CLIP / sentence-encoder folder.")
    ] = None,
    resume: _ResumeRun = True,
    set_: _RecipeOverrides = None,
) -> None:
    """Train Open-Det (boxes + generated names) from a recipe, then write opendet.pt."""
    from rsvl.methods.opendet.recipe import load_recipe
    from rsvl.methods.opendet.train import train
    from rsvl.utils.distributed import is_main_process

    recipe = load_recipe(config, list(set_ or []))
    if names_path is not None:  # set directly: a path is not YAML
        recipe.names = recipe.names.model_copy(update={"path": names_path, "tiny": False})
    if text_encoder is not None:
        recipe.text = recipe.text.model_copy(update={"encoder": text_encoder, "tiny": False})
    run_dir = out or Path("runs") / recipe.name
    result = train(recipe, run_dir, resume=resume, progress=not _State.quiet)
    if not is_main_process():  # under torchrun / accelerate launch rank 0 reports
        return
    last = result.history[-1] if result.history else {}
    console.print(
        f"trained {result.steps} steps in {result.seconds:.0f} s (loss {last.get('total', float('nan')):.3f}); "
        f"model: {result.model_path}"
    )


@train_app.command("vlm4rsdet")
@_fails_cleanly
def train_vlm4rsdet(
    config: Annotated[
        Path, typer.Option("--config", "-c", help="Recipe YAML, e.g. configs/vlm4rsdet/aitod_synth.yaml.")
    ],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Run folder (default runs/<name>).")] = None,
    collab: Annotated[
        bool | None,
        typer.Option("--collab/--no-collab", help="Override vlm.enabled: train with / without the Florence-2 branch."),
    ] = None,
    vlm_path: Annotated[
        Path | None, typer.Option("--vlm-path", help="Local Florence-2-base folder (default: a tiny random one).")
    ] = None,
    resume: _ResumeRun = True,
    set_: _RecipeOverrides = None,
) -> None:
    """Train a VLM4RSDet detector (with or without the collaborative VLM branch), then export it."""
    from rsvl.methods.vlm4rsdet.config import load_recipe
    from rsvl.methods.vlm4rsdet.train import train
    from rsvl.utils.distributed import is_main_process

    overrides = list(set_ or [])
    if collab is not None:
        overrides.append(f"vlm.enabled={str(collab).lower()}")
    cfg = load_recipe(config, overrides)
    if vlm_path is not None:  # set directly: a path is not YAML ("no", "123", "#" would be misread)
        cfg.vlm.path = str(vlm_path)
    run_dir = out or Path("runs") / cfg.name
    result = train(cfg, run_dir, resume=resume, progress=not _State.quiet)
    if not is_main_process():  # under torchrun / accelerate launch rank 0 reports
        return
    console.print(f"trained {result.steps} steps in {result.seconds:.0f} s; detector: {result.detector_path}")
    if result.report is not None:
        table = Table(title=f"validation ({result.report.preset})")
        table.add_column("metric")
        table.add_column("value", justify="right")
        for key, value in list(result.report.metrics.items())[:12]:
            table.add_row(key, f"{value:.4f}")
        console.print(table)
        console.print(f"evaluation: {run_dir / 'eval.json'}")


@app.command()
@_fails_cleanly
def detect(
    images: Annotated[list[Path], typer.Argument(help="Images or GeoTIFFs of any size.")],
    model_path: Annotated[
        Path,
        typer.Option(
            "--model-path",
            "-m",
            help="detector.pt (rsvl train vlm4rsdet), opendet.pt (rsvl train opendet) or a zoo name (rsvl models list)",
        ),
    ],
    method: Annotated[str, typer.Option(help="vlm4rsdet (closed-set) or opendet (generates object names).")] = (
        "vlm4rsdet"
    ),
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")] = Path("detections"),
    formats: Annotated[
        str | None,
        typer.Option("--format", "-f", help="vlm4rsdet: comma-separated coco, dota, geojson (default all)."),
    ] = None,
    tile: Annotated[int, typer.Option(help="Tile size for large images.")] = 512,
    overlap: Annotated[int, typer.Option(help="Tile overlap in pixels.")] = 64,
    device: Annotated[str, typer.Option(help="torch device.")] = "cpu",
    coco_gt: Annotated[
        Path | None, typer.Option("--coco-gt", help="COCO annotations giving the result image ids (by file name).")
    ] = None,
    score_threshold: Annotated[
        float, typer.Option("--score-threshold", help="opendet: keep boxes with objectness at least this.")
    ] = 0.3,
    names_path: Annotated[
        Path | None, typer.Option("--names-path", help="opendet: the FlanT5 folder, if it moved since training.")
    ] = None,
    engine: Annotated[
        str, typer.Option(help="local (in this process) or ray (tiles of many images over Ray workers).")
    ] = "local",
    workers: Annotated[int, typer.Option(min=1, help="ray: model workers (one CPU or GPU each).")] = 2,
    ray_address: Annotated[
        str | None,
        typer.Option("--ray-address", help="ray: a running cluster (e.g. auto); default starts a local one."),
    ] = None,
    retries: Annotated[int, typer.Option(min=0, help="ray: retries of a tile whose prediction fails.")] = 2,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume/--no-resume",
            help="Skip what an interrupted run in --out finished: images and tiles (local), images (ray).",
        ),
    ] = True,
) -> None:
    """Detect objects with a trained detector; huge rasters go through sliced inference.

    With --method opendet every box gets a generated name (no class list needed). With --engine ray
    the tiles of all images are spread over Ray workers and each image is written as soon as its
    last tile is in (formats geojson, parquet).
    """
    if not 0 <= overlap < tile:
        raise InputError(f"--overlap must lie in [0, --tile), got {overlap} with tile {tile}")
    model_path = _zoo_or_path(model_path, method)
    if engine == "ray":
        _detect_ray(images, model_path, method, out, formats, tile, overlap, device, coco_gt, score_threshold,
                    names_path, workers, ray_address, retries, resume)  # fmt: skip
        return
    if engine != "local":
        raise InputError(f"unknown --engine {engine!r}; choose local or ray")
    if method == "opendet":
        from rsvl.methods.opendet.infer import detect_files as detect_open
        from rsvl.methods.opendet.infer import load_opendet

        if formats is not None or coco_gt is not None:
            raise InputError("--method opendet writes GeoJSON and detections.json; --format/--coco-gt do not apply")
        if not 0 <= score_threshold <= 1:
            raise InputError(f"--score-threshold must lie in [0, 1], got {score_threshold}")
        loaded = load_opendet(model_path, device=device, names_path=names_path)
        loaded.score_threshold = score_threshold
        written = detect_open(
            images, loaded, out, tile=tile, overlap=overlap, progress=not _State.quiet, resume=resume,
            model_path=model_path,
        )  # fmt: skip
        report = json.loads(written["json"][0].read_text())
        for record in report["images"]:
            table = Table(title=f"{record['file']} ({len(record['detections'])} objects)")
            for col in ("name", "score", "box (x0, y0, x1, y1)"):
                table.add_column(col)
            for det in record["detections"][:20]:
                table.add_row(det["name"], f"{det['score']:.3f}", ", ".join(f"{v:.0f}" for v in det["box"]))
            console.print(table)
    elif method == "vlm4rsdet":
        from rsvl.methods.vlm4rsdet.infer import detect_files, load_detector

        detector = load_detector(model_path, device=device)
        wanted = [f.strip() for f in (formats or "coco,dota,geojson").split(",") if f.strip()]
        written = detect_files(
            images, detector, out, formats=wanted, tile=tile, overlap=overlap, progress=not _State.quiet,
            coco_gt=coco_gt, resume=resume, model_path=model_path,
        )  # fmt: skip
    else:
        raise InputError(f"unknown --method {method!r}; choose vlm4rsdet or opendet")
    for fmt, paths in written.items():
        shown = paths[0].parent if len(paths) > 3 else ", ".join(str(p) for p in paths)
        console.print(f"{fmt}: {shown}")


@app.command()
@_fails_cleanly
def ground(
    image: Annotated[Path | None, typer.Argument(help="An image or GeoTIFF (omit with --dataset).")] = None,
    expression: Annotated[str | None, typer.Argument(help='The referring expression, e.g. "the white plane".')] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")] = Path("grounding"),
    config: Annotated[Path | None, typer.Option("--config", "-c", help="Settings YAML (configs/zeroov/).")] = None,
    vlm_path: Annotated[Path | None, typer.Option(help="Local Qwen2.5-VL folder (transformers format).")] = None,
    sd_path: Annotated[Path | None, typer.Option(help="Local Stable Diffusion 1.x folder (diffusers format).")] = None,
    sam_path: Annotated[Path | None, typer.Option(help="Local SAM folder: refine masks with the box.")] = None,
    focus: Annotated[
        str | None,
        typer.Option(help="Focus provider: stable_diffusion, lite0_affinity or none (default: SD with --sd-path)."),
    ] = None,
    fusion: Annotated[str | None, typer.Option(help="cosine or weighted_sum.")] = None,
    tiny: Annotated[bool, typer.Option("--tiny", help="Allow tiny random models where no weights are given.")] = False,
    device: Annotated[str | None, typer.Option(help="torch device for every model.")] = None,
    max_side: Annotated[int, typer.Option(help="Ground larger images on a copy this long on its long side.")] = 1024,
    dataset: Annotated[str | None, typer.Option(help="Batch mode: a dataset format (rrsisd).")] = None,
    root: Annotated[Path | None, typer.Option(help="Batch mode: the dataset root.")] = None,
    split: Annotated[str | None, typer.Option(help="Batch mode: only this split (e.g. test).")] = None,
    limit: Annotated[int | None, typer.Option(help="Batch mode: stop after this many expressions.")] = None,
    all_sentences: Annotated[
        bool, typer.Option("--all-sentences", help="Batch mode: every sentence of a reference is an item.")
    ] = False,
    resume: Annotated[bool, typer.Option("--resume/--no-resume", help="Batch mode: keep earlier results.")] = True,
    preset: Annotated[str, typer.Option(help="Batch mode: grounding preset of the scores.")] = "zeroov",
    overrides: Annotated[
        list[str] | None, typer.Option("--set", help="Override a setting: --set evolve.tau=0.25 (repeatable).")
    ] = None,
) -> None:
    """Training-free referring grounding (RSVG-ZeroOV): an expression -> mask + box (+ GeoJSON)."""
    from rsvl.methods.zeroov.config import ZeroOVConfig
    from rsvl.methods.zeroov.infer import ground_dataset, ground_file
    from rsvl.methods.zeroov.pipeline import ZeroOVGrounder, check_weights
    from rsvl.utils.config import load_config

    if dataset is None and (image is None or expression is None):
        raise InputError("give IMAGE and EXPRESSION, or --dataset with --root")
    if dataset is not None and (root is None or image is not None):
        raise InputError("--dataset needs --root and takes no IMAGE/EXPRESSION arguments")
    if dataset is None:
        batch_only = {"--root": root, "--split": split, "--limit": limit, "--all-sentences": all_sentences or None}
        given = [flag for flag, value in batch_only.items() if value is not None]
        if given:
            raise InputError(f"{', '.join(given)} only apply with --dataset")
    sets = list(overrides or [])
    if sam_path is not None:
        sets.append("refine.sam=true")
    if focus is not None:
        sets.append(f"focus.provider={focus}")
    elif sd_path is None and config is None:
        sets.append("focus.provider=lite0_affinity")
    if fusion is not None:
        sets.append(f"fusion.mode={fusion}")
    if tiny:
        sets.append("refine.tiny=true")
    if device is not None:
        sets += [f"overview.device={device}", f"focus.device={device}", f"refine.device={device}"]
    cfg = load_config(ZeroOVConfig, config, sets)
    # paths set directly: a path is not YAML ("no", "123" or "#x" would be misread)
    for section, value in ((cfg.overview, vlm_path), (cfg.focus, sd_path), (cfg.refine, sam_path)):
        if value is not None:
            section.path = value
    random_stages = check_weights(cfg, allow_random=tiny)
    for stage in random_stages:
        err_console.print(f"[yellow]warning:[/] tiny random model for {stage.split(':')[0]}", highlight=False)
    grounder = ZeroOVGrounder(cfg)
    if dataset is not None:
        assert root is not None
        summary = ground_dataset(
            grounder,
            dataset,
            root,
            out,
            split=split,
            limit=limit,
            all_sentences=all_sentences,
            resume=resume,
            preset=preset,
            max_side=max_side,
            progress=not _State.quiet,
        )
        table = Table(title=f"grounding / {preset} ({summary['n']} expressions, {summary['new']} new)")
        table.add_column("metric")
        for kind in ("box", "mask"):
            if summary[kind] is not None:
                table.add_column(kind, justify="right")
        keys = list(summary["box"]["metrics"])
        for key in keys:
            row = [f"{summary[k]['metrics'][key]:.4f}" for k in ("box", "mask") if summary[k] is not None]
            table.add_row(key, *row)
        console.print(table)
        console.print(f"results in [bold]{out}[/] (eval.json, boxes.json, masks.json, predictions.jsonl)")
        return
    assert image is not None and expression is not None
    with _spinner(f"grounding {expression!r} in {image.name}"):
        record = ground_file(grounder, image, expression, out, max_side=max_side)
    box = ", ".join(f"{v:.1f}" for v in record["box_xyxy"])
    note = f" (fallback: {record['fallback']})" if record["fallback"] else ""
    console.print(f"box xyxy [{box}] score {record['score']:.3f}{note}", highlight=False)
    for kind, path in record["outputs"].items():
        console.print(f"{kind}: {path}", highlight=False)


def _lrsvqa_config(
    config: Path | None,
    overrides: list[str] | None,
    model_path: Path | None,
    gguf: Path | None,
    rfm_path: Path | None,
    device: str | None,
) -> Any:
    """LRS-VQA settings from the YAML, ``--set`` overrides and the path options (set directly:
    a path is not YAML, "no" or "123" would be misread). A zoo name as ``model_path``
    (``lrsvqa-rfm-mini``) brings the zoo model's settings, which ``--set`` may change."""
    from rsvl.methods.lrsvqa.config import LRSVQAConfig
    from rsvl.utils.config import load_config
    from rsvl.zoo import is_zoo_name, lrsvqa_config

    zoo: dict[str, Any] = {}
    if model_path is not None and not model_path.exists() and is_zoo_name(str(model_path)):
        if config is not None or gguf is not None:
            raise InputError(f"zoo model {model_path} brings its own settings: drop -c/--gguf (use --set)")
        zoo = lrsvqa_config(str(model_path)).model_dump(mode="json")  # type: ignore[attr-defined]
        model_path = None
    cfg = load_config(LRSVQAConfig, config, list(overrides or []), **zoo)
    if model_path is not None:
        cfg.model.path = model_path
    if gguf is not None:
        cfg.model.gguf = gguf
    if rfm_path is not None:
        cfg.rfm.path = rfm_path
        cfg.selection.scorer = "rfm"
    if device is not None:
        cfg.model.device = device
    return cfg


@app.command()
@_fails_cleanly
def vqa(
    image: Annotated[Path | None, typer.Argument(help="An image or GeoTIFF of any size (omit with --dataset).")] = None,
    question: Annotated[str | None, typer.Argument(help='The question, e.g. "What colour is the ship?".')] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")] = Path("vqa"),
    config: Annotated[Path | None, typer.Option("--config", "-c", help="Settings YAML (configs/lrsvqa/).")] = None,
    model_path: Annotated[
        Path | None,
        typer.Option(
            "--model-path",
            "-m",
            help="Local LLaVA folder (Qwen2.5-VL with --set model.family=qwen2_5_vl), or the zoo's lrsvqa-rfm-mini.",
        ),
    ] = None,
    gguf: Annotated[Path | None, typer.Option(help="A GGUF language model under a LLaVA head (CPU miniature).")] = None,
    rfm_path: Annotated[Path | None, typer.Option(help="Distilled Region Focus Module weights.")] = None,
    mode: Annotated[str, typer.Option(help="pyramid (the method), no_prune or uniform (baselines).")] = "pyramid",
    show_tiles: Annotated[bool, typer.Option(help="Draw the tiles looked at (<stem>.<question>.tiles.png).")] = True,
    tiny: Annotated[bool, typer.Option("--tiny", help="Allow a tiny random model where no weights are given.")] = False,
    device: Annotated[str | None, typer.Option(help="torch device.")] = None,
    dataset: Annotated[str | None, typer.Option(help="Batch mode: a VQA dataset format (lrsvqa).")] = None,
    root: Annotated[Path | None, typer.Option(help="Batch mode: the dataset root.")] = None,
    limit: Annotated[int | None, typer.Option(help="Batch mode: stop after this many questions.")] = None,
    resume: Annotated[bool, typer.Option("--resume/--no-resume", help="Batch mode: keep earlier answers.")] = True,
    overrides: Annotated[
        list[str] | None, typer.Option("--set", help="Override a setting: --set selection.pruning_ratio=0.5.")
    ] = None,
    method: Annotated[
        str, typer.Option(help="lrsvqa (large images) or mfrsvlm (-c recipe + --weights, or the zoo model).")
    ] = "lrsvqa",
    weights: Annotated[Path | None, typer.Option(help="mfrsvlm: trainable.safetensors of a run.")] = None,
) -> None:
    """Visual question answering: LRS-VQA on very large images (pyramid + text-guided token pruning),
    or MF-RSVLM (``--method mfrsvlm``)."""
    from rsvl.methods.lrsvqa.infer import answer_dataset, answer_file
    from rsvl.methods.lrsvqa.pipeline import MODES, LargeImageVQA, check_weights

    if method == "mfrsvlm":
        from rsvl.methods.mfrsvlm.prompts import vqa_prompt

        if image is None or question is None or dataset is not None:
            raise InputError("--method mfrsvlm needs IMAGE and QUESTION (batch mode: rsvl train's eval)")
        model = _mfrsvlm_for_inference(config, weights)
        console.print(f"[bold]answer:[/] {_mfrsvlm_answer(model, image, vqa_prompt(question), 32)}", highlight=False)
        return
    if method != "lrsvqa":
        raise InputError(f"unknown --method {method!r}; known: lrsvqa, mfrsvlm")
    if weights is not None:
        raise InputError("--weights applies to --method mfrsvlm")

    if dataset is None and (image is None or question is None):
        raise InputError("give IMAGE and QUESTION, or --dataset with --root")
    if dataset is not None and (root is None or image is not None):
        raise InputError("--dataset needs --root and takes no IMAGE/QUESTION arguments")
    if dataset is None and (root is not None or limit is not None):
        raise InputError("--root and --limit only apply with --dataset")
    if mode not in MODES:
        raise InputError(f"unknown --mode {mode!r}; known: {', '.join(MODES)}")
    cfg = _lrsvqa_config(config, overrides, model_path, gguf, rfm_path, device)
    for part in check_weights(cfg, allow_random=tiny):
        err_console.print(f"[yellow]warning:[/] random weights for {part.split(':')[0]}", highlight=False)
    engine = LargeImageVQA(cfg)
    if dataset is not None:
        assert root is not None
        summary = answer_dataset(
            engine, root, out, format_name=dataset, mode=mode, limit=limit, resume=resume, progress=not _State.quiet
        )
        metrics = summary["report"]["metrics"]
        table = Table(title=f"{dataset} / lrsvqa rule ({summary['n']} questions, {summary['new']} new, {mode})")
        table.add_column("metric")
        table.add_column("value", justify="right")
        for key, value in metrics.items():
            table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
        table.add_row("mean vision tokens", f"{summary['mean_vision_tokens']:.0f}")
        console.print(table)
        console.print(f"results in [bold]{out}[/] (predictions.jsonl, eval.json)")
        return
    assert image is not None and question is not None
    record = answer_file(engine, image, question, out, mode=mode, show_tiles=show_tiles, progress=not _State.quiet)
    console.print(f"[bold]answer:[/] {record['answer']}", highlight=False)
    console.print(
        f"{record['vision_tokens']:,} vision tokens into the LLM ({record['full_resolution_tokens']:,} for "
        f"full-resolution tiling), {record['tiles_encoded']} tiles encoded",
        highlight=False,
    )
    for kind, path in record["outputs"].items():
        console.print(f"{kind}: {path}", highlight=False)


def _benchmarks_dir() -> Path:
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "benchmarks" / "__init__.py").is_file():
            return parent / "benchmarks"
    raise InputError("benchmarks/ ships with the source checkout only; run `rsvl bench` from a clone of rsvl")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@_fails_cleanly
def bench(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Argument(help="Benchmark to run; omit to list them.")] = None,
) -> None:
    """Run a benchmark from benchmarks/ (extra options go to it), or list them."""
    bench_dir = _benchmarks_dir()
    names = sorted(p.stem for p in bench_dir.glob("*.py") if not p.stem.startswith("_"))
    if name is None:
        for n in names:
            console.print(n)
        return
    if name not in names:
        raise InputError(f"unknown benchmark {name!r}; available: {', '.join(names)}")
    root = bench_dir.parent
    python_path = os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))
    env = dict(os.environ, PYTHONPATH=python_path)
    code = subprocess.call([sys.executable, "-m", f"benchmarks.{name}", *ctx.args], cwd=root, env=env)
    raise typer.Exit(code)


if __name__ == "__main__":  # pragma: no cover
    app()
