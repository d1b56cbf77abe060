"""The viewing pyramid's arithmetic: OME-Zarr arrays 1, 2, ... below the full-resolution image,
each half the one before, written in blocks of whole chunks by tasks that average 2x2 pixels of
the array one scale finer (scale 1 reads the final level's tiles).

``ViewingPyramid`` is a part of ``RenderPlan`` (plan.py): it uses the plan's size, chunk, tile,
``final_level`` and ``tile_grid``.
"""

from __future__ import annotations

import math
from functools import cached_property
from typing import Iterator

from .geometry import Box, PyramidKey, TaskKey, TileKey, covering


class ViewingPyramid:
    """Blocks and dependencies of the viewing pyramid's tasks (a part of ``RenderPlan``)."""

    height: int
    width: int
    tile: int
    chunk: int

    @cached_property
    def pyramid_shapes(self) -> tuple[tuple[int, int], ...]:
        """(height, width) of OME-Zarr arrays 0, 1, ...: each half the one before (rounded up),
        until the whole image fits in one chunk."""
        shapes = [(self.height, self.width)]
        while max(shapes[-1]) > self.chunk:
            h, w = shapes[-1]
            shapes.append((-(-h // 2), -(-w // 2)))
        return tuple(shapes)

    @property
    def pyramid_block_side(self) -> int:
        """Side of the block one pyramid task writes: a whole number of chunks."""
        return max(self.chunk, (self.tile // self.chunk) * self.chunk if self.tile else 4 * self.chunk)

    def pyramid_grid(self, scale: int) -> tuple[int, int]:
        h, w = self.pyramid_shapes[scale]
        b = self.pyramid_block_side
        return math.ceil(h / b), math.ceil(w / b)

    def pyramid_tasks(self, scale: int) -> list[PyramidKey]:
        rows, cols = self.pyramid_grid(scale)
        return [PyramidKey(scale, ty, tx) for ty in range(rows) for tx in range(cols)]

    def pyramid_block(self, key: PyramidKey) -> Box:
        h, w = self.pyramid_shapes[key.scale]
        b = self.pyramid_block_side
        return Box(key.ty * b, min((key.ty + 1) * b, h), key.tx * b, min((key.tx + 1) * b, w))

    def pyramid_source(self, key: PyramidKey) -> Box:
        """The block of the array one scale finer that this block averages (2x2 -> 1)."""
        b = self.pyramid_block(key)
        h, w = self.pyramid_shapes[key.scale - 1]
        return Box(2 * b.y0, 2 * b.y1, 2 * b.x0, 2 * b.x1).clip(h, w)

    def pyramid_dependencies(self, key: PyramidKey) -> list[TaskKey]:
        """Final-level tiles (scale 1) or blocks of the scale below whose pixels this block averages,
        by dividing the source box by the tile or block side."""
        src = self.pyramid_source(key)
        if key.scale == 1:
            final = self.final_level
            return [TileKey(final, ty, tx) for ty, tx in covering(src, self.tile_grid(final), self.tile)]
        below = key.scale - 1
        return [PyramidKey(below, ty, tx) for ty, tx in covering(src, self.pyramid_grid(below), self.pyramid_block_side)]

    def all_pyramid_tasks(self) -> Iterator[PyramidKey]:
        for s in range(1, len(self.pyramid_shapes)):
            yield from self.pyramid_tasks(s)
