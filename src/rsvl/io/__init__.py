"""Raster and vector IO for large remote-sensing images.

* :mod:`~rsvl.io.raster`: :class:`RasterSource`, lazy windowed reads of PNG/JPEG/(Geo)TIFF.
* :mod:`~rsvl.io.display`: 16-bit / multiband -> display RGB uint8 with one stretch per image.
* :mod:`~rsvl.io.georef`: pixel <-> map coordinates through the affine, CRS carried along.
* :mod:`~rsvl.io.tiling`: :class:`TileSpec`, :func:`iter_windows` (pure window arithmetic).
* :mod:`~rsvl.io.detections`: the :class:`Detections` container (HBB or OBB).
* :mod:`~rsvl.io.merge`: NMS / greedy NMM of per-tile detections.
* :mod:`~rsvl.io.sliced`: :func:`sliced_predict`, streaming tile inference.
* :mod:`~rsvl.io.pyramid`: :class:`ImagePyramid` for coarse-to-fine tile selection.
* :mod:`~rsvl.io.vector`: GeoJSON / GeoPackage output of detections.
"""

from rsvl.io.detections import BoxKind, Detections
from rsvl.io.display import DisplayConfig, DisplayStretch
from rsvl.io.georef import GeoRef, map_to_pixel, pixel_to_map
from rsvl.io.merge import MergeConfig, greedy_nmm, merge_detections, nms
from rsvl.io.pyramid import ImagePyramid, PyramidLevel, PyramidTile
from rsvl.io.raster import RasterSource, open_raster
from rsvl.io.sliced import Predictor, Tile, iter_tiles, sliced_predict
from rsvl.io.tiling import TileSpec, Window, count_windows, iter_windows
from rsvl.io.vector import detections_to_geojson, write_detections, write_geojson, write_gpkg

__all__ = [
    "BoxKind",
    "Detections",
    "DisplayConfig",
    "DisplayStretch",
    "GeoRef",
    "ImagePyramid",
    "MergeConfig",
    "Predictor",
    "PyramidLevel",
    "PyramidTile",
    "RasterSource",
    "Tile",
    "TileSpec",
    "Window",
    "count_windows",
    "detections_to_geojson",
    "greedy_nmm",
    "iter_tiles",
    "iter_windows",
    "map_to_pixel",
    "merge_detections",
    "nms",
    "open_raster",
    "pixel_to_map",
    "sliced_predict",
    "write_detections",
    "write_geojson",
    "write_gpkg",
]
