"""The vocabulary of a render's geometry: pixel boxes, task keys, levels, and which cells of a grid
a box touches. Plain values, hashable and ordered, with no knowledge of any network or store."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Union


@dataclass(frozen=True, order=True)
class Box:
    """Half-open pixel box [y0, y1) x [x0, x1) in one level's coordinates."""

    y0: int
    y1: int
    x0: int
    x1: int

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def area(self) -> int:
        return max(0, self.height) * max(0, self.width)

    def expand(self, r: int) -> "Box":
        return Box(self.y0 - r, self.y1 + r, self.x0 - r, self.x1 + r)

    def clip(self, height: int, width: int) -> "Box":
        return Box(max(0, self.y0), min(height, self.y1), max(0, self.x0), min(width, self.x1))

    def intersects(self, other: "Box") -> bool:
        return self.y0 < other.y1 and other.y0 < self.y1 and self.x0 < other.x1 and other.x0 < self.x1

    def contains(self, other: "Box") -> bool:
        return self.y0 <= other.y0 and other.y1 <= self.y1 and self.x0 <= other.x0 and other.x1 <= self.x1

    def relative_to(self, outer: "Box") -> tuple[slice, slice]:
        """Slices that cut this box out of an array holding ``outer``."""
        return slice(self.y0 - outer.y0, self.y1 - outer.y0), slice(self.x0 - outer.x0, self.x1 - outer.x0)

    def __str__(self) -> str:
        return f"[{self.y0}:{self.y1}, {self.x0}:{self.x1}]"


@dataclass(frozen=True, order=True)
class TileKey:
    """One task of a generation level: level 0 is the base (one tile), levels >= 1 are SR tiles."""

    level: int
    ty: int
    tx: int

    def __str__(self) -> str:
        return f"L{self.level}/{self.ty}.{self.tx}"


@dataclass(frozen=True, order=True)
class PyramidKey:
    """One task of the viewing pyramid: writes a block of OME-Zarr array ``scale`` (>= 1)."""

    scale: int
    ty: int
    tx: int

    def __str__(self) -> str:
        return f"P{self.scale}/{self.ty}.{self.tx}"


TaskKey = Union[TileKey, PyramidKey]


@dataclass(frozen=True)
class Level:
    """One generation level: its full size, and the size it is stored at (cropped if last)."""

    index: int
    height: int  # full height: base height * 4**index
    width: int
    stored_height: int  # the last level is cropped to the requested size
    stored_width: int


def covering(box: Box, grid: tuple[int, int], side: int) -> Iterator[tuple[int, int]]:
    """(row, col) of the cells of a ``grid`` of ``side``-pixel cells (a 1x1 grid: one cell covering
    everything) that intersect a non-empty ``box``."""
    rows, cols = grid
    if rows == cols == 1:
        yield 0, 0
        return
    for ty in range(max(0, box.y0 // side), min(rows, -(-box.y1 // side))):
        for tx in range(max(0, box.x0 // side), min(cols, -(-box.x1 // side))):
            yield ty, tx
