"""A synthetic render store: the real store layout, pixels from a cheap pattern instead of a model.

Exports and the viewer only read the OME-Zarr arrays, so their tests and memory benchmarks can
use stores of any size (a gigapixel included) without rendering one. The plan is a base-only
plan (no SR levels) of the requested size; array 0 is filled chunk by chunk from ``pattern`` and
each pyramid array is the 2x2 mean of the one before, block by block, exactly as a render builds
it. Every task is recorded and the store is marked complete through the same calls a render uses.
Test scaffolding (not part of the package); benchmarks/export_memory.py borrows it.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from ourgan_dist.store.canvas import Canvas, plan_to_info
from ourgan_dist.planning.geometry import Box
from ourgan_dist.planning.plan import RenderPlan, TileKey
from ourgan_dist.engine.tile import write_pyramid_block

Pattern = Callable[[Box, int, int], np.ndarray]  # (box, height, width) -> uint8 (3, box.height, box.width)


def gradient_pattern(box: Box, height: int, width: int) -> np.ndarray:
    """Red grows to the right, green downwards, blue is an xor texture: cheap, and every pixel
    tells where it is."""
    y = np.arange(box.y0, box.y1, dtype=np.int64)[:, None]
    x = np.arange(box.x0, box.x1, dtype=np.int64)[None, :]
    out = np.empty((3, box.height, box.width), np.uint8)
    out[0] = x * 255 // max(1, width - 1)
    out[1] = y * 255 // max(1, height - 1)
    out[2] = (x ^ y) & 255
    return out


def noise_pattern(seed: int = 0, block: int = 4) -> Pattern:
    """Random colours in ``block`` x ``block`` squares over a gradient: any misplaced pixel shows.
    Each square's colour is a hash of its position, so any box can be made on its own."""

    def pattern(box: Box, height: int, width: int) -> np.ndarray:
        y = np.arange(box.y0, box.y1, dtype=np.uint64)[:, None] // block
        x = np.arange(box.x0, box.x1, dtype=np.uint64)[None, :] // block
        h = (y * np.uint64(0x9E3779B1) + x * np.uint64(0x85EBCA77) + np.uint64(seed)) * np.uint64(0xC2B2AE3D)
        h ^= h >> np.uint64(29)
        base = gradient_pattern(box, height, width).astype(np.uint16)
        noise = np.stack([(h >> np.uint64(8 * c)) & np.uint64(255) for c in range(3)]).astype(np.uint16)
        return ((base + noise) // 2).astype(np.uint8)

    return pattern


def synthetic_plan(width: int, height: int, chunk: int = 256) -> RenderPlan:
    """A base-only plan of the given size (one generation level, which is array 0)."""
    return RenderPlan(
        width=width, height=height, n_sr=0, base_height=height, base_width=width, tile=0, halo=0, receptive_radius=0, chunk=chunk
    )


def write_synthetic_store(
    url: str,
    width: int,
    height: int,
    *,
    chunk: int = 256,
    pattern: Pattern = gradient_pattern,
    storage_options: dict | None = None,
    complete: bool = True,
    fill: bool = True,
    seed: int = 0,
) -> Canvas:
    """Create a store of ``width`` x ``height`` at ``url`` and (``fill``) write its pixels.

    ``complete=False`` leaves the store unfinished (no completion records), as an interrupted
    render would; ``fill=False`` writes metadata only (every pixel reads as 0)."""
    plan = synthetic_plan(width, height, chunk)
    info = {
        "name": f"synthetic {width}x{height}",
        "model": "(synthetic pattern)",
        "model_id": "synthetic",
        "model_preset": "none",
        "seed": seed,
        "size": [width, height],
        "plan": plan_to_info(plan),
        "exact": True,
        "precision": "fp32",
    }
    canvas = Canvas.create(url, plan, info, storage_options)
    if fill:
        for y in range(0, height, chunk):
            for x in range(0, width, chunk):
                box = Box(y, min(y + chunk, height), x, min(x + chunk, width))
                canvas.write("0", box, pattern(box, height, width))
        for scale in range(1, len(plan.pyramid_shapes)):
            for key in plan.pyramid_tasks(scale):
                write_pyramid_block(canvas, key)
    if complete:
        canvas.mark_done(TileKey(0, 0, 0))
        for key in plan.all_pyramid_tasks():
            canvas.mark_done(key)
        canvas.mark_complete()
    return canvas
