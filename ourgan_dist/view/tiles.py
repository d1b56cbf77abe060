"""Deep Zoom tiles cut on the fly from a store's OME-Zarr pyramid.

Deep Zoom level ``M = ceil(log2(max(W, H)))`` is the full image and level ``l`` is
``ceil(W / 2**(M - l))`` wide: exactly the shapes of the store's arrays ``0, 1, 2, ...`` (each half
the one before, rounded up). So a tile of level ``l`` is a plain read of array ``M - l``. The
levels below the store's coarsest array (a few, each under one chunk) are 2x2 means of it, made
once and kept. Tile size and overlap are those of ``deepzoom.py`` (shared with the .dzi export).
A tile key outside a level's grid is ``None`` (a 404).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from ..store.canvas import Canvas
from ..outputs.deepzoom import OVERLAP, TILE, TILE_TYPES, VIEWER_FORMAT, descriptor, top_level
from ..planning.pixels import downsample2
from ..planning.geometry import Box


@dataclass(frozen=True)
class DeepZoomKey:
    """One Deep Zoom tile: level (0 = 1x1 pixel), column, row. (Not ``plan.TileKey``, a render task.)"""

    level: int
    col: int
    row: int


class DeepZoom:
    """The Deep Zoom view of a render store: its descriptor and its tiles."""

    def __init__(self, canvas: Canvas, tile: int = TILE, overlap: int = OVERLAP):
        self.canvas = canvas
        self.tile = tile
        self.overlap = overlap
        self.shapes = canvas.plan.pyramid_shapes  # (h, w) of arrays 0, 1, ...
        self.height, self.width = self.shapes[0]
        self.max_level = top_level(self.width, self.height)
        self._small: dict[int, np.ndarray] = {}  # scale -> (3, h, w), for scales past the store's arrays
        self._lock = threading.Lock()

    def level_shape(self, level: int) -> tuple[int, int]:
        """(height, width) of a Deep Zoom level."""
        s = 2 ** (self.max_level - level)
        return -(-self.height // s), -(-self.width // s)

    def descriptor(self, fmt: str = VIEWER_FORMAT) -> str:
        """The .dzi XML for this image (png tiles: the viewer shows the exact pixels; deepzoom.py)."""
        return descriptor(self.width, self.height, fmt, self.tile, self.overlap)

    def box(self, key: DeepZoomKey) -> Box | None:
        """The pixels of a tile in its level (its core plus the overlap, cut at the level's edges),
        or None when the key is off the grid."""
        if not 0 <= key.level <= self.max_level:
            return None
        h, w = self.level_shape(key.level)
        y0, x0 = key.row * self.tile, key.col * self.tile
        if key.row < 0 or key.col < 0 or y0 >= h or x0 >= w:
            return None
        return Box(y0, y0 + self.tile, x0, x0 + self.tile).expand(self.overlap).clip(h, w)

    def pixels(self, key: DeepZoomKey) -> np.ndarray | None:
        """(h, w, 3) uint8 pixels of a tile, or None when the key is off the grid."""
        box = self.box(key)
        if box is None:
            return None
        scale = self.max_level - key.level
        if scale < len(self.shapes):
            px = self.canvas.read(str(scale), box)
        else:
            px = self._coarse(scale)[:, box.y0 : box.y1, box.x0 : box.x1]
        return np.ascontiguousarray(px.transpose(1, 2, 0))

    def _coarse(self, scale: int) -> np.ndarray:
        """Levels coarser than the store's last array: 2x2 means of it, computed once."""
        with self._lock:
            if scale not in self._small:
                last = len(self.shapes) - 1
                img = self.canvas.read(str(last), Box(0, self.shapes[last][0], 0, self.shapes[last][1]))
                for s in range(last + 1, scale + 1):
                    img = self._small.get(s) if s in self._small else downsample2(img, -(-img.shape[1] // 2), -(-img.shape[2] // 2))
                    self._small[s] = img
            return self._small[scale]

    def encode(self, key: DeepZoomKey, fmt: str = VIEWER_FORMAT) -> bytes | None:
        """A tile as PNG (lossless) or JPEG bytes for its suffix ``fmt`` (png, jpg or jpeg), or None
        when the key is off the grid."""
        if fmt not in TILE_TYPES:
            raise ValueError(f"Deep Zoom tile format {fmt!r}: not one of {', '.join(TILE_TYPES)}")
        px = self.pixels(key)
        if px is None:
            return None
        import pyvips

        image = pyvips.Image.new_from_memory(px.data, px.shape[1], px.shape[0], 3, "uchar")
        if fmt == "png":
            return image.pngsave_buffer(compression=1)
        return image.jpegsave_buffer(Q=90)
