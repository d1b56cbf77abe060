"""The one-shot training run: base generator, then the SR network, with one progress bar."""

from __future__ import annotations

import sys
import time
from typing import Any

import torch

from .. import images
from ..models.checkpoint import Model
from .base import train_base
from .sr import train_sr

SR_MAX_SIDE = 8192  # the SR network learns from the photo at up to this many pixels a side


def fit(model: Model, image: str, info: images.PhotoInfo, *, seed: int, device: str = "cpu",
        progress: bool = True) -> dict[str, Any]:
    """Train ``model`` in place on the photo at ``image``; returns a summary for the model's meta."""
    cfg = model.config
    torch.manual_seed(seed)  # critics' initial weights; every other draw uses seeded generators
    model.to(device)
    model.base.train()
    model.sr.train()
    base_photo = torch.from_numpy(images.load_rgb(image, max_width=cfg.base.base_width)).unsqueeze(0).to(device)
    need = max(4, cfg.base.coarsest_width // 2)
    if min(base_photo.shape[2:]) < need:
        from ..errors import UserError

        raise UserError(f"photo {image!r}: {info.width}x{info.height} is too elongated or small for the "
                        f"{cfg.preset} preset (the base would be {base_photo.shape[3]}x{base_photo.shape[2]})")
    sr_photo = torch.from_numpy(images.load_rgb(image, max_width=SR_MAX_SIDE, max_height=SR_MAX_SIDE)).unsqueeze(0)
    sr_photo = sr_photo.to(device)
    if min(sr_photo.shape[2:]) < 16:
        from ..errors import UserError

        raise UserError(f"photo {image!r}: too small to learn x4 super-resolution from")
    total = cfg.base.n_scales * cfg.train.base_iterations + cfg.train.sr_iterations
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, unit="step", file=sys.stderr, dynamic_ncols=True, mininterval=0.5)

    def step(stage: str, losses: dict) -> None:
        if bar is not None:
            bar.set_description(stage, refresh=False)
            bar.set_postfix({k: f"{v:.4f}" for k, v in losses.items()}, refresh=False)
            bar.update(1)

    t0 = time.time()
    base_hist = train_base(model.base, base_photo, cfg.train, seed, step)
    t1 = time.time()
    sr_hist = train_sr(model.sr, sr_photo, cfg.train, seed, step=step)
    t2 = time.time()
    if bar is not None:
        bar.close()
    model.eval()

    def tail(v: list[float]) -> float:
        return round(sum(v[-20:]) / max(1, len(v[-20:])), 6) if v else float("nan")

    return {
        "base_photo_size": [int(base_photo.shape[3]), int(base_photo.shape[2])],
        "sr_photo_size": [int(sr_photo.shape[3]), int(sr_photo.shape[2])],
        "base_seconds": round(t1 - t0, 2),
        "sr_seconds": round(t2 - t1, 2),
        "final_losses": {k: tail(v) for k, v in {**base_hist, **{f"sr_{k}": v for k, v in sr_hist.items()}}.items()},
        "noise_amps": [round(float(a), 6) for a in model.base.noise_amps],
        "train_config": cfg.train.__dict__,
    }
