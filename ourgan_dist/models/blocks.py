"""The detail stages' blocks: the 8x8 patches of a photo's finest band that an SR level's output
gets, one per source pixel, shared by the detail library (models/detail.py) and the guided detail
(models/guided_detail.py).

A block is laid centred on its source pixel's 4x4 output footprint, so neighbouring blocks
overlap by half; each is weighted by a separable sin^2 window in integer 64ths whose copy 4
pixels on completes it to exactly 64, so the four blocks over an output pixel sum exactly in
int32, in any order (exact tiling). Keys are read as integer levels 0..255.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..planning.geometry import Box

BLOCK = 8  # output pixels a side of a detail patch
KEY = 4  # source pixels a side of a key
# The window over a block's 8 pixels: sin^2 at the pixel centres, in 64ths, so that it and its copy
# 4 pixels on sum to exactly 64 (2 + 62, 20 + 44): the overlapping blocks' sum is exact in integers.
WEIGHTS = (2, 20, 44, 62, 62, 44, 20, 2)
WEIGHT_SUM = 64


def to_levels(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] pixels -> integer levels 0..255 as float32 (round half up, like ``pixels.to_uint8``)."""
    return torch.floor((x.float().clamp(-1, 1) + 1) * 127.5 + 0.5)


def block_weight(device: torch.device | str = "cpu") -> torch.Tensor:
    """(8, 8) int32: the 2D window, the product of ``WEIGHTS`` with itself (x ``WEIGHT_SUM``^2)."""
    win = torch.tensor(WEIGHTS, dtype=torch.int32, device=device)
    return win[:, None] * win[None, :]


def added(y: torch.Tensor, acc: torch.Tensor, strength: float) -> torch.Tensor:
    """``y`` plus the laid blocks ``acc`` (3, h, w) int32, band steps of 1/127.5 under the window,
    times ``strength``."""
    scale = strength / (127.5 * WEIGHT_SUM**2)
    return (y.float() + acc.float()[None].to(y.device) * scale).to(y.dtype)


def add_blocks(acc: torch.Tensor, p: torch.Tensor, j0: int, i0: int, core: Box) -> None:
    """Add weighted blocks ``p`` (rows, cols, 3, 8, 8), source pixels from (j0, i0), into ``acc``,
    the output of ``core``. Blocks of one parity tile the plane without overlap: each parity is
    laid out as one image. Integer sums: the order does not matter."""
    oy0, ox0 = 4 * core.y0, 4 * core.x0
    for py in (0, 1):
        for px in (0, 1):
            jy, jx = j0 + (py - j0) % 2, i0 + (px - i0) % 2  # the first block of this parity
            g = p[jy - j0 :: 2, jx - i0 :: 2]
            gy, gx = g.shape[0], g.shape[1]
            if gy == 0 or gx == 0:
                continue
            img = g.permute(2, 0, 3, 1, 4).reshape(3, gy * BLOCK, gx * BLOCK)
            top, left = 4 * jy - 2, 4 * jx - 2  # output coordinates of the image's corner
            y0, x0 = max(oy0, top), max(ox0, left)
            y1, x1 = min(oy0 + acc.shape[1], top + gy * BLOCK), min(ox0 + acc.shape[2], left + gx * BLOCK)
            if y1 > y0 and x1 > x0:
                acc[:, y0 - oy0 : y1 - oy0, x0 - ox0 : x1 - ox0] += img[:, y0 - top : y1 - top, x0 - left : x1 - left]


def replicated(x: torch.Tensor, window: Box, box: Box, H: int, W: int) -> torch.Tensor:
    """``box`` of a level (H, W) from ``x`` holding ``window``, the level's edge pixels repeated
    past its borders (and the window's past its own, where a halo below ``DETAIL_REACH`` leaves it short:
    then tiles are inexact, as any halo below the receptive field makes them)."""
    c = box.clip(H, W)
    inner = Box(max(c.y0, window.y0), min(c.y1, window.y1), max(c.x0, window.x0), min(c.x1, window.x1))
    ys, xs = inner.relative_to(window)
    part = x[:, :, ys, xs]
    pads = (inner.x0 - box.x0, box.x1 - inner.x1, inner.y0 - box.y0, box.y1 - inner.y1)
    return F.pad(part.float(), pads, mode="replicate") if any(pads) else part.float()
