"""Deep Zoom geometry, shared by the viewer (tiles cut on the fly) and the ``.dzi`` export.

Level ``top_level(W, H) = ceil(log2(max(W, H)))`` is the full image, each level below is half
the one above (rounded up), level 0 is 1x1. Tiles are 254 px with 1 px of overlap on inner edges
(256 px in all), the usual geometry: viewers draw overlapping tiles edge to edge without
stretching them. Pure arithmetic and text: no store, no libvips.

Tile files are named ``<level>/<col>_<row>.<suffix>``, the suffix one of ``TILE_TYPES``. The
export writes ``.jpg`` (its default: a tree of files to publish, several times smaller) or
``.png`` (``--compression png``); the viewer answers any tile under each of the three names, and
its own descriptor names ``png`` (``VIEWER_FORMAT``): it shows the render's exact pixels, down to
single pixels, where JPEG's 8x8 blocks would be the codec's and not the render's.
"""

from __future__ import annotations

import math

TILE = 254
OVERLAP = 1
TILE_TYPES = {"png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg"}  # tile suffix -> its media type
VIEWER_FORMAT = "png"


def top_level(width: int, height: int) -> int:
    """The Deep Zoom level of the full image (0 for a 1x1 image)."""
    side = max(width, height)
    return math.ceil(math.log2(side)) if side > 1 else 0


def descriptor(width: int, height: int, fmt: str, tile: int = TILE, overlap: int = OVERLAP) -> str:
    """The ``.dzi`` XML of a ``width`` x ``height`` image whose tiles are ``fmt`` files (a ``TILE_TYPES`` suffix)."""
    if fmt not in TILE_TYPES:
        raise ValueError(f"Deep Zoom tile format {fmt!r}: not one of {', '.join(TILE_TYPES)}")
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<Image xmlns="http://schemas.microsoft.com/deepzoom/2008" Format="{fmt}" Overlap="{overlap}" '
        f'TileSize="{tile}">\n  <Size Width="{width}" Height="{height}"/>\n</Image>\n'
    )
