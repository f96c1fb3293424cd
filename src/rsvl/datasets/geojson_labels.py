"""GeoTIFF images with GeoJSON polygon labels in map coordinates (SpaceNet / solaris style).

Layout: ``images/<stem>.tif`` (georeferenced) + ``labels/<stem>.geojson``. Each feature's
geometry is reprojected to the image CRS when the label file declares another one (legacy
``crs`` member; RFC 7946 files without it are WGS 84) and mapped to pixels with the image's
geotransform. A Polygon becomes one :class:`Instance` whose ``polygon`` is the exterior ring in
pixels (closing vertex dropped); holes go to ``attrs["holes"]`` so the writer restores them; a
MultiPolygon keeps its parts as a COCO polygon list in ``mask``. The category comes from the
``category_key`` property (default ``category``), else ``default_category``; the other
properties are kept in ``attrs["properties"]``.

Round trips are exact up to the floating-point error of the affine transform (about 1e-9 px).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import rasterio
from rasterio.crs import CRS
from rasterio.errors import CRSError, RasterioIOError
from rasterio.warp import transform_geom

from rsvl.datasets.base import (
    Dataset,
    DatasetFormat,
    ReadReport,
    check_type,
    finite_number,
    load_json,
    register_format,
)
from rsvl.datasets.sample import Category, Instance, Sample
from rsvl.errors import DatasetError, RasterError
from rsvl.utils.atomic import write_text

_WGS84 = CRS.from_epsg(4326)
_IMAGE_SUFFIXES = (".tif", ".tiff")


def _label_crs(data: dict[str, Any], path: Path) -> CRS:
    member = data.get("crs")
    if member is None:
        return _WGS84
    try:
        return CRS.from_user_input(member["properties"]["name"])
    except (KeyError, TypeError, CRSError):
        raise DatasetError(f"crs: cannot understand {json.dumps(member)[:80]}", path) from None


def _ring(coords: Any, what: str, path: Path, inverse: Any) -> tuple[float, ...]:
    check_type(coords, (list, tuple), what, path)
    if len(coords) < 4:
        raise DatasetError(f"{what}: a ring needs at least 4 positions (closed), got {len(coords)}", path)
    flat: list[float] = []
    for k, pos in enumerate(coords[:-1] if list(coords[0]) == list(coords[-1]) else coords):
        check_type(pos, (list, tuple), f"{what}[{k}]", path)
        if len(pos) < 2:
            raise DatasetError(f"{what}[{k}]: expected [x, y], got {pos!r}", path)
        x = finite_number(pos[0], f"{what}[{k}][0]", path)
        y = finite_number(pos[1], f"{what}[{k}][1]", path)
        col, row = inverse @ (x, y)
        flat.extend((float(col), float(row)))
    return tuple(flat)


def _bbox(rings: Iterable[tuple[float, ...]]) -> tuple[float, float, float, float]:
    xs = [v for ring in rings for v in ring[0::2]]
    ys = [v for ring in rings for v in ring[1::2]]
    return (min(xs), min(ys), max(xs), max(ys))


def _instance(feature: Any, k: int, path: Path, inverse: Any, key: str, default: str) -> Instance:
    what = f"features[{k}]"
    check_type(feature, dict, what, path)
    geometry = check_type(feature.get("geometry"), dict, f"{what}.geometry", path)
    properties = dict(feature.get("properties") or {})
    category = properties.pop(key, None)
    category = default if category in (None, "") else str(category)
    kind = geometry.get("type")
    coords = check_type(geometry.get("coordinates"), (list, tuple), f"{what}.geometry.coordinates", path)
    attrs: dict[str, Any] = {"properties": properties}
    if kind == "Polygon":
        if not coords:
            raise DatasetError(f"{what}.geometry.coordinates: empty polygon", path)
        rings = [_ring(r, f"{what}.geometry.coordinates[{i}]", path, inverse) for i, r in enumerate(coords)]
        if len(rings) > 1:
            attrs["holes"] = rings[1:]
        return Instance(category=category, bbox=_bbox(rings[:1]), polygon=rings[0], attrs=attrs)
    if kind == "MultiPolygon":
        parts: list[tuple[float, ...]] = []
        holes: list[list[tuple[float, ...]]] = []
        for p, polygon in enumerate(coords):
            check_type(polygon, (list, tuple), f"{what}.geometry.coordinates[{p}]", path)
            if not polygon:
                raise DatasetError(f"{what}.geometry.coordinates[{p}]: empty polygon", path)
            rings = [_ring(r, f"{what}.geometry.coordinates[{p}][{i}]", path, inverse) for i, r in enumerate(polygon)]
            parts.append(rings[0])
            holes.append(rings[1:])
        if not parts:
            raise DatasetError(f"{what}.geometry.coordinates: empty multipolygon", path)
        attrs["multipolygon_holes"] = holes
        return Instance(category=category, bbox=_bbox(parts), mask=[list(p) for p in parts], attrs=attrs)
    raise DatasetError(f"{what}.geometry.type: expected Polygon or MultiPolygon, got {kind!r}", path)


@register_format
class GeoJSONLabels(DatasetFormat):
    """GeoTIFFs + per-image GeoJSON polygon labels in map coordinates (SpaceNet, solaris)."""

    name = "geojson"
    tasks = ("detection", "segmentation")
    layout = "images/<stem>.tif + labels/<stem>.geojson (polygons in map coordinates)"
    image_dir = "images"

    def __init__(self, category_key: str = "category", default_category: str = "object"):
        self.category_key = category_key
        self.default_category = default_category

    def image_relpath(self, stem: str, suffix: str = ".tif", label: str | None = None) -> str:
        return f"{self.image_dir}/{stem}.tif"

    def open(self, root: str | PathLike[str], *, strict: bool = True) -> Dataset:
        root = Path(root)
        labels_dir = root / "labels"
        if not labels_dir.is_dir():
            raise DatasetError(f"no labels/ folder (expected {self.layout})", root)
        files = sorted(labels_dir.glob("*.geojson"))

        def samples(report: ReadReport) -> Iterator[Sample]:
            for label_path in files:
                try:
                    yield self._read_one(root, label_path, report, strict)
                except DatasetError as exc:
                    if strict:
                        raise
                    report.skip(exc)

        return Dataset(root, self.name, samples)

    def _read_one(self, root: Path, label_path: Path, report: ReadReport, strict: bool) -> Sample:
        candidates = [root / self.image_dir / (label_path.stem + s) for s in _IMAGE_SUFFIXES]
        image = next((p for p in candidates if p.is_file()), None)
        if image is None:
            raise DatasetError(f"no image {self.image_dir}/{label_path.stem}.tif for these labels", label_path)
        try:
            with rasterio.open(image) as src:
                image_crs, transform, width, height = src.crs, src.transform, src.width, src.height
        except RasterioIOError as exc:
            raise DatasetError(f"image for these labels cannot be opened: {exc}", label_path) from None
        if image_crs is None:
            raise RasterError(
                f"image {image.name} has no CRS; map-coordinate labels need a georeferenced image", label_path
            )
        data = check_type(load_json(label_path), dict, "top level", label_path)
        features = check_type(data.get("features"), list, "features", label_path)
        label_crs = _label_crs(data, label_path)
        instances: list[Instance] = []
        inverse = ~transform
        for k, feature in enumerate(features):
            try:
                if label_crs != image_crs and isinstance(feature, dict) and isinstance(feature.get("geometry"), dict):
                    try:
                        feature = dict(feature, geometry=transform_geom(label_crs, image_crs, feature["geometry"]))
                    except Exception as exc:  # GDAL raises several types for impossible geometries
                        raise DatasetError(f"features[{k}]: cannot reproject: {exc}", label_path) from None
                instances.append(_instance(feature, k, label_path, inverse, self.category_key, self.default_category))
            except DatasetError as exc:
                if strict:
                    raise
                report.skip(exc)
        rel = image.relative_to(root).as_posix()
        return Sample(
            image=rel,
            image_id=label_path.stem,
            width=width,
            height=height,
            instances=instances,
            meta={"label_crs": label_crs.to_string()},
        )

    def write(
        self,
        root: str | PathLike[str],
        samples: Iterable[Sample],
        *,
        categories: Sequence[Category] | None = None,
        meta: dict[str, Any] | None = None,
    ) -> None:
        """Write ``labels/<stem>.geojson`` in each image's own CRS (the images must exist)."""
        root = Path(root)
        for sample in samples:
            image = root / sample.image
            try:
                with rasterio.open(image) as src:
                    crs, transform = src.crs, src.transform
            except RasterioIOError as exc:
                raise DatasetError(f"cannot open the image to georeference labels: {exc}", image) from None
            if crs is None:
                raise RasterError("image has no CRS; cannot write map-coordinate labels", image)
            features = [self._feature(inst, transform) for inst in sample.instances]
            collection = {
                "type": "FeatureCollection",
                "crs": {"type": "name", "properties": {"name": _urn(crs)}},
                "features": features,
            }
            write_text(root / "labels" / f"{Path(sample.image).stem}.geojson", json.dumps(collection, indent=1))

    def _feature(self, inst: Instance, transform: Any) -> dict[str, Any]:
        def ring(flat: Sequence[float]) -> list[list[float]]:
            points = [list(transform @ (flat[i], flat[i + 1])) for i in range(0, len(flat), 2)]
            return [*points, points[0]]

        properties = dict(inst.attrs.get("properties", {}))
        properties[self.category_key] = inst.category
        if inst.polygon is not None:
            rings = [ring(inst.polygon)] + [ring(h) for h in inst.attrs.get("holes", [])]
            geometry = {"type": "Polygon", "coordinates": rings}
        elif isinstance(inst.mask, list):
            holes = inst.attrs.get("multipolygon_holes") or [[] for _ in inst.mask]
            geometry = {
                "type": "MultiPolygon",
                "coordinates": [[ring(p)] + [ring(h) for h in hs] for p, hs in zip(inst.mask, holes, strict=True)],
            }
        elif inst.bbox is not None:
            x1, y1, x2, y2 = inst.bbox
            geometry = {"type": "Polygon", "coordinates": [ring((x1, y1, x2, y1, x2, y2, x1, y2))]}
        else:
            raise DatasetError(f"object of category {inst.category!r} has no polygon, box or polygon mask")
        return {"type": "Feature", "properties": properties, "geometry": geometry}


def _urn(crs: CRS) -> str:
    epsg = crs.to_epsg()
    return f"urn:ogc:def:crs:EPSG::{epsg}" if epsg else crs.to_wkt()
