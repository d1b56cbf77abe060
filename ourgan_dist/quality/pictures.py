"""The pictures ``evaluate --pictures`` writes: side-by-side PNGs a person looks at.

The render at the photo's size beside the photo and bicubic x4, whole and in 1:1 crops where the
render has the most structure (``crop_boxes``), and each generation level beside the photo at its
scale; every panel labelled, written with pyvips (``write_pictures``). The seed sheet beside them is
``sheet``'s.
"""

from __future__ import annotations

import math
import os
import re
from typing import Any

import numpy as np
import torch

from ..planning.plan import Box
from .detail import bicubic_x4, to_pixels
from .sheet import is_own_png, write_png

VIEW_MAX_WIDTH = 1024  # a picture's panel is shrunk to at most this wide ...
VIEW_MIN_WIDTH = 256  # ... and a smaller level is enlarged (nearest, integer factor) to at least this
CROP = 256  # side of a 1:1 crop in the pictures
CROP_CENTRES = (0, 1, 2)  # three 1:1 crops, where the render has the most structure
GAP = 8  # white pixels between panels
LABEL_HEIGHT = 20  # a white strip above each panel with its caption


def _vips(pixels: np.ndarray):
    """(3, H, W) uint8 -> a pyvips sRGB image."""
    import pyvips

    hwc = np.ascontiguousarray(pixels.transpose(1, 2, 0))
    return pyvips.Image.new_from_memory(hwc.tobytes(), hwc.shape[1], hwc.shape[0], 3, "uchar").copy(interpretation="srgb")


def for_display(im, max_width: int = VIEW_MAX_WIDTH, min_width: int = VIEW_MIN_WIDTH):
    """A panel for a whole view: shrunk (Lanczos) to at most ``max_width`` wide, or enlarged by an
    integer factor (nearest, pixels stay visible) to at least ``min_width`` wide."""
    if im.width > max_width:
        return im.resize(max_width / im.width, kernel="lanczos3")
    if im.width < min_width:
        k = math.ceil(min_width / im.width)
        return im.zoom(k, k)
    return im


def _labelled(im, caption: str):
    """``im`` below a white strip of ``LABEL_HEIGHT`` px with ``caption`` in black (when libvips
    can draw text; the strip is there either way, so a picture's size does not depend on it)."""
    import pyvips

    strip = pyvips.Image.black(im.width, LABEL_HEIGHT) + 255
    try:
        text = pyvips.Image.text(caption, dpi=72)
        text = text.crop(0, 0, min(text.width, im.width - 4), min(text.height, LABEL_HEIGHT - 4))
        strip = strip.insert(255 - text, 2, (LABEL_HEIGHT - text.height) // 2)
    except pyvips.Error:
        pass
    strip = strip.cast("uchar").bandjoin([strip, strip]).copy(interpretation="srgb")
    return strip.join(im, "vertical")


def _row_png(path: str, panels: list, across: int) -> str:
    import pyvips

    return write_png(pyvips.Image.arrayjoin(panels, across=across, shim=GAP, background=[255, 255, 255]), path)


def crop_boxes(pixels: np.ndarray, side: int = CROP, count: int = len(CROP_CENTRES)) -> list[Box]:
    """``count`` 1:1 crops of (3, h, w) ``pixels`` where the image has the most structure (edge
    energy: the summed gradient magnitude inside the crop), greedily, no two overlapping: they
    land on objects, a horizon or edges, not on plain sky, where faults would hide."""
    _, height, width = pixels.shape
    side = min(side, height, width)
    g = pixels.astype(np.float64).mean(axis=0)
    energy = np.zeros((height, width))
    energy[:, 1:] += np.abs(np.diff(g, axis=1))
    energy[1:, :] += np.abs(np.diff(g, axis=0))
    step = max(1, side // 4)
    ii = np.pad(energy.cumsum(0).cumsum(1), ((1, 0), (1, 0)))  # integral image
    ys, xs = np.arange(0, height - side + 1, step), np.arange(0, width - side + 1, step)
    score = (
        ii[ys[:, None] + side, xs[None] + side]
        - ii[ys[:, None], xs[None] + side]
        - ii[ys[:, None] + side, xs[None]]
        + ii[ys[:, None], xs[None]]
    )
    order = [(int(ys[f // len(xs)]), int(xs[f % len(xs)])) for f in np.argsort(score, axis=None, kind="stable")[::-1]]
    boxes: list[Box] = []
    for apart in (True, False):  # crops apart first; on a small image, overlapping ones (never the same)
        for y0, x0 in order:
            if len(boxes) == count:
                return boxes
            box = Box(y0, y0 + side, x0, x0 + side)
            overlaps = any(y0 < b.y1 and b.y0 < y0 + side and x0 < b.x1 and b.x0 < x0 + side for b in boxes)
            if box not in boxes and not (apart and overlaps):
                boxes.append(box)
    return boxes


OWN_PICTURE = re.compile(r"^(photo_size|photo_size_crops|seeds|level_\d+)\.png$")  # what evaluate writes, and replaces


def pictures_folder(folder: str) -> str:
    """Create ``folder`` for the pictures (checked before any work, so a bad path fails fast). A
    folder holding anything but an earlier evaluation's pictures (``OWN_PICTURE`` names, written by
    ``write_png``) is refused: their names are fixed, and a user's ``seeds.png`` there would be replaced."""
    from ..errors import UserError, some_names

    if os.path.exists(folder) and not os.path.isdir(folder):
        raise UserError(f"--pictures {folder!r}: exists and is not a folder; give a folder (it is created if missing)")
    names = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
    other = [n for n in names if not (OWN_PICTURE.match(n) and is_own_png(os.path.join(folder, n)))]
    if other:
        raise UserError(
            f"--pictures {folder!r} holds files that evaluate did not write ({some_names(other)}); its pictures replace "
            "files of fixed names, so give a new or empty folder"
        )
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        raise UserError(f"--pictures {folder!r}: cannot create the folder ({e.strerror})") from None
    if not os.access(folder, os.W_OK):
        raise UserError(f"--pictures {folder!r}: not writable; give a folder you can write to")
    return folder


def write_pictures(folder: str, photo: torch.Tensor, levels: list[dict[str, Any]], seed: int) -> dict[str, Any]:
    """PNGs in ``folder``: the render at the photo's size beside the photo and bicubic x4 (whole,
    and 1:1 crops), and every generation level beside the photo at its scale."""
    pictures_folder(folder)
    final = levels[-1]
    _, h, w = final["pixels"].shape
    sample, real = final["pixels"], to_pixels(photo).astype(np.uint8)
    bicubic = to_pixels(bicubic_x4(photo)).astype(np.uint8)
    views = [(sample, f"sample (seed {seed})"), (real, "photo"), (bicubic, "bicubic x4 of photo/4")]
    whole = _row_png(os.path.join(folder, "photo_size.png"), [_labelled(for_display(_vips(p)), c) for p, c in views], 3)
    crops = []
    for b in crop_boxes(sample):
        for p, c in views:
            where = f"x {b.x0}-{b.x1}, y {b.y0}-{b.y1}"
            crops.append(_labelled(_vips(p[:, b.y0 : b.y1, b.x0 : b.x1]), f"{c.split(' (')[0]}, {where}"))
    crops_path = _row_png(os.path.join(folder, "photo_size_crops.png"), crops, 3)
    per_level = []
    for lv in levels:
        px = lv["pixels"]
        size = f"{px.shape[2]}x{px.shape[1]}"
        panels = [
            _labelled(for_display(_vips(px)), f"level {lv['level']} ({size})"),
            _labelled(for_display(_vips(to_pixels(lv["photo"]).astype(np.uint8))), f"photo at {size}"),
        ]
        per_level.append(_row_png(os.path.join(folder, f"level_{lv['level']}.png"), panels, 2))
    return {"whole": whole, "crops": crops_path, "levels": per_level}
