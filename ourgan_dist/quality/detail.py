"""Fine-detail statistics: how close a render's finest detail is to the photo's, level by level.

Each generation level of one render (``render_levels``: the library's render API, read back from
the store) is compared with the photo shrunk to that level's size (``photo_at``). ``detail_figures``
gives the sliced Wasserstein distance (SWD) between ``PATCH`` x ``PATCH`` patches of the finest
Laplacian band (image minus its 5x5 binomial blur) of the level and of the photo, and that band's
RMS, with references measured the same way against the same photo patches: a second, disjoint
sample of the photo's own patches (the sampling floor), the photo blurred once by the binomial
(sigma 1 px), and bicubic x4 of the photo shrunk 4x (``bicubic_x4``).
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..planning.plan import Box

PATCH = 7
SWD_PATCHES = 8192  # patches per sample (fewer on small levels: half the positions there are)
SWD_PROJECTIONS = 128
MIN_PATCHES = 32  # a level with fewer patch positions per sample is too small to measure


def binomial_blur(img: np.ndarray) -> np.ndarray:
    """(3, H, W) float -> its 5x5 binomial blur (sigma 1 px), edges reflected."""
    k1 = np.array([1, 4, 6, 4, 1], np.float32) / 16
    t = torch.from_numpy(np.ascontiguousarray(img, np.float32)).unsqueeze(1)  # (3, 1, H, W)
    k = torch.from_numpy(np.outer(k1, k1)).view(1, 1, 5, 5)
    mode = "reflect" if min(img.shape[1:]) > 2 else "replicate"
    return F.conv2d(F.pad(t, (2, 2, 2, 2), mode=mode), k)[:, 0].numpy()


def laplacian_band(img: np.ndarray) -> np.ndarray:
    """(3, H, W) float -> the finest band: the image minus its 5x5 binomial blur."""
    img = np.asarray(img, np.float32)
    return img - binomial_blur(img)


def patch_positions(band: np.ndarray) -> int:
    _, h, w = band.shape
    return max(0, h - PATCH + 1) * max(0, w - PATCH + 1)


def patches_at(band: np.ndarray, index: np.ndarray) -> np.ndarray:
    """(n, 3 * PATCH * PATCH) patches of a (3, H, W) band at flat position indices."""
    _, h, w = band.shape
    ys, xs = np.divmod(index, w - PATCH + 1)
    idx = np.arange(PATCH)
    rows = (ys[:, None] + idx[None, :])[:, :, None]  # (n, P, 1)
    cols = (xs[:, None] + idx[None, :])[:, None, :]  # (n, 1, P)
    return band[:, rows, cols].transpose(1, 0, 2, 3).reshape(len(index), -1)


def random_patches(band: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` patches at distinct random positions (repeats only when there are fewer than n)."""
    count = patch_positions(band)
    return patches_at(band, rng.choice(count, n, replace=n > count))


def disjoint_patches(band: np.ndarray, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two samples of ``n`` patches each, at 2n distinct positions (needs 2n <= positions)."""
    index = rng.choice(patch_positions(band), 2 * n, replace=False)
    return patches_at(band, index[:n]), patches_at(band, index[n:])


def sliced_wasserstein(
    a: np.ndarray, b: np.ndarray, rng: np.random.Generator, projections: int = SWD_PROJECTIONS, dirs: np.ndarray | None = None
) -> float:
    """Mean over random unit directions of the 1-D Wasserstein-1 distance of the projections
    (``a`` and ``b`` hold the same number of rows); ``dirs`` (dims, k) fixes the directions."""
    if dirs is None:
        dirs = rng.standard_normal((a.shape[1], projections))
        dirs /= np.linalg.norm(dirs, axis=0, keepdims=True)
    pa, pb = np.sort(a @ dirs, axis=0), np.sort(b @ dirs, axis=0)
    return float(np.abs(pa - pb).mean())


def to_pixels(x: torch.Tensor) -> np.ndarray:
    """(1, 3, H, W) in [-1, 1] -> (3, H, W) float32 8-bit values, rounded as a stored image is."""
    from ..planning.pixels import to_uint8

    return to_uint8(x[0].numpy()).astype(np.float32)


def bicubic_x4(photo: torch.Tensor) -> torch.Tensor:
    """Bicubic x4 of the photo (1, 3, H, W) shrunk 4x (antialiased): same size, detail removed
    as plain upscaling would. Edges are repeated up to a multiple of 4 first, so the factor is
    exactly 4 and the result aligns with the photo pixel for pixel."""
    from ..images import downsample4, upsample4

    h, w = photo.shape[2:]
    ph, pw = -h % 4, -w % 4
    padded = F.pad(photo, (0, pw, 0, ph), mode="replicate") if ph or pw else photo
    return upsample4(downsample4(padded))[:, :, :h, :w]


def detail_figures(image: np.ndarray, photo: torch.Tensor, seed: int) -> dict[str, Any]:
    """Fine-detail figures of ``image`` (3, H, W, 8-bit values) against ``photo`` (1, 3, H, W) in
    [-1, 1] at the same size, with the photo's references measured the same way."""
    rng = np.random.default_rng([seed, image.shape[1], image.shape[2]])
    bands = {"render": laplacian_band(image)}
    photo8 = to_pixels(photo)
    bands["photo"] = laplacian_band(photo8)
    bands["blurred"] = laplacian_band(binomial_blur(photo8))
    bands["bicubic_x4"] = laplacian_band(to_pixels(bicubic_x4(photo)))
    rms = {k: round(float(np.sqrt((b**2).mean())), 3) for k, b in bands.items()}
    n = min(SWD_PATCHES, patch_positions(bands["photo"]) // 2)
    out: dict[str, Any] = {"patches": int(n), "band_rms": rms}
    if n < MIN_PATCHES:
        return {**out, "note": f"{image.shape[2]}x{image.shape[1]}: too small for {MIN_PATCHES} patches a sample"}
    ref, floor = disjoint_patches(bands["photo"], n, rng)
    dirs = rng.standard_normal((ref.shape[1], SWD_PROJECTIONS))
    dirs /= np.linalg.norm(dirs, axis=0, keepdims=True)

    def swd(sample: np.ndarray) -> float:
        return round(sliced_wasserstein(sample, ref, rng, dirs=dirs), 4)

    out["swd"] = {
        "render": swd(random_patches(bands["render"], n, rng)),
        "photo_floor": swd(floor),
        "blurred": swd(random_patches(bands["blurred"], n, rng)),
        "bicubic_x4": swd(random_patches(bands["bicubic_x4"], n, rng)),
    }
    return out


def render_levels(model_dir: str, width: int, height: int, seed: int, tmp: str) -> list[dict[str, Any]]:
    """Render at ``width`` x ``height`` through the library (base + SR levels, seed ``seed``) and
    read every generation level back: for each, its index, full size, and the part of it that
    covers the photo, (3, h, w) uint8 (the last level is the render itself, array "0")."""
    from ..store.canvas import Canvas
    from ..planning.pixels import to_uint8
    from ..engine.render import RenderRequest, prepare, render

    out = os.path.join(tmp, "eval.zarr")
    render(prepare(RenderRequest(model=model_dir, out=out, size=f"{width}x{height}", seed=seed, workers=1)))
    canvas = Canvas(out)
    canvas.require_complete("evaluating")
    plan = canvas.plan
    levels = []
    for lv in plan.levels:
        k = 4 ** (plan.final_level - lv.index)  # the photo spans size / k pixels of the level (rounded half up)
        h = min(lv.stored_height, math.floor(height / k + 0.5))
        w = min(lv.stored_width, math.floor(width / k + 0.5))
        pixels = canvas.read(canvas.level_array_name(lv.index), Box(0, h, 0, w))
        levels.append(
            {
                "level": lv.index,
                "level_size": [lv.width, lv.height],
                "final": lv.index == plan.final_level,
                "pixels": pixels if pixels.dtype == np.uint8 else to_uint8(pixels),
            }
        )
    return levels


def photo_at(photo: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The photo (1, 3, H, W) shrunk (antialiased bicubic) to a level's size; itself at its size."""
    from ..images import resize

    return photo if tuple(photo.shape[2:]) == (height, width) else resize(photo, height, width)
