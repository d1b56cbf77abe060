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
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch

from .. import images
from ..errors import UserError
from ..models import checkpoint
from ..models.checkpoint import Model
from .base import train_base
from .progress import MAIN, SIDE, Stage, TrainingBar, base_stages, detail_stage, sr_stage
from .sr import HOLDOUT, MAX_SIDE, holdout_columns, load_sr_photo, train_sr

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


@dataclass(frozen=True)
class Schedule:
    """Where each network trains: side by side (SR in a second process) or one after the other,
    and on how many threads."""

    parallel: bool
    base_threads: int
    sr_threads: int
    cores: int


def schedule(cfg, device: str, parallel: bool | None) -> Schedule:
    """``parallel`` (default: on a CPU with >= 2 cores, a GAN base and a long enough SR schedule)
    trains the SR network in a second process; only ever on a CPU with SR steps to do."""
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
    # the same SR thread count in both modes: CPU results depend on it, and the checkpoint must not
    # depend on whether the two trainings ran side by side
    return Schedule(
        parallel=bool(parallel),
        base_threads=1 if on_cpu else torch.get_num_threads(),
        sr_threads=max(1, cores - 1) if on_cpu else torch.get_num_threads(),
        cores=cores,
    )


def base_photo(model: Model, image: str, info: images.PhotoInfo) -> torch.Tensor:
    """The photo at the base generator's scale (1, 3, h, w): kept by the patch base (its whole
    training), or the GAN base's training image, refused when too small or elongated."""
    cfg = model.config
    if cfg.base.kind == "patches":
        return keep_photo(model, image, info)
    photo = torch.from_numpy(images.load_rgb(image, max_width=cfg.base.base_width)).unsqueeze(0)
    need = max(4, cfg.base.coarsest_width // 2)
    if min(photo.shape[2:]) < need:
        raise UserError(
            f"photo {image!r}: {info.width}x{info.height} is too elongated or small for the "
            f"{cfg.preset} preset (its base would be {photo.shape[3]}x{photo.shape[2]}, "
            f"under {need} px on a side); use a photo with an aspect ratio within about "
            f"1:{cfg.base.base_width // need}"
        )
    return photo


def stages(model: Model, photo: torch.Tensor, info: images.PhotoInfo, plan: Schedule, from_prior: bool) -> list[Stage]:
    """What the run will do, in order, for the progress bar: the GAN base's scales, the SR
    network (beside them when ``plan.parallel``) and the detail library."""
    cfg = model.config
    out = []
    if cfg.base.kind == "gan" and cfg.train.base_iterations:
        out += base_stages(cfg.base, cfg.train, model.base.scale_sizes(photo.shape[2], photo.shape[3]))
    if cfg.train.sr_iterations:
        out.append(sr_stage(cfg.sr, cfg.train, from_prior, SIDE if plan.parallel else MAIN))
    if cfg.sr.detail > 0:
        shrink = min(1.0, MAX_SIDE / max(info.width, info.height))  # as load_sr_photo reads it
        out.append(detail_stage(round(info.width * shrink) * round(info.height * shrink)))
    return out


@dataclass
class _Timings:
    """Wall and CPU seconds at the run's milestones (for training.json)."""

    start: float = field(default_factory=time.time)
    cpu_start: tuple[float, float] = field(default_factory=lambda: _cpu_seconds())
    base: float = 0.0
    cpu_base_end: tuple[float, float] = (0.0, 0.0)
    detail: float = 0.0


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
    plan = schedule(model.config, device, parallel)
    photo = base_photo(model, image, info)
    model.base.train()
    model.sr.train()
    bar = TrainingBar(stages(model, photo, info, plan, from_prior), device, progress)
    times = _Timings()
    try:
        base_hist, sr_hist, sr_size = _train_networks(model, image, photo, plan, seed, device, from_prior, bar, times)
        t = time.time()
        if model.config.sr.detail > 0:  # the photo's detail patches for the SR levels (models/detail.py)
            bar.begin(MAIN)
            model.detail.build(load_sr_photo(image), model.config.sr.detail_patches, seed)
            bar.step("detail library")
        times.detail = time.time() - t
    finally:
        bar.close()
    model.eval()
    hists = {**base_hist, **{f"sr_{k}": v for k, v in sr_hist.items()}}
    return FitResult(_meta(model, photo, sr_size, hists), _log(plan, device, times, hists))


def _train_networks(
    model: Model,
    image: str,
    photo: torch.Tensor,
    plan: Schedule,
    seed: int,
    device: str,
    from_prior: bool,
    bar: TrainingBar,
    times: _Timings,
) -> tuple[dict, dict, list[int]]:
    """The base generator (the GAN base's scales; nothing for the patch base) and the SR network,
    side by side or one after the other; returns (base losses, SR losses, the SR photo's size)."""
    cfg = model.config
    sr_name = sr_stage(cfg.sr, cfg.train, from_prior).name

    def sr_step(n: int, losses: dict) -> None:
        bar.step(sr_name, n, {"sr_l1": losses.get("l1", float("nan"))})

    background = None
    try:
        if plan.parallel:
            from .background import BackgroundSR

            background = BackgroundSR(model.sr, image, cfg.train, seed, plan.sr_threads, cfg.base.base_width, from_prior)
            bar.begin(SIDE)
        base_hist = _train_base(model, photo, plan, seed, device, bar, lambda: background and background.poll(sr_step))
        times.base, times.cpu_base_end = time.time() - times.start, _cpu_seconds()
        bar.drop_losses(BASE_LOSSES)
        if background is not None:
            sr_hist, sr_size = background.join(sr_step)
        else:
            sr_hist, sr_size = _train_sr_here(model, image, plan, seed, device, from_prior, sr_step)
    finally:
        if background is not None:
            background.stop()
    return base_hist, sr_hist, sr_size


BASE_LOSSES = ("rec", "kl", "d")  # the base losses the bar shows (of the scale training now)


def _train_base(model: Model, photo: torch.Tensor, plan: Schedule, seed: int, device: str, bar: TrainingBar, poll) -> dict:
    """The GAN base's scales, one after another (the patch base has nothing to train); ``poll``
    hands the bar what the SR process has reported meanwhile."""
    cfg = model.config
    model.base.to(device)
    if cfg.base.kind == "patches":
        return {}
    shown = [""]

    def base_step(stage: str, losses: dict) -> None:
        if stage != shown[0]:  # a new scale: the previous scale's losses go
            bar.drop_losses(BASE_LOSSES)
            shown[0] = stage
        bar.step(stage, 1, {k: v for k, v in losses.items() if k in BASE_LOSSES})
        poll()

    with torch_threads(plan.base_threads):
        return train_base(model.base, photo.to(device), cfg.train, seed, base_step)


def _train_sr_here(model: Model, image: str, plan: Schedule, seed: int, device: str, from_prior: bool, sr_step) -> tuple:
    """The SR network in this process; returns (its losses, the SR photo's size)."""
    cfg = model.config
    sr_photo = load_sr_photo(image)
    model.sr.to(device)
    with torch_threads(plan.sr_threads):
        hist = train_sr(
            model.sr,
            sr_photo.to(device),
            cfg.train,
            seed,
            HOLDOUT,
            step=lambda _stage, losses: sr_step(1, losses),
            base_width=cfg.base.base_width,
            from_prior=from_prior,
        )
    return hist, [int(sr_photo.shape[3]), int(sr_photo.shape[2])]


def _meta(model: Model, photo: torch.Tensor, sr_size: list[int], hists: dict) -> dict:
    """What the checkpoint records of its training (deterministic: no timings)."""
    cfg = model.config
    return {
        "base_photo_size": [int(photo.shape[3]), int(photo.shape[2])],
        "sr_photo_size": sr_size,
        "sr_holdout_x0": holdout_columns(sr_size[0]),  # columns >= this were never trained on
        "final_losses": {k: _tail(v) for k, v in hists.items()},
        **({} if cfg.base.kind == "patches" else {"noise_amps": [round(float(a), 6) for a in model.base.noise_amps]}),
        "train_config": dict(cfg.train.__dict__),
    }


def _log(plan: Schedule, device: str, times: _Timings, hists: dict) -> dict:
    """Timings, threads and loss curves for training.json."""
    t_all = time.time() - times.start
    cpu0, cpu1, cpu2 = times.cpu_start, times.cpu_base_end, _cpu_seconds()
    return {
        "device": device,
        "parallel": plan.parallel,
        "threads": {"base": plan.base_threads, "sr": plan.sr_threads, "cores": plan.cores},
        "seconds": {
            "base": round(times.base, 2),
            "total": round(t_all, 2),
            "detail_library": round(times.detail, 2),
            "sr": None if plan.parallel else round(t_all - times.base, 2),
        },
        # CPU seconds (user + system): on idle cores the wall time of a side-by-side run is about
        # the larger of the two processes' CPU seconds
        "cpu_seconds": {
            "base_process": round(cpu1[0] - cpu0[0], 1),
            "sr_process" if plan.parallel else "sr_in_process": round(
                (cpu2[1] - cpu0[1]) if plan.parallel else (cpu2[0] - cpu1[0]), 1
            ),
        },
        "loss_curves": {k: _curve(v) for k, v in hists.items()},
    }
