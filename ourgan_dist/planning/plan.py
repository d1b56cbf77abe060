"""Pure render planning: levels, tiles, halos, chunk grid, dependencies.

No torch, Ray, Zarr or I/O here: a ``RenderPlan`` is arithmetic on integers, cheap to build,
hashable, and property-tested. Its parts live beside it: the vocabulary (boxes, task keys) in
``geometry.py``, the viewing pyramid's blocks in ``viewing_pyramid.py``, and what a plan will
cost (memory, time, store size, the automatic tile) in ``projection.py``; the SR network's
receptive radius and its x4 factor come from its torch-free description
(``models/sr_architecture.py``). Coordinates are
half-open boxes ``[y0, y1) x [x0, x1)`` in the pixels of one level; level ``l + 1`` is exactly 4x level ``l`` in both directions.

Level 0 is the base image made whole by the base generator. Levels 1..L are x4 super-resolution
levels rendered tile by tile; the last is cropped to the requested size (the level above the
request is rendered and cut), and it is stored as the OME-Zarr array ``0``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Iterator

from ..config import BaseConfig, PatchBaseConfig, SRConfig
from ..errors import PlanError
from ..models.sr_architecture import SCALE, sr_architecture  # SCALE: every SR level is exactly 4x the one below
from .geometry import Box, Level, PyramidKey, TaskKey, TileKey, covering
from .viewing_pyramid import ViewingPyramid

__all__ = [
    "Box",
    "Level",
    "PyramidKey",
    "RenderPlan",
    "TaskKey",
    "TileKey",
    "choose_levels",
    "chunk_for_tile",
    "min_halo",
    "parse_size",
    "shard_side",
    "source_box",
    "DEFAULT_CHUNK",
    "MAX_SIDE",
    "SCALE",
]

MAX_SIDE = 1 << 28  # global pixel coordinates must fit the noise counter (see noise.py)
DEFAULT_CHUNK = 256


def source_box(box: Box) -> Box:
    """The pixels of the level below whose x4 output covers ``box``."""
    return Box(box.y0 // SCALE, -(-box.y1 // SCALE), box.x0 // SCALE, -(-box.x1 // SCALE))


def min_halo(sr: SRConfig) -> int:
    """The narrowest halo that ``sr`` can render with (inexactly below its receptive field): the
    x4 skip's reach. The bicubic skip (models/window.py, ``skip_window``) reads source pixels either
    side of every kept one from the tile's own window; a narrower halo leaves it without them at
    interior tile edges. Every other layer crops to what the window holds, so needs no halo."""
    arch = sr_architecture(sr)
    return min(arch.skip_reach, arch.receptive_radius)


def choose_levels(width: int, height: int, base_width: int, min_side: int = 1, base_height: int = 0) -> tuple[int, int, int]:
    """Number of SR levels and base size for a target; the base is ceil(target / 4**L).

    With ``base_height`` (a base drawn from a photo kept that tall): the fewest levels whose base
    is no taller than the photo, so the base holds the photo's objects as large as it can without
    enlarging the photo. Else the base width lands nearest (in log scale) to the width the base
    generator was trained at. Either way with fewer levels where the base's short side would fall
    below ``min_side``."""
    if base_height:
        best = next(n for n in range(0, 16) if math.ceil(height / SCALE**n) <= base_height)
    else:
        best = min(range(0, 16), key=lambda n: (abs(math.log(math.ceil(width / SCALE**n) / base_width)), n))
    while best > 0 and min(math.ceil(height / SCALE**best), math.ceil(width / SCALE**best)) < min_side:
        best -= 1
    return best, math.ceil(height / SCALE**best), math.ceil(width / SCALE**best)


MIN_AUTO_CHUNK = 64  # smaller chunks multiply the store's objects; only a tile that small gets them


def chunk_for_tile(tile: int, default: int = DEFAULT_CHUNK) -> int:
    """The chunk side when ``--chunk`` is not given: ``default`` if the tile is a multiple of it
    (or untiled), else the largest multiple of 4 that divides the tile and is at most ``default``,
    so that every tile still writes whole chunks. Refused if that would be under
    ``MIN_AUTO_CHUNK`` px for a tile larger than that."""
    if tile == 0 or tile % default == 0:
        return default
    if tile % 4:
        raise PlanError(
            f"--tile {tile}: must be a multiple of 4 (chunks are whole multiples of 4 px); "
            f"e.g. --tile {max(4, round(tile / 4) * 4)}"
        )
    chunk = max(c for c in range(4, min(default, tile) + 1, 4) if tile % c == 0)
    if chunk < min(MIN_AUTO_CHUNK, tile):
        nearest = max(default, round(tile / default) * default)
        raise PlanError(
            f"--tile {tile}: the largest chunk that divides it is {chunk} px, too small for a store; use a "
            f"multiple of {default} (e.g. --tile {nearest}) or pass --chunk"
        )
    return chunk


def shard_side(extent: int, chunk: int, block: int) -> int:
    """Shard side along one axis of ``extent`` px stored in ``chunk`` px chunks, for tasks that write
    ``block`` px blocks (a multiple of ``chunk``, or at least ``extent``): one task's block, or the
    whole axis rounded up to whole chunks where a single block spans it (a shard is always a whole
    number of chunks, as Zarr requires)."""
    return min(block, -(-extent // chunk) * chunk)


def parse_size(text: str) -> tuple[int, int]:
    """'4096x2730' -> (4096, 2730); one clear error otherwise."""
    parts = text.lower().replace(" ", "").split("x")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise PlanError(f"--size {text!r}: expected WIDTHxHEIGHT in pixels, e.g. 4096x2730")
    w, h = int(parts[0]), int(parts[1])
    if w < 1 or h < 1 or w > MAX_SIDE or h > MAX_SIDE:
        raise PlanError(f"--size {text!r}: each side must be in [1, {MAX_SIDE}]")
    return w, h


@dataclass(frozen=True)
class RenderPlan(ViewingPyramid):
    """Everything about a render that is arithmetic: levels, tiles, halos, chunks, dependencies.

    ``tile`` is the side of an SR tile in pixels of the level it writes (0: each level is one
    tile, the untiled reference). ``halo`` is read around a tile's source core, in source-level
    pixels; it is exact when >= ``receptive_radius``.
    """

    width: int
    height: int
    n_sr: int  # number of x4 levels above the base
    base_height: int
    base_width: int
    tile: int
    halo: int
    receptive_radius: int
    chunk: int = DEFAULT_CHUNK

    def __post_init__(self) -> None:
        if self.width < 1 or self.height < 1:
            raise PlanError(f"size {self.width}x{self.height}: both sides must be >= 1")
        if self.tile < 0:
            raise PlanError(f"--tile {self.tile}: must be >= 0 (0 renders each level untiled)")
        if self.chunk < 4 or self.chunk % 4:
            raise PlanError(f"--chunk {self.chunk}: must be a multiple of 4, >= 4")
        if self.tile and (self.tile % self.chunk):
            raise PlanError(
                f"--tile {self.tile}: must be a multiple of the chunk size {self.chunk} so that every tile "
                f"writes whole chunks (e.g. --tile {max(1, round(self.tile / self.chunk)) * self.chunk}, or leave --chunk "
                "out to fit the chunk to the tile)"
            )
        if self.halo < 0:
            raise PlanError(f"--halo {self.halo}: must be >= 0 or 'exact'")
        last = self.levels[-1]
        if last.height < self.height or last.width < self.width:
            raise PlanError("internal: the last level does not cover the requested size")

    # ---- levels -------------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        width: int,
        height: int,
        *,
        base: BaseConfig | PatchBaseConfig,
        sr: SRConfig,
        tile: int,
        halo: int | str = "exact",
        chunk: int = DEFAULT_CHUNK,
        min_base_side: int | None = None,
    ) -> "RenderPlan":
        need = min_base_side or base.min_side
        n_sr, bh, bw = choose_levels(width, height, base.base_width, need, getattr(base, "base_height", 0))
        if min(bh, bw) < need:
            raise PlanError(
                f"--size {width}x{height}: too small: the base image would be {bw}x{bh}, under {need} px on a "
                f"side; ask for at least {need} px on each side"
            )
        r = sr_architecture(sr).receptive_radius
        if halo == "exact":
            h = r
        else:
            try:
                h = int(halo)
            except (TypeError, ValueError):
                raise PlanError(f"--halo {halo!r}: expected 'exact' or a number of pixels >= 0") from None
        return cls(
            width=width, height=height, n_sr=n_sr, base_height=bh, base_width=bw, tile=tile, halo=h, receptive_radius=r, chunk=chunk
        )

    @cached_property
    def levels(self) -> tuple[Level, ...]:
        out = []
        for i in range(self.n_sr + 1):
            h, w = self.base_height * SCALE**i, self.base_width * SCALE**i
            last = i == self.n_sr
            out.append(Level(i, h, w, self.height if last else h, self.width if last else w))
        return tuple(out)

    def check_halo(self, sr: SRConfig) -> None:
        """Refuse a halo the network cannot run with (below ``min_halo``): up front, with the
        reason, instead of a tile failing mid-render. Any halo from there up renders, exactly
        from the receptive field up."""
        floor = min_halo(sr)
        if self.halo < floor:
            raise PlanError(
                f"--halo {self.halo}: below {floor} px, the reach of the SR network's bicubic skip, a tile cannot be "
                f"rendered; use --halo {floor} or more ('exact' is {self.receptive_radius})"
            )

    @property
    def exact(self) -> bool:
        return self.halo >= self.receptive_radius

    @property
    def final_level(self) -> int:
        return self.n_sr

    # ---- tiles --------------------------------------------------------------------------
    def tile_grid(self, level: int) -> tuple[int, int]:
        """(rows, cols) of tiles of a level."""
        lv = self.levels[level]
        if level == 0 or self.tile == 0:
            return 1, 1
        return math.ceil(lv.stored_height / self.tile), math.ceil(lv.stored_width / self.tile)

    def tiles(self, level: int) -> list[TileKey]:
        rows, cols = self.tile_grid(level)
        return [TileKey(level, ty, tx) for ty in range(rows) for tx in range(cols)]

    def all_tiles(self) -> Iterator[TileKey]:
        for lv in self.levels:
            yield from self.tiles(lv.index)

    @property
    def n_tiles(self) -> int:
        return sum(r * c for r, c in (self.tile_grid(lv.index) for lv in self.levels))

    def core(self, key: TileKey) -> Box:
        """Pixels a tile writes, in its level's (stored) coordinates."""
        lv = self.levels[key.level]
        rows, cols = self.tile_grid(key.level)
        if not (0 <= key.ty < rows and 0 <= key.tx < cols):
            raise PlanError(f"tile {key} is outside the {rows}x{cols} tile grid of level {key.level}")
        if rows == 1 and cols == 1:
            return Box(0, lv.stored_height, 0, lv.stored_width)
        t = self.tile
        return Box(key.ty * t, min((key.ty + 1) * t, lv.stored_height), key.tx * t, min((key.tx + 1) * t, lv.stored_width))

    def source_core(self, key: TileKey) -> Box:
        """The source-level pixels whose x4 output covers the tile's core."""
        if key.level == 0:
            raise PlanError("the base level has no source")
        return source_box(self.core(key))

    def source_window(self, key: TileKey) -> Box:
        """Source core expanded by the halo and clipped at the source level's borders."""
        src = self.levels[key.level - 1]
        return self.source_core(key).expand(self.halo).clip(src.height, src.width)

    def dependencies(self, key: TileKey) -> list[TileKey]:
        """Tiles of the level below whose cores intersect this tile's source window: the window's
        bounds divided by the tile side, never a scan of the level."""
        if key.level == 0:
            return []
        below = key.level - 1
        return [TileKey(below, ty, tx) for ty, tx in covering(self.source_window(key), self.tile_grid(below), self.tile)]

    def task_dependencies(self, key: TaskKey) -> list[TaskKey]:
        """The tasks whose output this task reads: tiles of the level below for a tile, final-level
        tiles or finer pyramid blocks for a pyramid block."""
        return self.pyramid_dependencies(key) if isinstance(key, PyramidKey) else self.dependencies(key)

    def owner(self, key: TaskKey, workers: int) -> int:
        """A stable spatial owner in [0, workers): bands of equal area in row-major order. A tile's
        position is the fraction of the level's area that lies before its centre when the tile
        rows are read top to bottom, left to right, so band edges may cut a tile row and every
        worker gets about 1/workers of the pixels even when tile rows do not divide evenly.
        The fraction is the same at every level, so a worker's next-level tiles read mostly
        what it wrote itself."""
        if workers <= 1:
            return 0
        if isinstance(key, PyramidKey):
            (h, w), box = self.pyramid_shapes[key.scale], self.pyramid_block(key)
        else:
            lv = self.levels[key.level]
            h, w, box = lv.stored_height, lv.stored_width, self.core(key)
        before = box.y0 * w + box.height * (box.x0 + box.x1) / 2  # area before the centre, row-major
        return min(workers - 1, int(before / max(1, h * w) * workers))

    # ---- chunk grid ---------------------------------------------------------------------
    def chunk_shape(self, height: int, width: int) -> tuple[int, int]:
        return min(self.chunk, height), min(self.chunk, width)

    def level_shards(self, level: int) -> tuple[int, int] | None:
        """(height, width) of the Zarr shards of a generation level's array: one shard per tile, so
        a tile task writes one storage object. None for ``--tile 0`` (each level one task, the
        untiled reference): plain chunks, which that task writes all of. The base level (one task
        for the whole level) may span several shards, all its own."""
        if self.tile == 0:
            return None
        lv = self.levels[level]
        ch, cw = self.chunk_shape(lv.stored_height, lv.stored_width)
        return shard_side(lv.stored_height, ch, self.tile), shard_side(lv.stored_width, cw, self.tile)

    def pyramid_shards(self, scale: int) -> tuple[int, int]:
        """(height, width) of the shards of viewing-pyramid array ``scale`` >= 1: one shard per
        pyramid task's block."""
        h, w = self.pyramid_shapes[scale]
        ch, cw = self.chunk_shape(h, w)
        b = self.pyramid_block_side
        return shard_side(h, ch, b), shard_side(w, cw, b)

    def array_shards(self, scale: int) -> tuple[int, int] | None:
        """Shards of OME-Zarr array ``scale``: 0 is the final level, the rest the viewing pyramid."""
        return self.level_shards(self.final_level) if scale == 0 else self.pyramid_shards(scale)

    # ---- halo cost ----------------------------------------------------------------------
    def halo_overhead(self) -> float:
        """Source pixels the SR levels compute (tile windows) over the pixels they keep (cores):
        1.0 untiled; the cost of tiling with this halo. Pure arithmetic over the tile grid."""
        window = core = 0
        for lv in self.levels[1:]:
            rows, cols = self.tile_grid(lv.index)
            for ty in range(rows):  # per row and column: window extents are separable
                k = TileKey(lv.index, ty, 0)
                wy, cy = self.source_window(k).height, self.source_core(k).height
                for tx in range(cols):
                    k = TileKey(lv.index, 0, tx)
                    window += wy * self.source_window(k).width
                    core += cy * self.source_core(k).width
        return window / core if core else 1.0

    # ---- description --------------------------------------------------------------------
    def describe(self) -> list[str]:
        lines = [
            f"size {self.width}x{self.height}: base {self.base_width}x{self.base_height} + "
            f"{self.n_sr} x4 level(s); tile {self.tile or 'untiled'}, chunk {self.chunk}"
        ]
        halo_note = "exact" if self.exact else f"INEXACT: below the receptive field {self.receptive_radius}"
        lines.append(
            f"halo {self.halo} px (receptive field {self.receptive_radius} px): {halo_note}; "
            f"halo overhead {100 * (self.halo_overhead() - 1):.0f}% extra source pixels read"
        )
        for lv in self.levels:
            rows, cols = self.tile_grid(lv.index)
            what = "base generator" if lv.index == 0 else "x4 super-resolution"
            crop = (
                ""
                if (lv.stored_height, lv.stored_width) == (lv.height, lv.width)
                else f" (rendered {lv.width}x{lv.height}, cropped)"
            )
            lines.append(
                f"  level {lv.index}: {lv.stored_width}x{lv.stored_height}{crop}, {rows * cols} tile(s) [{rows}x{cols}], {what}"
            )
        lines.append(
            f"viewing pyramid: {len(self.pyramid_shapes)} array(s) " + ", ".join(f"{w}x{h}" for h, w in self.pyramid_shapes)
        )
        return lines

    def __repr__(self) -> str:
        return (
            f"RenderPlan({self.width}x{self.height}, levels={self.n_sr + 1}, tile={self.tile}, "
            f"halo={self.halo}/{self.receptive_radius}, chunk={self.chunk}, tiles={self.n_tiles})"
        )
