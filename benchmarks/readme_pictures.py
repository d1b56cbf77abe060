"""The README's pictures, from any finished render store and the photo its model learned from.

    python benchmarks/readme_pictures.py STORE PHOTO [--out docs/images] [--crop X,Y ...] [--crop-size 320]

Writes into --out:
  training-photo.jpg       the photo, downsized to --preview-width
  example-render.jpg       the render, downsized to --preview-width (from the store's pyramid:
                           the smallest OME-Zarr array at least that wide, then resized)
  crop-sr-vs-bicubic.jpg   for each --crop (one row each), a --crop-size square of the render at
                           full resolution (left) beside the same square of a plain bicubic
                           upscale of the render's base image (right): what the super-resolution
                           levels add over interpolation
Only the pixels it shows are read from the store.
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np
import pyvips

from ourgan_dist.store.canvas import GENERATION, Canvas
from ourgan_dist.planning.pixels import to_uint8
from ourgan_dist.planning.geometry import Box

GAP = 8  # px between the two crops


def vips(hwc: np.ndarray) -> pyvips.Image:
    return pyvips.Image.new_from_array(np.ascontiguousarray(hwc))


def preview(canvas: Canvas, width: int) -> pyvips.Image:
    """The render at ``width`` px wide, from the coarsest pyramid array that is at least as wide."""
    shapes = canvas.plan.pyramid_shapes
    k = max((k for k, (_, w) in enumerate(shapes) if w >= width), default=0)
    h, w = shapes[k]
    img = vips(canvas.read(str(k), Box(0, h, 0, w)).transpose(1, 2, 0))
    return img.resize(width / w, kernel="lanczos3") if w > width else img


def crops(canvas: Canvas, cx: int, cy: int, size: int) -> tuple[pyvips.Image, pyvips.Image]:
    """(the render's crop, the same crop of a bicubic upscale of the base image), size x size."""
    plan = canvas.plan
    if plan.n_sr < 1:
        raise SystemExit("this render has no super-resolution level (its base is the whole image): nothing to compare")
    h, w = plan.height, plan.width
    size = min(size, h, w)
    x0, y0 = min(max(0, cx - size // 2), w - size), min(max(0, cy - size // 2), h - size)
    ours = canvas.read("0", Box(y0, y0 + size, x0, x0 + size)).transpose(1, 2, 0)
    scale = 4**plan.n_sr  # the base image is 1 / scale of the (uncropped) last level
    base = plan.levels[0]
    m = 3  # base pixels of margin for the cubic kernel
    bx0, by0 = max(0, x0 // scale - m), max(0, y0 // scale - m)
    bx1, by1 = min(base.width, (x0 + size) // scale + m + 1), min(base.height, (y0 + size) // scale + m + 1)
    window = canvas.read(f"{GENERATION}/0", Box(by0, by1, bx0, bx1))  # float16 in [-1, 1]
    up = vips(to_uint8(window).transpose(1, 2, 0)).resize(scale, kernel="cubic")
    plain = up.crop(x0 - bx0 * scale, y0 - by0 * scale, size, size)
    return vips(ours), plain


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("store")
    ap.add_argument("photo")
    ap.add_argument("--out", default="docs/images")
    ap.add_argument("--preview-width", type=int, default=1024)
    ap.add_argument("--crop-size", type=int, default=320)
    ap.add_argument(
        "--crop",
        action="append",
        default=None,
        help="centre X,Y of a crop in full-resolution pixels; repeat for more rows (default: centre)",
    )
    ap.add_argument("--storage-options", default=None, help="JSON fsspec options for STORE")
    args = ap.parse_args()
    canvas = Canvas(args.store, json.loads(args.storage_options) if args.storage_options else None)
    canvas.require_complete("the README pictures")
    os.makedirs(args.out, exist_ok=True)
    photo = pyvips.Image.thumbnail(args.photo, args.preview_width)
    photo.write_to_file(os.path.join(args.out, "training-photo.jpg"), Q=88)
    preview(canvas, args.preview_width).write_to_file(os.path.join(args.out, "example-render.jpg"), Q=88)
    centres = (
        [tuple(int(v) for v in c.split(",")) for c in args.crop]
        if args.crop
        else [(canvas.plan.width // 2, canvas.plan.height // 2)]
    )
    pairs = [crops(canvas, cx, cy, args.crop_size) for cx, cy in centres]
    side = pairs[0][0].width
    sheet = pyvips.Image.black(2 * side + GAP, len(pairs) * (side + GAP) - GAP, bands=3).new_from_image([255, 255, 255])
    for i, (ours, plain) in enumerate(pairs):
        sheet = sheet.insert(ours, 0, i * (side + GAP)).insert(plain, side + GAP, i * (side + GAP))
    sheet.cast("uchar").write_to_file(os.path.join(args.out, "crop-sr-vs-bicubic.jpg"), Q=92)
    info = canvas.info
    print(
        f"wrote {args.out}/training-photo.jpg, example-render.jpg, crop-sr-vs-bicubic.jpg from render "
        f"{canvas.plan.width}x{canvas.plan.height} (model {info.get('model_id')}, seed {info.get('seed')}, "
        f"{canvas.plan.n_sr} SR level(s)); crop centres {centres}, {side} px"
    )


if __name__ == "__main__":
    main()
