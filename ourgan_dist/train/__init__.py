"""One-shot training: the base generator on the photo's scale pyramid, the x4 SR network on
random crops of the full-resolution photo. ``train_model`` is the entry point the CLI uses."""

from __future__ import annotations

import dataclasses
import time

from .. import images
from ..config import ModelConfig, preset as get_preset
from ..errors import UserError


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {device}: no CUDA GPU is visible here; use --device cpu or auto")
    return device


def resolve_config(preset: str, iterations: int | None, vertical_coord: bool,
                   schedule: tuple[int, int] | None = None) -> ModelConfig:
    """The preset, with ``iterations`` (steps per base scale and SR steps alike) or an explicit
    ``schedule`` (base steps per scale, SR steps) overriding its training length."""
    cfg = get_preset(preset)
    base = dataclasses.replace(cfg.base, vertical_coord=vertical_coord)
    train = cfg.train
    if iterations is not None:
        train = dataclasses.replace(train, base_iterations=iterations, sr_iterations=iterations)
    if schedule is not None:
        train = dataclasses.replace(train, base_iterations=schedule[0], sr_iterations=schedule[1])
    return dataclasses.replace(cfg, base=base, train=train)


def train_model(image: str, out: str, *, preset: str = "cpu", iterations: int | None = None, seed: int = 0,
                device: str = "auto", vertical_coord: bool = True, progress: bool = True,
                schedule: tuple[int, int] | None = None) -> str:
    """Train (or, with ``iterations=0``, just initialise) a model from one photo; returns its id."""
    from ..models import checkpoint

    info = images.probe(image)
    cfg = resolve_config(preset, iterations, vertical_coord, schedule)
    dev = resolve_device(device)
    model = checkpoint.build(cfg, seed)
    t0 = time.time()
    summary = {}
    if cfg.train.base_iterations or cfg.train.sr_iterations:
        from .loop import fit

        summary = fit(model, image, info, seed=seed, device=dev, progress=progress)
    meta = {
        **summary,
        "photo": {"name": image.rsplit("/", 1)[-1], "width": info.width, "height": info.height,
                  "sha256": info.sha256},
        "seed": seed,
        "trained": bool(cfg.train.base_iterations or cfg.train.sr_iterations),
        "train_seconds": round(time.time() - t0, 2),
        "device": dev,
    }
    model.base.cpu()
    model.sr.cpu()
    return checkpoint.save(model, out, meta)
