"""Write detections as vector data: GeoJSON (always) and GeoPackage (with the ``[geo]`` extra).

Each detection becomes a polygon feature: an HBB its 4-corner rectangle, an OBB its 4 rotated
corners; rings are closed (first vertex repeated) and counter-clockwise in output coordinates
(RFC 7946's right-hand rule). Properties: ``label`` (int), ``name`` (str or null), ``score``
(float) and ``coordinate_space`` (``"map"`` or ``"pixel"``).

When the image is georeferenced, coordinates are map coordinates (pixel corners through the
affine) in the image's CRS, and GeoJSON carries the legacy ``crs`` member
(``urn:ogc:def:crs:EPSG::<code>``, or the WKT) that GDAL, QGIS, geopandas and pyogrio read.
Otherwise coordinates stay in pixels (x right, y down), ``coordinate_space`` says ``"pixel"``,
and the files carry :data:`PIXEL_CRS_WKT`, a local engineering CRS in pixel units: a GeoJSON
without a ``crs`` member would be read as WGS 84 longitude/latitude by GDAL, which pixel
coordinates are not. Every write is atomic (temporary file + rename).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rsvl.errors import InputError
from rsvl.io.detections import Detections
from rsvl.io.georef import GeoRef
from rsvl.utils.atomic import atomic_path, write_text

__all__ = [
    "PIXEL_CRS_WKT",
    "detection_rings",
    "detections_to_geojson",
    "feature_collection",
    "mask_geometry",
    "write_detections",
    "write_geojson",
    "write_gpkg",
]


#: Local engineering CRS for pixel coordinates; GDAL, pyproj and QGIS read it as "not on Earth".
PIXEL_CRS_WKT = (
    'LOCAL_CS["image pixels (x right, y down)",LOCAL_DATUM["image",32767],'
    'UNIT["pixel",1],AXIS["X",EAST],AXIS["Y",SOUTH]]'
)


def _georef(georef: Any) -> GeoRef | None:
    """Accept a GeoRef, anything with a ``.georef`` (RasterSource), or None (pixel output)."""
    if georef is None or isinstance(georef, GeoRef):
        return georef
    if hasattr(georef, "georef"):
        return georef.georef
    raise TypeError(f"expected a GeoRef, a RasterSource or None, got {type(georef).__name__}")


def detection_rings(dets: Detections, georef: GeoRef | Any | None = None) -> tuple[np.ndarray, bool]:
    """Closed polygon rings ``(N, 5, 2)`` of the detections and whether they are map coordinates.

    Map coordinates when ``georef`` is georeferenced, else pixels. Rings are counter-clockwise in
    the returned coordinates.
    """
    from rsvl.geometry import hbb_to_poly, obb_to_poly

    ref = _georef(georef)
    flat = hbb_to_poly(dets.boxes) if dets.kind == "hbb" else obb_to_poly(dets.boxes)
    pts = np.asarray(flat, dtype=np.float64).reshape(len(dets), 4, 2)
    on_map = ref is not None and ref.is_georeferenced
    if on_map:
        pts = ref.pixel_to_map(pts)  # type: ignore[union-attr]
    x, y = pts[..., 0], pts[..., 1]
    signed = (x * np.roll(y, -1, axis=1) - np.roll(x, -1, axis=1) * y).sum(axis=1)
    pts = np.where((signed < 0)[:, None, None], pts[:, ::-1], pts)
    return np.concatenate([pts, pts[:, :1]], axis=1), on_map


def _crs_member(ref: GeoRef | None, on_map: bool) -> dict[str, Any]:
    """GeoJSON 2008 ``crs`` member; RFC 7946 dropped it, but GDAL and QGIS still honour it."""
    if on_map:
        assert ref is not None and ref.crs is not None
        epsg = ref.crs.to_epsg()
        name = f"urn:ogc:def:crs:EPSG::{epsg}" if epsg is not None else ref.crs.to_wkt()
    else:
        name = PIXEL_CRS_WKT
    return {"type": "name", "properties": {"name": name}}


def _oriented(ring: np.ndarray, counter_clockwise: bool) -> list[list[float]]:
    x, y = ring[:, 0], ring[:, 1]
    signed = float((x[:-1] * y[1:] - x[1:] * y[:-1]).sum())
    if (signed > 0) != counter_clockwise:
        ring = ring[::-1]
    return ring.tolist()


def mask_geometry(
    mask: np.ndarray, georef: GeoRef | Any | None = None, pixel_scale: tuple[float, float] = (1.0, 1.0)
) -> tuple[dict[str, Any] | None, bool]:
    """A bool mask as a GeoJSON ``MultiPolygon`` (pixel edges traced by ``rasterio.features.shapes``).

    Args:
        mask: ``(h, w)`` bool, True inside.
        georef: the image's georeferencing (map coordinates when georeferenced, else pixels).
        pixel_scale: size of one mask pixel in image pixels ``(sx, sy)``, for masks computed on a
            reduced copy of the image.

    Returns:
        ``(geometry, on_map)``; geometry is None for an empty mask. Exteriors are counter-clockwise
        and holes clockwise in output coordinates (RFC 7946).
    """
    from affine import Affine
    from rasterio.features import shapes

    ref = _georef(georef)
    on_map = ref is not None and ref.is_georeferenced
    scale = Affine.scale(float(pixel_scale[0]), float(pixel_scale[1]))
    transform = ref.transform @ scale if on_map else scale  # type: ignore[union-attr]
    mask = np.asarray(mask, dtype=bool)
    polygons = []
    for geom, value in shapes(mask.astype(np.uint8), mask=mask, connectivity=8, transform=transform):
        if value != 1:
            continue
        rings = [np.asarray(r, dtype=np.float64) for r in geom["coordinates"]]
        polygons.append([_oriented(rings[0], True)] + [_oriented(r, False) for r in rings[1:]])
    if not polygons:
        return None, on_map
    return {"type": "MultiPolygon", "coordinates": polygons}, on_map


def feature_collection(
    features: list[dict[str, Any]], georef: GeoRef | Any | None = None, name: str | None = None
) -> dict[str, Any]:
    """A FeatureCollection with the ``crs`` member of the image (map CRS, or the pixel CRS)."""
    ref = _georef(georef)
    on_map = ref is not None and ref.is_georeferenced
    collection: dict[str, Any] = {"type": "FeatureCollection"}
    if name:
        collection["name"] = name
    collection["crs"] = _crs_member(ref, on_map)
    collection["features"] = features
    return collection


def _attributes(dets: Detections, class_names: Sequence[str] | None, on_map: bool) -> dict[str, list[Any]]:
    return {
        "label": [int(v) for v in dets.labels],
        "name": dets.class_names(class_names),
        "score": [float(v) for v in dets.scores],
        "coordinate_space": ["map" if on_map else "pixel"] * len(dets),
    }


def detections_to_geojson(
    dets: Detections,
    georef: GeoRef | Any | None = None,
    *,
    class_names: Sequence[str] | None = None,
    name: str | None = None,
) -> dict[str, Any]:
    """A GeoJSON FeatureCollection ``dict`` of the detections (see the module docstring).

    Args:
        dets: the detections, in the image's pixel coordinates.
        georef: the image's :class:`GeoRef` or its :class:`RasterSource`; ``None`` for pixels.
        class_names: names indexed by label, used when ``dets`` has no per-box names.
        name: optional collection name (GDAL uses it as the layer name).
    """
    ref = _georef(georef)
    rings, on_map = detection_rings(dets, ref)
    attrs = _attributes(dets, class_names, on_map)
    features = [
        {
            "type": "Feature",
            "id": i,
            "geometry": {"type": "Polygon", "coordinates": [rings[i].tolist()]},
            "properties": {key: values[i] for key, values in attrs.items()},
        }
        for i in range(len(dets))
    ]
    return feature_collection(features, ref, name)


def write_geojson(
    path: str | os.PathLike[str],
    dets: Detections,
    georef: GeoRef | Any | None = None,
    *,
    class_names: Sequence[str] | None = None,
    indent: int | None = None,
) -> Path:
    """Write the detections as a GeoJSON file, atomically; returns the path."""
    layer = Path(path).stem
    collection = detections_to_geojson(dets, georef, class_names=class_names, name=layer)
    return write_text(path, json.dumps(collection, indent=indent, allow_nan=False) + "\n")


def write_gpkg(
    path: str | os.PathLike[str],
    dets: Detections,
    georef: GeoRef | Any | None = None,
    *,
    layer: str = "detections",
    class_names: Sequence[str] | None = None,
) -> Path:
    """Write the detections as a GeoPackage layer (via geopandas + pyogrio), atomically.

    Raises:
        InputError: when the optional ``[geo]`` extra (geopandas, shapely, pyogrio) is missing.
    """
    try:
        import geopandas as gpd
        import pyogrio  # noqa: F401  (the engine geopandas writes with)
        import shapely
    except ImportError as exc:
        raise InputError(
            f"writing GeoPackage needs the optional [geo] extra ({exc.name} is missing): "
            "pip install 'rsvl[geo]', or write GeoJSON instead",
            path,
        ) from exc
    ref = _georef(georef)
    rings, on_map = detection_rings(dets, ref)
    crs = ref.crs_name if on_map else PIXEL_CRS_WKT  # type: ignore[union-attr]
    frame = gpd.GeoDataFrame(
        _attributes(dets, class_names, on_map),
        geometry=shapely.polygons(rings) if len(dets) else [],
        crs=crs,
    )
    frame["name"] = frame["name"].astype("string")
    with atomic_path(path) as tmp:
        tmp.unlink()  # let GDAL create the GeoPackage from scratch
        frame.to_file(tmp, layer=layer, driver="GPKG", engine="pyogrio")
    return Path(path)


def write_detections(
    path: str | os.PathLike[str],
    dets: Detections,
    georef: GeoRef | Any | None = None,
    *,
    class_names: Sequence[str] | None = None,
) -> Path:
    """Write GeoJSON (``.geojson``/``.json``) or GeoPackage (``.gpkg``), chosen by the suffix."""
    suffix = Path(path).suffix.lower()
    if suffix in (".geojson", ".json"):
        return write_geojson(path, dets, georef, class_names=class_names)
    if suffix == ".gpkg":
        return write_gpkg(path, dets, georef, class_names=class_names)
    raise InputError("unknown vector format: use .geojson, .json or .gpkg", path)
