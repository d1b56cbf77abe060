"""Detail read where the base was drawn from: the first SR level's finest band, from the photo itself.

The patch base draws every base pixel from a place of the photo (its correspondence, the *field*:
``PatchBase.generate_with_field``). The first x4 level above the base lands at about the photo's own
resolution, where the photo holds exactly the detail the base lost by being small. So on that
level the detail stage does not search its small random library (models/detail.py) but reads the
photo where the base came from:

    for every source pixel j, the candidates are the matches of j and of its 8 neighbours, each
    moved by its step to j (the coherent continuation: a neighbour's copy, carried on); the one
    whose 4x4 key in the photo shrunk to base scale is nearest to the base's own 4x4 key around
    j wins (ties: the first in a fixed order, j's own match first);
    a place that repeats the block's left (upper) neighbour's, the same place or one behind it,
    is carried on to the neighbour's place one column (row) on, unless that one is much busier
    (``carry_on``): the base's field repeats a place where it stretched the photo, and one band
    patch laid twice 4 pixels apart drew a fine regular hatch over rock;
    the 8x8 patch of the photo's detail band there (the photo at the level's size minus its x4
    bicubic round trip) is added under the blocks' windows, in their integer sums (models/blocks.py).

So rock gets the photo's own cracks and ledges at 1:1, and where the base copied a region whole,
the level gives the photo's pixels back. Where the base drew from the photo's mirror image (field
columns past the photo's width), keys and band are read mirrored alike. Levels above the first
have no field (the base's correspondence is at base scale) and keep the library.

Exact tiling: keys are integer levels and distances exact integers in float64; the field is
stored beside the base (``generation/field``) and read with the source window; a block reads
the field one source pixel and keys two past its own pixel, and the choices of the ``CARRY``
blocks before it along its row and column, within ``DETAIL_REACH``. The band is
cut from the photo kept in the model (as a JPEG of at most ``GUIDE_MAX_SIDE`` px a side) by the
same resize on every worker.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..planning.geometry import Box
from .blocks import BLOCK, KEY, add_blocks, added, block_weight, replicated, to_levels
from .sr_architecture import DETAIL_REACH

GUIDE_MAX_SIDE = 4096  # the photo is kept for guided detail at most this many pixels a side
GUIDE_QUALITY = 95  # JPEG quality of the kept photo
_BAND_ROWS = 64  # rows of blocks handled at a time
MIN_LOW = 8  # a level whose photo, shrunk x4, is smaller than this a side keeps the library
# j's own match first, then its neighbours': the fixed order that breaks ties
NEIGHBOURS = ((0, 0),) + tuple((dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx)
CARRY = DETAIL_REACH - 2  # blocks a repeated place is carried on over (a block's keys reach 2 past it)
CARRY_BUSIER = 2  # a repeat is not carried on to a place whose key is busier than this many times its own ...
CARRY_FLOOR = 10  # ... plus this many squared levels a value (a sky's repeat stays: carried on, it met rock)


def encode_photo(photo: torch.Tensor) -> torch.Tensor:
    """``photo`` (1, 3, H, W) in [-1, 1] -> a uint8 tensor holding it as a JPEG, shrunk to fit
    ``GUIDE_MAX_SIDE``."""
    import numpy as np
    import pyvips

    x = photo.detach().float().cpu()
    h, w = x.shape[2:]
    f = min(1.0, GUIDE_MAX_SIDE / max(h, w))
    if f < 1:
        x = F.interpolate(x, size=(round(h * f), round(w * f)), mode="bicubic", align_corners=False, antialias=True)
    a = torch.clamp(torch.floor((x[0].clamp(-1, 1) + 1) * 127.5 + 0.5), 0, 255).to(torch.uint8).permute(1, 2, 0)
    a = np.ascontiguousarray(a.numpy())
    im = pyvips.Image.new_from_memory(a.tobytes(), a.shape[1], a.shape[0], 3, "uchar")
    data = im.jpegsave_buffer(Q=GUIDE_QUALITY)
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).clone()


def decode_photo(data: torch.Tensor) -> torch.Tensor:
    """The kept photo back: (1, 3, H, W) float32 in [-1, 1]."""
    import numpy as np
    import pyvips

    im = pyvips.Image.new_from_buffer(bytes(data.cpu().numpy()), "")
    a = np.ndarray(buffer=im.write_to_memory(), dtype=np.uint8, shape=(im.height, im.width, im.bands))[..., :3]
    return torch.from_numpy(a.transpose(2, 0, 1).astype(np.float32) / 127.5 - 1.0).unsqueeze(0)


def photo_band(photo: torch.Tensor, out_height: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The photo resized to ``out_height`` rows (the level's scale): its x4-shrunk image as integer
    levels (3, h, w) float64, and its detail band (3, 4h, 4w) int16 in 1/127.5 steps."""
    h, w = photo.shape[2:]
    lw = max(4, round(w * out_height / h)) // 4
    lh = out_height // 4
    band = F.interpolate(photo.float(), size=(4 * lh, 4 * lw), mode="bicubic", align_corners=False, antialias=True).clamp_(-1, 1)
    low = F.interpolate(band, size=(lh, lw), mode="bicubic", align_corners=False, antialias=True).clamp_(-1, 1)
    band -= F.interpolate(low, size=(4 * lh, 4 * lw), mode="bicubic", align_corners=False)  # in place: 24 bytes a pixel at most
    band = band[0].mul_(127.5).round_().clamp_(-255, 255).to(torch.int16)
    return to_levels(low)[0].double(), band


def key_energy(low: torch.Tensor) -> torch.Tensor:
    """(lh - 3, 2 lw - 3): how busy the 4x4 key at each place of ``low`` (3, lh, lw) beside its
    mirror image is (top-left corner indexed): 16 x its squared deviation from each channel's mean,
    summed, an exact integer in float64."""
    d = torch.cat([low, low.flip(-1)], -1)[None]
    s1 = F.avg_pool2d(d, KEY, 1) * KEY * KEY
    s2 = F.avg_pool2d(d * d, KEY, 1) * KEY * KEY
    return (KEY * KEY * s2 - s1 * s1)[0].sum(0)


def carry_on(by: torch.Tensor, bx: torch.Tensor, energy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The blocks' chosen places (rows, cols, ``CARRY`` more than the blocks each way up and left)
    with repeats carried on: a block whose place repeats its left neighbour's (the same or a
    place behind it, at most a row off) takes the neighbour's place one column on, and likewise
    down the columns, unless that place's key is busier (``energy``: ``key_energy``) than
    ``CARRY_BUSIER`` times the repeat's plus ``CARRY_FLOOR``. A repeat lays one band patch twice,
    4 output pixels apart: a field that stretched the photo (a place drawn for two base pixels)
    gave a fine regular hatch over rock. Each block carries on over the ``CARRY`` blocks before it
    only (a run is followed as far as that: tiles stay exact) -> (rows - CARRY, cols - CARRY)."""
    lh, w2 = energy.shape[0] + KEY - 1, energy.shape[1] + KEY - 1  # the key places: 1 .. lh - 3, 1 .. w2 - 3
    lw = w2 // 2
    floor = CARRY_FLOOR * 3 * KEY**4

    def run(by, bx, along):  # carry on along dim ``along`` (1: rows, 0: columns)
        n = by.shape[along] - CARRY
        vy, vx = by.narrow(along, 0, n), bx.narrow(along, 0, n)
        for k in range(CARRY - 1, -1, -1):
            oy, ox = by.narrow(along, CARRY - k, n), bx.narrow(along, CARRY - k, n)
            if along == 1:
                rep = (ox <= vx) & ((oy - vy).abs() <= 1)
                ny, nx = vy, vx + 1
                room = (nx <= w2 - KEY + 1) & ((nx < lw - 2) | (nx > lw))  # no key across the mirror's seam
            else:
                rep = (oy <= vy) & ((ox - vx).abs() <= 1)
                ny, nx = vy + 1, vx
                room = ny <= lh - KEY + 1
            ny, nx = torch.where(room, ny, oy), torch.where(room, nx, ox)
            take = rep & room & (energy[ny - 1, nx - 1] <= CARRY_BUSIER * energy[oy - 1, ox - 1] + floor)
            vy, vx = torch.where(take, ny, oy), torch.where(take, nx, ox)
        return vy, vx

    by, bx = run(by, bx, 1)
    return run(by, bx, 0)


def _mirrored(cols: torch.Tensor, w: int) -> torch.Tensor:
    """Columns of an image ``w`` wide beside its mirror image (0 .. 2w - 1) -> the image's own."""
    return torch.where(cols >= w, 2 * w - 1 - cols, cols)


@torch.no_grad()
def apply_guided(
    y: torch.Tensor,
    x: torch.Tensor,
    field: torch.Tensor,
    *,
    low: torch.Tensor,
    band: torch.Tensor,
    window: Box,
    core: Box,
    level_size: tuple[int, int],
    source_size: tuple[int, int],
    strength: float,
    energy: torch.Tensor | None = None,
) -> torch.Tensor:
    """``y`` (1, 3, 4 core.h, 4 core.w), the first SR level's output for the source ``core``, plus
    the photo's detail read at the base's correspondence. ``x`` (the base) and ``field`` (2, h, w:
    photo rows and columns in the photo of ``source_size``) hold ``window`` of the base level of
    ``level_size``; ``low`` and ``band`` come from ``photo_band`` at this level's height, ``energy``
    (computed if not given) is ``key_energy(low)``. A column of the field at or beyond the photo's
    width is its mirror image's (``patches.doubled``)."""
    H, W = level_size
    sh, sw = source_size
    lh, lw = low.shape[1:]
    blocks = Box(core.y0 - 1, core.y1 + 1, core.x0 - 1, core.x1 + 1)  # the blocks that touch the core
    chosen = Box(blocks.y0 - CARRY, blocks.y1, blocks.x0 - CARRY, blocks.x1)  # and those a run is carried on from
    need = Box(chosen.y0 - 1, chosen.y1 + 2, chosen.x0 - 1, chosen.x1 + 2)  # their keys' source pixels
    fbox = Box(chosen.y0 - 1, chosen.y1 + 1, chosen.x0 - 1, chosen.x1 + 1)  # their neighbours' matches
    levels = to_levels(replicated(x.float().cpu(), window, need, H, W))[0].double()  # (3, need.h, need.w)
    f = replicated(field.cpu().unsqueeze(0).double(), window, fbox, H, W)[0].double()  # (2, fbox.h, fbox.w)
    ry, rx = lh / sh, lw / sw
    offs = torch.arange(KEY)
    by = torch.empty(chosen.height, chosen.width, dtype=torch.long)
    bx = torch.empty_like(by)
    for r0 in range(chosen.y0, chosen.y1, _BAND_ROWS):
        r1 = min(r0 + _BAND_ROWS, chosen.y1)
        jy = torch.arange(r0, r1)[:, None].expand(r1 - r0, chosen.width)
        jx = torch.arange(chosen.x0, chosen.x1)[None, :].expand(r1 - r0, chosen.width)
        # the base's key around j: rows j-1 .. j+2, as a (3, 4, 4, rows, cols) stack
        qy = (jy - need.y0 - 1)[None, None] + offs[:, None, None, None]
        qx = (jx - need.x0 - 1)[None, None] + offs[None, :, None, None]
        q = levels[:, qy, qx]
        rows = slice(r0 - chosen.y0, r1 - chosen.y0)
        best = None
        for dy, dx in NEIGHBOURS:
            my = f[0, jy + dy - fbox.y0, jx + dx - fbox.x0]
            mx = f[1, jy + dy - fbox.y0, jx + dx - fbox.x0]
            cy = (torch.round((my + 0.5) * ry - 0.5) - dy).long().clamp(1, lh - KEY + 1)
            cx = (torch.round((mx + 0.5) * rx - 0.5) - dx).long().clamp(1, 2 * lw - KEY + 1)
            kx = _mirrored((cx - 1)[None, None] + offs[None, :, None, None], lw)
            k = low[:, (cy - 1)[None, None] + offs[:, None, None, None], kx]
            d = ((q - k) ** 2).sum((0, 1, 2))
            if best is None:
                best, by[rows], bx[rows] = d, cy, cx
            else:
                better = d < best
                best = torch.where(better, d, best)
                by[rows], bx[rows] = torch.where(better, cy, by[rows]), torch.where(better, cx, bx[rows])
    by, bx = carry_on(by, bx, key_energy(low) if energy is None else energy)  # (blocks.h, blocks.w)
    acc = torch.zeros(3, 4 * core.height, 4 * core.width, dtype=torch.int32)
    weight = block_weight()
    side = torch.arange(BLOCK)
    for r0 in range(0, blocks.height, _BAND_ROWS):
        cy, cx = by[r0 : r0 + _BAND_ROWS], bx[r0 : r0 + _BAND_ROWS]
        # the 8x8 band patch at output [4c - 2, 4c + 6) of the chosen place
        py = (4 * cy - 2)[:, :, None, None] + side[:, None]
        px = (4 * cx - 2)[:, :, None, None] + side[None, :]
        p = band[:, py, _mirrored(px, 4 * lw)].to(torch.int32).permute(1, 2, 0, 3, 4) * weight  # (rows, cols, 3, 8, 8)
        add_blocks(acc, p, blocks.y0 + r0, blocks.x0, core)
    return added(y, acc, strength)
