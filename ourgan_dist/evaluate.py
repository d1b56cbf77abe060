"""Quality figures for a trained model and its photo; no metric needs downloaded weights.

* **SR fidelity**: PSNR of the SR network against plain bicubic x4 on crops of the strip of the
  photo that SR training never saw (``train.sr.HOLDOUT``), input = bicubic 1/4 of the crop.
* **Diversity**: per-pixel standard deviation across base samples of N seeds, over the photo's
  own standard deviation (0: every seed gives the same image).
* **Vertical layout**: RMS distance (8-bit units) between the per-row mean colours of a base
  sample and of the photo at the base size; an upside-down photo is the "no layout" reference.
* **Fine detail**: sliced Wasserstein distance between 7x7 patches of the finest Laplacian band
  of a full render (made with the library's render API) and of the photo at the same size; a
  bicubic-blurred copy of the photo (down x4, up x4) is the reference for "detail missing", and
  a second sample of the photo's own patches gives the sampling floor.
"""

from __future__ import annotations

import math
import os
import tempfile
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from . import images, noise
from .plan import Box

EVAL_CROP = 256  # side of an SR evaluation crop (high-resolution pixels)
EVAL_MAX_CROPS = 16
BORDER = 8  # high-resolution pixels at a crop's edge left out of the PSNR (zero padding there)
RENDER_MAX_WIDTH = 2048  # the fine-detail render is at the photo's size, at most this wide
PATCH = 7
SWD_PATCHES = 8192
SWD_PROJECTIONS = 128


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of images in [-1, 1] (peak-to-peak 2)."""
    mse = float(F.mse_loss(a, b))
    return float("inf") if mse == 0 else 10 * math.log10(4.0 / mse)


def sr_holdout(model, image: str, seed: int = 0) -> dict[str, Any]:
    """SR vs bicubic PSNR on crops of the held-out strip at the photo's right edge."""
    from .train.sr import downsample4, holdout_columns, load_sr_photo, upsample4

    photo = load_sr_photo(image)  # (1, 3, H, W), as SR training saw it
    _, _, h, w = photo.shape
    x0 = int(model.meta.get("sr_holdout_x0", holdout_columns(w)))
    side = min(EVAL_CROP, ((w - x0) // 4) * 4, (h // 4) * 4)
    if side < 4 * 4 + 2 * BORDER:
        return {"crops": 0, "note": "held-out strip too small to measure"}
    n = max(1, min(EVAL_MAX_CROPS, h // side))
    ys = np.linspace(0, h - side, n).round().astype(int)
    sr_err, bic_err = [], []
    net = model.sr
    with torch.no_grad():
        for i, y in enumerate(ys):
            hr = photo[:, :, y:y + side, x0:x0 + side]  # (1, 3, side, side)
            lr = downsample4(hr)
            z = torch.from_numpy(noise.normal(seed, 1, i, 3, Box(0, lr.shape[2], 0, lr.shape[3]))).unsqueeze(0)
            inner = (slice(None), slice(None), slice(BORDER, side - BORDER), slice(BORDER, side - BORDER))
            sr_err.append(float(F.mse_loss(net(lr, z)[inner], hr[inner])))
            bic_err.append(float(F.mse_loss(upsample4(lr)[inner], hr[inner])))
    p_sr = 10 * math.log10(4.0 / float(np.mean(sr_err)))
    p_bic = 10 * math.log10(4.0 / float(np.mean(bic_err)))
    return {"crops": int(n), "crop": int(side), "x0": x0, "psnr_sr_db": round(p_sr, 3),
            "psnr_bicubic_db": round(p_bic, 3), "gain_db": round(p_sr - p_bic, 3)}


def _row_profile(x: torch.Tensor) -> torch.Tensor:
    """(1, 3, H, W) in [-1, 1] -> (H, 3) mean colour of each row, 8-bit units."""
    return (x[0].mean(dim=2).T + 1) * 127.5


def base_samples(model, image: str, seeds: int) -> dict[str, Any]:
    """Diversity across seeds and vertical layout of base samples at the training base size."""
    photo = torch.from_numpy(images.load_rgb(image, max_width=model.config.base.base_width)).unsqueeze(0)
    _, _, h, w = photo.shape
    samples = torch.cat([model.base.generate(h, w, s) for s in range(seeds)])  # (N, 3, h, w)
    diversity = float(samples.std(dim=0).mean() / photo.std(dim=(2, 3)).mean()) if seeds > 1 else 0.0
    target = _row_profile(photo)
    dists = [float(torch.sqrt(((_row_profile(samples[i:i + 1]) - target) ** 2).mean())) for i in range(seeds)]
    flipped = float(torch.sqrt(((_row_profile(photo.flip(2)) - target) ** 2).mean()))
    return {"size": [w, h], "seeds": seeds, "diversity": round(diversity, 4),
            "row_profile_rmse": round(float(np.mean(dists)), 3),
            "row_profile_rmse_worst": round(float(np.max(dists)), 3),
            "row_profile_rmse_upside_down_photo": round(flipped, 3)}


def laplacian_band(img: np.ndarray) -> np.ndarray:
    """(3, H, W) float -> the finest band: the image minus its 5x5 binomial blur (reflect edges)."""
    k1 = np.array([1, 4, 6, 4, 1], np.float32) / 16
    t = torch.from_numpy(np.ascontiguousarray(img, np.float32)).unsqueeze(1)  # (3, 1, H, W)
    k = torch.from_numpy(np.outer(k1, k1)).view(1, 1, 5, 5)
    blur = F.conv2d(F.pad(t, (2, 2, 2, 2), mode="reflect"), k)
    return (t - blur)[:, 0].numpy()


def random_patches(band: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """(n, 3 * PATCH * PATCH) patches at random positions of a (3, H, W) band."""
    _, h, w = band.shape
    ys = rng.integers(0, h - PATCH + 1, n)
    xs = rng.integers(0, w - PATCH + 1, n)
    idx = np.arange(PATCH)
    rows = (ys[:, None] + idx[None, :])[:, :, None]  # (n, P, 1)
    cols = (xs[:, None] + idx[None, :])[:, None, :]  # (n, 1, P)
    return band[:, rows, cols].transpose(1, 0, 2, 3).reshape(n, -1)


def sliced_wasserstein(a: np.ndarray, b: np.ndarray, rng: np.random.Generator,
                       projections: int = SWD_PROJECTIONS) -> float:
    """Mean over random unit directions of the 1-D Wasserstein-1 distance of the projections."""
    dirs = rng.standard_normal((a.shape[1], projections))
    dirs /= np.linalg.norm(dirs, axis=0, keepdims=True)
    pa, pb = np.sort(a @ dirs, axis=0), np.sort(b @ dirs, axis=0)
    return float(np.abs(pa - pb).mean())


def render_for_detail(model_dir: str, width: int, height: int, seed: int, tmp: str) -> np.ndarray:
    """A full render through the library (base + SR levels), read back: (3, H, W) uint8."""
    from . import open_result
    from .render import RenderRequest, prepare, render

    out = os.path.join(tmp, "eval.zarr")
    render(prepare(RenderRequest(model=model_dir, out=out, size=f"{width}x{height}", seed=seed, workers=1)))
    return np.asarray(open_result(out).compute())


def fine_detail(model_dir: str, image: str, seed: int = 0, max_width: int = RENDER_MAX_WIDTH) -> dict[str, Any]:
    """SWD of finest-band patches: render vs photo, against a blurred photo and the sampling floor."""
    from .train.sr import downsample4, upsample4

    photo = images.load_rgb(image, max_width=max_width)  # (3, H, W) in [-1, 1]
    _, h, w = photo.shape
    with tempfile.TemporaryDirectory(prefix="ourgan-eval-") as tmp:
        rendered = render_for_detail(model_dir, w, h, seed, tmp).astype(np.float32)
    photo8 = (photo + 1) * 127.5
    t = torch.from_numpy(photo).unsqueeze(0)
    hh, ww = (h // 4) * 4, (w // 4) * 4
    blurred = ((upsample4(downsample4(t[:, :, :hh, :ww]))[0].numpy() + 1) * 127.5)
    rng = np.random.default_rng(seed)
    ref = random_patches(laplacian_band(photo8), SWD_PATCHES, rng)
    floor = random_patches(laplacian_band(photo8), SWD_PATCHES, rng)
    rend = random_patches(laplacian_band(rendered), SWD_PATCHES, rng)
    blur = random_patches(laplacian_band(blurred), SWD_PATCHES, rng)
    return {"size": [w, h], "patch": PATCH, "patches": SWD_PATCHES,
            "swd_render": round(sliced_wasserstein(rend, ref, rng), 4),
            "swd_blurred_photo": round(sliced_wasserstein(blur, ref, rng), 4),
            "swd_photo_floor": round(sliced_wasserstein(floor, ref, rng), 4),
            "band_rms_photo": round(float(np.sqrt((ref ** 2).mean())), 3),
            "band_rms_render": round(float(np.sqrt((rend ** 2).mean())), 3),
            "band_rms_blurred": round(float(np.sqrt((blur ** 2).mean())), 3)}


def evaluate(model_dir: str, image: str, *, seeds: int = 8, render_max_width: int = RENDER_MAX_WIDTH) -> dict[str, Any]:
    """Every quality figure for ``model_dir`` against its training photo ``image``."""
    from .errors import UserError
    from .models import checkpoint

    if seeds < 1:
        raise UserError(f"--seeds {seeds}: must be >= 1 (>= 2 to measure diversity)")
    model = checkpoint.load(model_dir)
    info = images.probe(image)
    trained_on = model.meta.get("photo", {}).get("sha256")
    with torch.no_grad():
        out = {
            "model": model_dir, "model_id": model.model_id, "preset": model.config.preset,
            "vertical_coord": model.config.base.vertical_coord,
            "photo": {"path": image, "width": info.width, "height": info.height,
                      "is_training_photo": trained_on == info.sha256},
            "sr": sr_holdout(model, image),
            "base": base_samples(model, image, seeds),
        }
    out["detail"] = fine_detail(model_dir, image, max_width=render_max_width)
    return out


def describe(result: dict[str, Any]) -> list[str]:
    """Human-readable lines for ``ourgan-dist evaluate``."""
    sr, b, d = result["sr"], result["base"], result["detail"]
    lines = [f"model {result['model']} ({result['preset']}, y channel {result['vertical_coord']}) on "
             f"{result['photo']['path']} {result['photo']['width']}x{result['photo']['height']}"
             + ("" if result["photo"]["is_training_photo"] else "  [NOT the photo it was trained on]")]
    if sr.get("crops"):
        lines.append(f"  SR x4 on {sr['crops']} held-out crops of {sr['crop']} px: PSNR {sr['psnr_sr_db']:.2f} dB vs "
                     f"bicubic {sr['psnr_bicubic_db']:.2f} dB (gain {sr['gain_db']:+.2f} dB)")
    else:
        lines.append(f"  SR x4: {sr.get('note')}")
    lines.append(f"  diversity over {b['seeds']} seeds at {b['size'][0]}x{b['size'][1]}: {b['diversity']:.3f} "
                 "(per-pixel std / photo std)")
    lines.append(f"  vertical layout: row-colour RMSE {b['row_profile_rmse']:.2f} (worst {b['row_profile_rmse_worst']:.2f})"
                 f"; photo upside down: {b['row_profile_rmse_upside_down_photo']:.2f} (8-bit units)")
    lines.append(f"  fine detail (SWD, finest Laplacian band, {d['size'][0]}x{d['size'][1]}): render {d['swd_render']:.3f}, "
                 f"blurred photo {d['swd_blurred_photo']:.3f}, photo's own floor {d['swd_photo_floor']:.3f}")
    return lines
