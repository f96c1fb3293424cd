"""The ``rsvl`` command line: thin wrappers that parse options, call the library, print with Rich.

Every command turns rsvl's input errors into a one-line message on stderr and exit code 2
(the same code Typer uses for usage errors); anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

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
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=True,
        disable=_State.quiet,
    )


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
) -> None:
    """Run the core pipeline on the bundled real aerial images and GeoTIFF; print where outputs are."""
    from rsvl.demo import run_demo

    report = run_demo(out, progress=not _State.quiet)
    table = Table(title="rsvl demo: core pipeline on bundled real data")
    table.add_column("step")
    table.add_column("result")
    for step, result in report.rows:
        table.add_row(step, result)
    console.print(table)
    console.print(f"outputs in [bold]{report.out_dir.resolve()}[/] (summary: {report.summary_path.name})")


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
