"""Quality figures for a trained model and its photo; no metric needs downloaded weights.

* **Fine detail, level by level.** One render (the library's render API, seed 0) at the photo's
  size (at most ``RENDER_MAX_WIDTH`` wide). Every generation level of it, read back from the store,
  is compared with the photo shrunk to that level's scale; the last level is the render at the
  photo's size. Figures: sliced Wasserstein distance (SWD) between 7x7 patches of the finest
  Laplacian band (image minus its 5x5 binomial blur) of the level and of the photo, and that
  band's RMS. References at each size, measured the same way against the same photo patches:
  a second, disjoint sample of the photo's own patches (the sampling floor), the photo blurred
  once by the 5x5 binomial (sigma 1 px: "detail missing"), and bicubic x4 of the photo shrunk 4x
  (what plain upscaling gives: the figure SR has to beat).
* **Reconstruction**: the photo at the base size, encoded (posterior mean of the patch-VAE),
  decoded and refined at every scale with zero noise; PSNR against the photo at each scale.
* **SR fidelity**: PSNR of the SR network against plain bicubic x4 on crops of the strip of the
  photo that SR training never saw (``train.sr.HOLDOUT``), input = bicubic 1/4 of the crop; at
  the photo's own size and at each smaller scale SR was trained at (where the strip is wide
  enough).
* **Diversity**: per-pixel standard deviation across base samples of N seeds, over the photo's
  own standard deviation (0: every seed gives the same image).
* **Vertical layout**: RMS distance (8-bit units) between the per-row mean colours of a base
  sample and of the photo at the base size; an upside-down photo is the "no layout" reference.
* **Pictures** (optional): side-by-side PNGs of the render, the photo and bicubic x4, whole and
  in 1:1 crops, and one per generation level.

The fine-detail statistics are in ``detail``, the pictures in ``pictures``; this module computes
the other figures, puts them all together (``evaluate``) and reads them out (``describe``).
"""

from __future__ import annotations

import math
import os
import tempfile
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .. import images
from ..planning import noise
from .detail import PATCH, SWD_PROJECTIONS, detail_figures, photo_at, render_levels, to_pixels
from .novelty import novelty as layout_novelty
from .pictures import pictures_folder, write_pictures
from ..planning.plan import Box

EVAL_CROP = 256  # side of an SR evaluation crop (high-resolution pixels)
EVAL_MAX_CROPS = 16
BORDER = 8  # high-resolution pixels at a crop's edge left out of the PSNR (zero padding there)
RENDER_MAX_WIDTH = 2048  # the fine-detail render is at the photo's size, at most this wide


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of images in [-1, 1] (peak-to-peak 2)."""
    mse = float(F.mse_loss(a, b))
    return float("inf") if mse == 0 else 10 * math.log10(4.0 / mse)


# ---- SR fidelity on the held-out strip ----------------------------------------------------------


def _holdout_psnr(net, photo: torch.Tensor, x0: int, seed: int) -> dict[str, Any]:
    """SR vs bicubic PSNR on crops of columns >= ``x0`` of ``photo`` (1, 3, H, W)."""
    from ..images import downsample4, upsample4

    _, _, h, w = photo.shape
    side = min(EVAL_CROP, ((w - x0) // 4) * 4, (h // 4) * 4)
    if side < 4 * 4 + 2 * BORDER:
        return {"crops": 0, "x0": x0, "note": f"held-out strip {w - x0} px wide: too narrow to measure"}
    n = max(1, min(EVAL_MAX_CROPS, h // side))
    ys = np.linspace(0, h - side, n).round().astype(int)
    sr_err, bic_err = [], []
    inner = (slice(None), slice(None), slice(BORDER, side - BORDER), slice(BORDER, side - BORDER))
    for i, y in enumerate(ys):
        hr = photo[:, :, y : y + side, x0 : x0 + side]  # (1, 3, side, side)
        lr = downsample4(hr)  # (1, 3, side/4, side/4)
        z = torch.from_numpy(noise.normal(seed, 1, i, 3, Box(0, lr.shape[2], 0, lr.shape[3]))).unsqueeze(0)
        sr_err.append(float(F.mse_loss(net(lr, z)[inner], hr[inner])))
        bic_err.append(float(F.mse_loss(upsample4(lr)[inner], hr[inner])))
    p_sr = 10 * math.log10(4.0 / float(np.mean(sr_err)))
    p_bic = 10 * math.log10(4.0 / float(np.mean(bic_err)))
    return {
        "crops": int(n),
        "crop": int(side),
        "x0": x0,
        "psnr_sr_db": round(p_sr, 3),
        "psnr_bicubic_db": round(p_bic, 3),
        "gain_db": round(p_sr - p_bic, 3),
    }


def sr_holdout(model, image: str, seed: int = 0) -> dict[str, Any]:
    """SR vs bicubic PSNR on the held-out strip at the photo's right edge: at the photo's own
    size (the top-level figures) and at every scale ``train.sr.sr_scales`` trained SR at."""
    from ..images import resize
    from ..train.sr import holdout_columns, load_sr_photo, sr_scales

    photo = load_sr_photo(image)  # (1, 3, H, W), as SR training saw it
    _, _, h, w = photo.shape
    x0 = int(model.meta.get("sr_holdout_x0", holdout_columns(w)))
    with torch.no_grad():
        out = _holdout_psnr(model.sr, photo, x0, seed)
        scales = []
        # training shrinks the photo's trained part (x0 columns) to each width: the strip scales alike
        for width in sr_scales(x0, model.config.base.base_width):
            f = width / x0
            if f >= 1:
                scales.append({"width": w, "height": h, **out})
                continue
            sw, sh = max(1, round(w * f)), max(1, round(h * f))
            if min(sw, sh) < 16:
                scales.append({"width": sw, "height": sh, "crops": 0, "note": "photo too small at this scale"})
                continue
            x0s = min(sw, 4 * math.ceil(x0 * f / 4))  # first column that holds only held-out pixels
            figures = _holdout_psnr(model.sr, resize(photo, sh, sw), x0s, seed)
            scales.append({"width": sw, "height": sh, **figures})
    return {**out, "scales": scales}


# ---- the base generator: reconstruction, diversity, layout --------------------------------------


def _base_photo(model, image: str) -> torch.Tensor:
    """The photo at the base width, as base training saw it (the patch base: as it keeps it):
    (1, 3, h, w) in [-1, 1]."""
    if model.config.base.kind == "patches":
        return model.base.photo.float() / 127.5 - 1
    return torch.from_numpy(images.load_rgb(image, max_width=model.config.base.base_width)).unsqueeze(0)


def reconstruction(model, image: str) -> dict[str, Any]:
    """Encode the photo's coarsest scale (posterior mean), decode, refine every scale with zero
    noise; PSNR against the photo at each scale. Reference: the photo's coarsest scale upsampled
    (bilinear) to the base size, i.e. what refinements that add nothing would give."""
    from ..models.base import resize_bilinear
    from ..images import pyramid

    if model.config.base.kind == "patches":
        return {"note": "the patch base keeps the photo itself: it has nothing to reconstruct"}
    gen = model.base
    photo = _base_photo(model, image)
    sizes = gen.scale_sizes(photo.shape[2], photo.shape[3])
    reals = pyramid(photo, sizes)  # coarsest first, as training saw them
    reals[-1] = photo
    scales = []
    with torch.no_grad():
        mu, _ = gen.encode(reals[0])
        for s, (size, x) in enumerate(zip(sizes, gen.reconstruction_path(sizes, mu))):
            scales.append({"scale": s, "size": [size[1], size[0]], "psnr_db": round(psnr(x.clamp(-1, 1), reals[s]), 3)})
        coarse_up = psnr(resize_bilinear(reals[0], sizes[-1]).clamp(-1, 1), photo)
    return {
        "size": [photo.shape[3], photo.shape[2]],
        "psnr_db": scales[-1]["psnr_db"],
        "psnr_coarsest_photo_upsampled_db": round(coarse_up, 3),
        "scales": scales,
    }


def _row_profile(x: torch.Tensor) -> torch.Tensor:
    """(1, 3, H, W) in [-1, 1] -> (H, 3) mean colour of each row, 8-bit units."""
    return (x[0].mean(dim=2).T + 1) * 127.5


def base_samples(model, image: str, seeds: int) -> tuple[dict[str, Any], list[np.ndarray]]:
    """Diversity across seeds, vertical layout and layout novelty of base samples at the training
    base size; and the samples themselves ((3, h, w) 8-bit), for the seeds sheet."""
    photo = _base_photo(model, image)
    _, _, h, w = photo.shape
    samples = torch.cat([model.base.generate(h, w, s) for s in range(seeds)])  # (N, 3, h, w)
    diversity = float(samples.std(dim=0).mean() / photo.std(dim=(2, 3)).mean()) if seeds > 1 else 0.0
    target = _row_profile(photo)
    dists = [float(torch.sqrt(((_row_profile(samples[i : i + 1]) - target) ** 2).mean())) for i in range(seeds)]
    flipped = float(torch.sqrt(((_row_profile(photo.flip(2)) - target) ** 2).mean()))
    as8 = [to_pixels(samples[i : i + 1]) for i in range(seeds)]
    figures = {
        "size": [w, h],
        "seeds": seeds,
        "diversity": round(diversity, 4),
        "novelty": layout_novelty(as8, to_pixels(photo)),
        "row_profile_rmse": round(float(np.mean(dists)), 3),
        "row_profile_rmse_worst": round(float(np.max(dists)), 3),
        "row_profile_rmse_upside_down_photo": round(flipped, 3),
    }
    return figures, as8


# ---- fine detail, level by level ----------------------------------------------------------------


def fine_detail(
    model_dir: str, image: str, seed: int = 0, max_width: int = RENDER_MAX_WIDTH, pictures: str | None = None
) -> dict[str, Any]:
    """Fine-detail figures of a render at the photo's size, level by level (see the module's
    docstring); with ``pictures``, side-by-side PNGs written there."""
    photo = torch.from_numpy(images.load_rgb(image, max_width=max_width)).unsqueeze(0)  # (1, 3, H, W)
    _, _, h, w = photo.shape
    with tempfile.TemporaryDirectory(prefix="ourgan-eval-") as tmp:
        levels = render_levels(model_dir, w, h, seed, tmp)
    rows = []
    for lv in levels:
        _, lh, lw = lv["pixels"].shape
        lv["photo"] = photo_at(photo, lh, lw)
        rows.append(
            {
                "level": lv["level"],
                "size": [lw, lh],
                "level_size": lv["level_size"],
                "final": lv["final"],
                **detail_figures(lv["pixels"].astype(np.float32), lv["photo"], seed),
            }
        )
    info = images.probe(image)
    out = {
        "seed": seed,
        "size": [w, h],
        "photo_shrunk": w < info.width,
        "photo_size": [info.width, info.height],
        "patch": PATCH,
        "projections": SWD_PROJECTIONS,
        "levels": rows,
    }
    if pictures:
        out["pictures"] = write_pictures(pictures, photo, levels, seed)
    return out


# ---- the report ---------------------------------------------------------------------------------


def evaluate(
    model_dir: str,
    image: str,
    *,
    seeds: int = 8,
    render_max_width: int = RENDER_MAX_WIDTH,
    pictures: str | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Every quality figure for ``model_dir`` against its training photo ``image``; with
    ``pictures``, side-by-side PNGs written to that folder (their paths in ``detail.pictures``)."""
    from ..errors import UserError
    from ..models import checkpoint

    if seeds < 1:
        raise UserError(f"--seeds {seeds}: must be >= 1 (>= 2 to measure diversity)")
    model = checkpoint.load(model_dir)
    info = images.probe(image)
    if pictures:
        pictures_folder(pictures)
    trained_on = model.meta.get("photo", {}).get("sha256")
    with torch.no_grad():
        out = {
            "model": model_dir,
            "model_id": model.model_id,
            "preset": model.config.preset,
            "vertical_coord": model.config.base.vertical_coord,
            "trained": bool(model.meta.get("trained")),
            "photo": {"path": image, "width": info.width, "height": info.height, "is_training_photo": trained_on == info.sha256},
            "reconstruction": reconstruction(model, image),
            "sr": sr_holdout(model, image, seed),
        }
        out["base"], drawn = base_samples(model, image, seeds)
        out["detail"] = fine_detail(model_dir, image, seed=seed, max_width=render_max_width, pictures=pictures)
    if pictures:  # the samples whose figures the report gives, each captioned with its novelty
        from .sheet import photo_sheet

        w, h = out["base"]["size"]
        novelty = out["base"]["novelty"]["per_seed"]
        panels = [
            (np.ascontiguousarray(drawn[s].astype(np.uint8).transpose(1, 2, 0)), f"seed {s}: base {w}x{h}, novelty {n:.1f}")
            for s, n in enumerate(novelty[:6])
        ]
        out["detail"]["pictures"]["seeds"] = photo_sheet(image, panels, os.path.join(pictures, "seeds.png"), photo_width=w)
    return out


def _f(v: float | None, fmt: str = ".3f") -> str:
    return "-" if v is None else format(v, fmt)


def _describe_sr(sr: dict[str, Any]) -> list[str]:
    if not sr.get("crops"):
        return [f"  SR x4: {sr.get('note')}"]
    lines = [
        f"  SR x4 on {sr['crops']} held-out crops of {sr['crop']} px: PSNR {sr['psnr_sr_db']:.2f} dB vs "
        f"bicubic {sr['psnr_bicubic_db']:.2f} dB (gain {sr['gain_db']:+.2f} dB)"
    ]
    if len(sr.get("scales", [])) > 1:
        parts = [
            f"{s['width']} px " + (f"{s['gain_db']:+.2f} dB ({s['crops']} crops)" if s.get("crops") else "strip too narrow")
            for s in sr["scales"]
        ]
        lines.append("    gain per SR training scale: " + " | ".join(parts))
    return lines


def _describe_detail(d: dict[str, Any]) -> list[str]:
    size = f"{d['size'][0]}x{d['size'][1]}"
    compared = (
        f"the photo ({d['photo_size'][0]}x{d['photo_size'][1]}) shrunk to {size}" if d["photo_shrunk"] else f"the photo ({size})"
    )
    lines = [
        f"  fine detail: a render of seed {d['seed']} at {size} against {compared}, and each generation level "
        f"against the photo shrunk to that level's size; finest Laplacian band, {d['patch']}x{d['patch']} patches",
        f"    {'level':<6}{'size':>9}{'patches':>9} | {'SWD: render':>11}{'floor':>7}{'blurred':>8}{'bicubic':>8}"
        f" | {'band RMS: render':>16}{'photo':>7}{'blurred':>8}{'bicubic':>8}",
    ]
    for lv in d["levels"]:
        s, r = lv.get("swd", {}), lv["band_rms"]
        name = f"{lv['level']}" + ("*" if lv["final"] else "")
        size = f"{lv['size'][0]}x{lv['size'][1]}"
        swd = "".join(f"{_f(s.get(k)):>{n}}" for k, n in (("render", 11), ("photo_floor", 7), ("blurred", 8), ("bicubic_x4", 8)))
        rms = "".join(f"{r[k]:>{n}.2f}" for k, n in (("render", 16), ("photo", 7), ("blurred", 8), ("bicubic_x4", 8)))
        lines.append(f"    {name:<6}{size:>9}{lv['patches']:>9} | {swd} | {rms}")
    lines.append(f"    (* the render itself, {size}. SWD: lower is closer to the photo; floor: the photo's own sampling noise)")
    pics = d.get("pictures")
    if pics:
        lines.append(f"  pictures: {pics['whole']} (sample | photo | bicubic x4)")
        lines.append(f"            {pics['crops']} (1:1 crops where the render has the most structure)")
        if pics.get("seeds"):
            lines.append(f"            {pics['seeds']} (the photo and the base image of each seed)")
        lines += [f"            {path} (level | photo at its scale)" for path in pics["levels"]]
    return lines


def describe(result: dict[str, Any]) -> list[str]:
    """Human-readable lines for ``ourgan-dist evaluate``."""
    rec, b, p = result["reconstruction"], result["base"], result["photo"]
    lines = [
        f"model {result['model']} ({result['preset']}, y channel {result['vertical_coord']}"
        + ("" if result.get("trained", True) else ", untrained")
        + f") on {p['path']} {p['width']}x{p['height']}"
        + ("" if p["is_training_photo"] else "  [NOT the photo it was trained on]"),
    ]
    if "note" in rec:
        lines.append(f"  reconstruction: {rec['note']}")
    else:
        lines += [
            f"  reconstruction at {rec['size'][0]}x{rec['size'][1]} (posterior mean, zero noise): "
            f"PSNR {rec['psnr_db']:.2f} dB; coarsest photo scale upsampled: "
            f"{rec['psnr_coarsest_photo_upsampled_db']:.2f} dB",
            "    per scale: " + " | ".join(f"{s['size'][0]}x{s['size'][1]} {s['psnr_db']:.2f}" for s in rec["scales"]),
        ]
    lines += _describe_sr(result["sr"])
    lines.append(
        f"  diversity over {b['seeds']} seeds at {b['size'][0]}x{b['size'][1]}: {b['diversity']:.3f} (per-pixel std / photo std)"
    )
    lines.append(
        f"  vertical layout: row-colour RMSE {b['row_profile_rmse']:.2f} "
        f"(worst {b['row_profile_rmse_worst']:.2f}); photo upside down: "
        f"{b['row_profile_rmse_upside_down_photo']:.2f} (8-bit units)"
    )
    nv = b["novelty"]
    lines.append(
        f"  layout novelty of the base samples at {b['size'][0]}x{b['size'][1]} (RMS left after the best "
        f"left-right stretch of the photo or its mirror, 8-bit): per seed {nv['per_seed']} (mean {nv['mean']}); "
        f"between seeds {nv['between_seeds_mean']}; references: photo quarters swapped {nv['quarters_swapped']}, "
        f"photo stretched and mirrored {nv['stretched_mirrored']}"
    )
    return lines + _describe_detail(result["detail"])
