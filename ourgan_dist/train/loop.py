"""The one-shot training run: the base generator and the SR network, with one progress bar.

On a CPU with two or more cores the two trainings run at the same time (the SR network in a
second process, see ``background``); the base generator's small tensors run fastest on one
thread (measured: a 2-thread step of the coarsest scale was ~10x slower than a 1-thread step when
the cores were shared), so its thread count is pinned to 1 on CPU, and the SR network gets the
other cores. On a GPU they run one after the other in this process. On CPU the weights are a
function of (photo, preset, seed, number of cores): the same either way the two are scheduled.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch

from .. import images
from ..errors import UserError
from ..models import checkpoint
from ..models.checkpoint import Model
from .base import train_base
from .sr import HOLDOUT, holdout_columns, load_sr_photo, train_sr

PARALLEL_MIN_SR_STEPS = 100  # below this, starting a second process costs more than it saves


@dataclass
class FitResult:
    meta: dict[str, Any]  # deterministic: stored inside the checkpoint
    log: dict[str, Any] = field(default_factory=dict)  # timings and loss curves: written beside it


def cpu_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


class Progress:
    """One tqdm bar over base and SR steps, with the latest losses of each and the ETA."""

    def __init__(self, total: int, enabled: bool):
        self.bar = None
        self.stage = ""
        self.losses: dict[str, float] = {}
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="step", file=sys.stderr, dynamic_ncols=True, mininterval=0.5)

    def base(self, stage: str, losses: dict) -> None:
        if stage != self.stage:  # a new scale: drop the previous scale's losses
            self.losses = {k: v for k, v in self.losses.items() if k.startswith("sr_")}
        self.stage = stage
        self.losses.update({k: v for k, v in losses.items() if k in ("rec", "kl", "d")})
        self._advance(1)

    def base_done(self) -> None:
        """The SR network trains alone from here on (a GPU, or one core): the bar says so."""
        self.stage = "sr"
        self.losses = {k: v for k, v in self.losses.items() if k.startswith("sr_")}

    def sr(self, n: int, losses: dict) -> None:
        self.losses["sr_l1"] = losses.get("l1", float("nan"))
        self._advance(n)

    def _advance(self, n: int) -> None:
        if self.bar is not None:
            self.bar.set_description(self.stage or "sr", refresh=False)
            self.bar.set_postfix({k: f"{v:.4f}" for k, v in self.losses.items()}, refresh=False)
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _cpu_seconds() -> tuple[float, float]:
    """(this process, its finished children): user + system CPU seconds."""
    import resource

    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime


def _tail(v: list[float], n: int = 20) -> float:
    return round(sum(v[-n:]) / len(v[-n:]), 6) if v else float("nan")


def _curve(v: list[float], points: int = 50) -> list[float]:
    """A loss history averaged down to at most ``points`` values (for training.json)."""
    if not v:
        return []
    k = max(1, len(v) // points)
    return [round(sum(v[i : i + k]) / len(v[i : i + k]), 6) for i in range(0, len(v), k)]


def keep_photo(model: Model, image: str, info: images.PhotoInfo) -> torch.Tensor:
    """The patch base's whole training: keep the photo at base scale, at most ``base_width`` wide
    and at most half its own width (so its pixels are real detail at every base the renderer
    draws), and record that size in the model's config (the renderer's level count reads it).
    Returns the kept photo (1, 3, h, w) in [-1, 1]."""
    cfg = model.config
    photo = torch.from_numpy(images.load_rgb(image, max_width=min(cfg.base.base_width, max(1, info.width // 2))))
    photo = photo.unsqueeze(0)
    if min(photo.shape[2:]) < cfg.base.coarsest:
        raise UserError(
            f"photo {image!r}: {info.width}x{info.height} is too small or elongated for the "
            f"{cfg.preset} preset (kept at {photo.shape[3]}x{photo.shape[2]}, under {cfg.base.coarsest} px "
            "on a side); use a larger photo, or one with an aspect ratio nearer 1:1"
        )
    checkpoint.keep_photo(model, photo)
    return photo


def fit(
    model: Model,
    image: str,
    info: images.PhotoInfo,
    *,
    seed: int,
    device: str = "cpu",
    progress: bool = True,
    parallel: bool | None = None,
    from_prior: bool = False,
) -> FitResult:
    """Train ``model`` in place on the photo at ``image``. ``parallel`` (default: on a CPU with
    >= 2 cores and a long enough SR schedule) trains the SR network in a second process."""
    cfg = model.config
    cores = cpu_cores()
    on_cpu = device == "cpu"
    if parallel is None:
        parallel = (
            on_cpu
            and cores >= 2
            and cfg.train.base_iterations > 0
            and cfg.base.kind == "gan"
            and cfg.train.sr_iterations >= PARALLEL_MIN_SR_STEPS
        )
    parallel = parallel and on_cpu and cfg.train.sr_iterations > 0
    base_threads = 1 if on_cpu else torch.get_num_threads()
    # the same SR thread count in both modes: CPU results depend on it, and the checkpoint must not
    # depend on whether the two trainings ran side by side
    sr_threads = max(1, cores - 1) if on_cpu else torch.get_num_threads()

    patch_base = cfg.base.kind == "patches"
    if patch_base:
        base_photo = keep_photo(model, image, info)
        cfg = model.config
    else:
        base_photo = torch.from_numpy(images.load_rgb(image, max_width=cfg.base.base_width)).unsqueeze(0)
        need = max(4, cfg.base.coarsest_width // 2)
        if min(base_photo.shape[2:]) < need:
            raise UserError(
                f"photo {image!r}: {info.width}x{info.height} is too elongated or small for the "
                f"{cfg.preset} preset (its base would be {base_photo.shape[3]}x{base_photo.shape[2]}, "
                f"under {need} px on a side); use a photo with an aspect ratio within about "
                f"1:{cfg.base.base_width // need}"
            )
    model.base.train()
    model.sr.train()
    base_steps = 0 if patch_base else cfg.base.n_scales * cfg.train.base_iterations
    bar = Progress(base_steps + cfg.train.sr_iterations, progress)
    t0 = time.time()
    cpu0 = _cpu_seconds()
    background = None
    try:
        if parallel:
            from .background import BackgroundSR

            background = BackgroundSR(model.sr, image, cfg.train, seed, sr_threads, cfg.base.base_width, from_prior)

        def base_step(stage: str, losses: dict) -> None:
            bar.base(stage, losses)
            if background is not None:
                background.poll(bar.sr)

        model.base.to(device)
        if patch_base:
            base_hist = {}
        else:
            with torch_threads(base_threads):
                base_hist = train_base(model.base, base_photo.to(device), cfg.train, seed, base_step)
        t_base = time.time() - t0
        cpu1 = _cpu_seconds()
        if background is not None:
            sr_hist, sr_size = background.join(bar.sr)
        else:
            bar.base_done()
            sr_photo = load_sr_photo(image)
            sr_size = [int(sr_photo.shape[3]), int(sr_photo.shape[2])]
            model.sr.to(device)
            with torch_threads(sr_threads):
                sr_hist = train_sr(
                    model.sr,
                    sr_photo.to(device),
                    cfg.train,
                    seed,
                    HOLDOUT,
                    step=lambda _s, losses: bar.sr(1, losses),
                    base_width=cfg.base.base_width,
                    from_prior=from_prior,
                )
    finally:
        bar.close()
        if background is not None:
            background.stop()
    t_detail = time.time()
    if cfg.sr.detail > 0:  # the photo's detail patches for the SR levels (models/detail.py)
        model.detail.build(load_sr_photo(image), cfg.sr.detail_patches, seed)
    t_detail = time.time() - t_detail
    t_all = time.time() - t0
    cpu2 = _cpu_seconds()
    model.eval()
    hists = {**base_hist, **{f"sr_{k}": v for k, v in sr_hist.items()}}
    meta = {
        "base_photo_size": [int(base_photo.shape[3]), int(base_photo.shape[2])],
        "sr_photo_size": sr_size,
        "sr_holdout_x0": holdout_columns(sr_size[0]),  # columns >= this were never trained on
        "final_losses": {k: _tail(v) for k, v in hists.items()},
        **({} if patch_base else {"noise_amps": [round(float(a), 6) for a in model.base.noise_amps]}),
        "train_config": dict(cfg.train.__dict__),
    }
    log = {
        "device": device,
        "parallel": parallel,
        "threads": {"base": base_threads, "sr": sr_threads, "cores": cores},
        "seconds": {
            "base": round(t_base, 2),
            "total": round(t_all, 2),
            "detail_library": round(t_detail, 2),
            "sr": None if parallel else round(t_all - t_base, 2),
        },
        # CPU seconds (user + system): on idle cores the wall time of a side-by-side run is about
        # the larger of the two processes' CPU seconds
        "cpu_seconds": {
            "base_process": round(cpu1[0] - cpu0[0], 1),
            "sr_process" if parallel else "sr_in_process": round((cpu2[1] - cpu0[1]) if parallel else (cpu2[0] - cpu1[0]), 1),
        },
        "loss_curves": {k: _curve(v) for k, v in hists.items()},
    }
    return FitResult(meta, log)
