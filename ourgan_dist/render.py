"""Plan, validate, execute: the render pipeline that the CLI and the library API share.

``prepare`` resolves the request into a ``RenderPlan`` and checks it (model readable, plan valid,
memory per task within budget, output free or resumable) before anything is written;
``render`` then takes the store's lease (before writing anything), creates, overwrites or reopens
the store under it, runs the tasks that are not done yet on an executor, and marks the store
complete. A render that loses its lease stops (``LeaseLost``), resumably.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from .canvas import Canvas, plan_to_info
from .errors import PlanError, StoreError, TileError, UserError
from .lease import Lease, LeaseLost
from .plan import DEFAULT_CHUNK, SCALE, Box, RenderPlan, TaskKey, TileKey, chunk_for_tile, parse_size
from .tile import RenderJob, TaskReport

MIN_AUTO_TILE, MAX_AUTO_TILE = 512, 4096


def auto_tile(receptive_radius: int, chunk: int) -> int:
    """A tile whose source core is >= 24 halos wide, so halo reads cost under ~10%."""
    want = 4 * 24 * receptive_radius
    want = min(MAX_AUTO_TILE, max(MIN_AUTO_TILE, want))
    return math.ceil(want / chunk) * chunk


@dataclass(frozen=True)
class RenderRequest:
    model: str
    out: str
    size: str  # "WxH"
    seed: int = 0
    tile: int | None = None  # None: auto from the receptive field; 0: untiled
    halo: str = "exact"
    chunk: int | None = None  # None: DEFAULT_CHUNK, or a divisor of the tile (plan.chunk_for_tile)
    workers: int = 1  # 0: as many as the cluster at --address offers
    address: str | None = None
    resume: bool = False
    overwrite: bool = False
    device: str = "cpu"
    precision: str = "fp32"
    storage_options: dict = field(default_factory=dict, repr=False)  # credentials: never printed or stored
    model_storage_options: dict = field(default_factory=dict, repr=False)
    max_task_memory: int | None = None  # bytes; None: 80% of this machine's memory per worker


@dataclass
class Prepared:
    request: RenderRequest
    plan: RenderPlan
    model: Any  # checkpoint.Model, loaded once on the driver (config, id)
    projected_task_bytes: int
    notes: tuple[str, ...] = ()  # choices made for the user (an automatic chunk size), printed with the plan


def _memory_budget(workers: int) -> int:
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = 16 << 30
    return int(0.8 * total / max(1, workers))


def prepare(req: RenderRequest) -> Prepared:
    from .models import checkpoint

    width, height = parse_size(req.size)
    if req.address is not None:  # an unreachable cluster fails here, in seconds, before anything is written
        from .executors.ray import check_address

        check_address(req.address)
    if req.workers < 0 or (req.workers == 0 and req.address is None):
        raise PlanError(f"--workers {req.workers}: must be >= 1 (0, all the cluster offers, needs --address)")
    model = checkpoint.load(req.model, req.model_storage_options)
    cfg = model.config
    tile = auto_tile(cfg.sr.receptive_radius, req.chunk or DEFAULT_CHUNK) if req.tile is None else req.tile
    chunk, notes = req.chunk, ()
    if chunk is None:
        chunk = chunk_for_tile(tile)
        if chunk != DEFAULT_CHUNK:
            notes = (f"chunk {chunk}: --tile {tile} is not a multiple of the default chunk {DEFAULT_CHUNK}, so the store "
                     f"uses {chunk} px chunks (pass --chunk to choose)",)
    plan = RenderPlan.create(width, height, base=cfg.base, sr=cfg.sr, tile=tile, halo=req.halo, chunk=chunk)
    plan.check_halo(cfg.sr)
    if plan.exact and req.device == "cpu" and req.precision == "fp32":
        from .fencing import exact_path_missing

        if why := exact_path_missing(req.device, req.precision):
            raise PlanError(f"exact mode (CPU, fp32, --halo exact) needs its exact convolution path: {why}; use a "
                            "torch build with oneDNN (the PyPI CPU wheels have it), or pass --halo PX to render "
                            "without the bit-exact guarantee")
    need = plan.projected_task_bytes(cfg.sr, cfg.base)
    budget = req.max_task_memory or _memory_budget(req.workers)
    if req.device == "cpu" and need > budget:
        raise PlanError(f"--tile {tile}: a task is projected to need {need / 2**30:.1f} GiB, over the "
                        f"{budget / 2**30:.1f} GiB per worker available; use a smaller --tile")
    return Prepared(req, plan, model, need, notes)


def render_info(p: Prepared) -> dict[str, Any]:
    """The resolved config written into the store: no credentials; the arithmetic environment
    (device kind, precision, torch, oneDNN, CPU instruction set: ``fencing.py``) that a resume
    and every worker must match."""
    from .fencing import runtime_environment

    r, m = p.request, p.model
    return {
        "name": f"ourgan-dist seed {r.seed}",
        "model": r.model if "://" in r.model else os.path.abspath(r.model),
        "model_id": m.model_id,
        "model_preset": m.config.preset,
        "seed": r.seed,
        "size": [p.plan.width, p.plan.height],
        "plan": plan_to_info(p.plan),
        "exact": p.plan.exact,
        "precision": r.precision,
        "environment": runtime_environment(r.device, r.precision),
    }


def check_output(p: Prepared, lease: Lease | None = None) -> bool:
    """Refuse, reading only, an output this render may not use: an existing store without
    --resume/--overwrite, one that is not an ourgan-dist render, a resume with other settings, or
    a store another render holds (``lease``: ours, once taken). Returns whether the output
    exists. Cheap: run it before the plan is printed or any error measured, and again under the
    lease."""
    r = p.request
    try:
        exists = Canvas.exists(r.out, r.storage_options)
    except PermissionError:
        raise StoreError(f"--out {r.out!r}: permission denied; choose a location you can write") from None
    if exists and not (r.resume or r.overwrite):
        raise StoreError(f"--out {r.out!r} already exists; pass --resume to finish it or --overwrite to replace it")
    if exists and r.resume:
        if not Canvas.is_render_store(r.out, r.storage_options):
            raise StoreError(f"--out {r.out!r} exists but is not an ourgan-dist render; choose another --out")
        canvas = Canvas(r.out, r.storage_options)
        want = render_info(p)
        for k in ("model_id", "seed", "size", "plan", "precision"):
            if canvas.info.get(k) != want[k]:
                raise StoreError(f"--resume {r.out!r}: the store was rendered with {k}={canvas.info.get(k)!r}, this "
                                 f"command asks for {want[k]!r}; use the same model, seed, size, tile, halo and chunk, "
                                 f"or --overwrite")
        from .fencing import mismatch

        if why := mismatch(canvas.info.get("environment"), want["environment"]):
            raise StoreError(f"--resume {r.out!r}: the store was rendered in another environment ({why}), so the "
                             "resumed tiles would not be bit-identical to the rest; resume it where it was started "
                             "(same torch build, CPU instruction set, device and precision), or --overwrite")
    if exists and r.overwrite:
        if not Canvas.is_render_store(r.out, r.storage_options):
            raise StoreError(f"--overwrite {r.out!r}: refusing to delete something that is not an ourgan-dist render; "
                             "remove it yourself or choose another --out")
        probe = lease or Lease(r.out, r.storage_options)
        holder = probe.holder()  # a lease that cannot be read raises: never delete a store that may be in use
        if holder and holder.get("token") != probe.token:
            probe._refuse(holder)
    return exists


def open_output(p: Prepared, lease: Lease) -> Canvas:
    """Under ``lease``: create the store, or reopen it for --resume, or clear and create it for
    --overwrite; never touch an existing output otherwise."""
    r = p.request
    exists = check_output(p, lease)  # again, now that no other render can start
    if exists and r.resume:
        return Canvas(r.out, r.storage_options, mode="r+")
    lease.check()
    if exists and r.overwrite:
        Canvas.clear(r.out, r.storage_options)
    try:
        return Canvas.create(r.out, p.plan, render_info(p), r.storage_options)
    except (PermissionError, OSError) as e:
        raise StoreError(f"--out {r.out!r}: cannot write there ({type(e).__name__}: {e}); "
                         "choose a writable location") from None


def task_order(plan: RenderPlan) -> list[TaskKey]:
    return [*plan.all_tiles(), *plan.all_pyramid_tasks()]


@dataclass
class RenderSummary:
    url: str
    plan: RenderPlan
    tasks_run: int
    tasks_skipped: int
    seconds: float
    reports: list[TaskReport]
    halo_error: dict | None = None


class _RayAuthNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "Token authentication is enabled for this Ray cluster" not in record.getMessage()


def quiet_embedded_ray_auth() -> None:
    """A new local Ray (>= 2.5x) turns on token authentication when ``RAY_AUTH_MODE`` is unset and
    logs a notice saying so at every start. The CLI hides that one notice (a log filter; the mode,
    the environment and Ray's cached config are left exactly as Ray sets them: changing the
    variable behind Ray's back leaves its cached config disagreeing with clusters started later)."""
    logger = logging.getLogger("ray._private.authentication.authentication_token_setup")
    if not any(isinstance(f, _RayAuthNotice) for f in logger.filters):
        logger.addFilter(_RayAuthNotice())


def make_executor(req: RenderRequest, model=None):
    if req.workers == 1 and req.address is None:
        from .executors.local import LocalExecutor

        return LocalExecutor(model=model)
    try:
        from .executors.ray import RayExecutor
    except ImportError as e:  # pragma: no cover - ray is a dependency
        raise UserError(f"--workers {req.workers}: the Ray executor is unavailable ({e})") from None
    return RayExecutor(workers=req.workers or None, address=req.address, device=req.device)


def render(p: Prepared, on_progress: Callable[[TaskReport, int, int], None] | None = None,
           executor=None) -> RenderSummary:
    """Run every task the store does not record as done; mark the store complete at the end."""
    r = p.request
    check_output(p)  # refused before the lease is taken, too
    reports: list[TaskReport] = []
    t0 = time.time()
    with Lease(r.out, r.storage_options) as lease:  # first: the store is created under the lease
        canvas = open_output(p, lease)
        job = RenderJob(model=r.model, store=r.out, seed=r.seed, device=r.device, precision=r.precision,
                        storage_options=r.storage_options, model_storage_options=r.model_storage_options,
                        lease_token=lease.token)
        done = canvas.done() if r.resume else set()
        todo = [k for k in task_order(p.plan) if k not in done]

        def on_done(rep: TaskReport) -> None:
            lease.check()  # a render that lost its lease submits nothing more
            reports.append(rep)
            if on_progress:
                on_progress(rep, len(reports), len(todo))

        if todo:
            ex = executor or make_executor(r, model=p.model)
            try:
                ex.run(job, p.plan, todo, on_done)
            except TileError as e:
                lease.check()
                if isinstance(e.cause, LeaseLost):  # a worker found the lease taken before the driver did
                    raise e.cause from None
                raise
            except Exception:
                lease.check()
                raise
        lease.check()
        Canvas(r.out, r.storage_options, mode="r+").mark_complete()
    return RenderSummary(r.out, p.plan, len(todo), len(done), time.time() - t0, reports)


def measure_tile(plan: RenderPlan) -> TileKey | None:
    """The tile a halo error is measured on: the centre tile of the largest level that has more
    than one tile, so that it has tiled neighbours (a level of one tile reads no halo at all and
    shows no error). None if every level is a single tile."""
    for lv in reversed(plan.levels[1:]):
        rows, cols = plan.tile_grid(lv.index)
        if rows * cols > 1:
            return TileKey(lv.index, rows // 2, cols // 2)
    return None


def _exact_level(p: Prepared, level: int, box: Box, cache: dict):
    """Level ``level``'s values on ``box`` as an exact render stores them (float32 of the stored
    float16, or the base generator's output), computed from the smallest cone of exact windows
    below it: never a whole level above the base. (3, box.height, box.width) tensor."""
    import torch

    from . import noise
    from .models.sr import run_window

    plan, model, seed = p.plan, p.model, p.request.seed
    if level == 0:
        if "base" not in cache:
            cache["base"] = model.base.generate(plan.base_height, plan.base_width, seed)[0].float()
        y = cache["base"][:, box.y0:box.y1, box.x0:box.x1]
        return y.half().float() if level < plan.final_level else y  # stored as float16 below the last level
    src = plan.levels[level - 1]
    core = Box(box.y0 // SCALE, -(-box.y1 // SCALE), box.x0 // SCALE, -(-box.x1 // SCALE))
    win = core.expand(plan.receptive_radius).clip(src.height, src.width)
    x = _exact_level(p, level - 1, win, cache).unsqueeze(0)
    z = torch.from_numpy(noise.normal(seed, level, 0, 3, win)).unsqueeze(0)
    y = run_window(model.sr, x, z, window=win, core=core, level_size=(src.height, src.width))[0]
    oy, ox = box.y0 - SCALE * core.y0, box.x0 - SCALE * core.x0
    y = y[:, oy:oy + box.height, ox:ox + box.width]
    return y.half().float() if level < plan.final_level else y  # levels below the last are stored as float16


def measure_halo_error(p: Prepared) -> dict[str, Any]:
    """For a halo below the receptive field: the error it causes on one level, measured on an
    interior tile of the largest level with more than one tile (``measure_tile``). The tile's
    exact source window is computed, then the tile is run on it with the asked halo and with an
    exact one. A full render makes this error at every tiled level, and each level's error is
    carried into the next, so the final image can differ more than this one-level figure.

    Returns {} for an exact plan; {"tile": None, ...} when no level has more than one tile (the
    halo is then never cut and the render is exact)."""
    import numpy as np
    import torch

    from . import noise
    from .canvas import to_uint8
    from .models.sr import run_window

    plan = p.plan
    if plan.n_sr == 0 or plan.exact:
        return {}
    key = measure_tile(plan)
    tiled = [lv.index for lv in plan.levels[1:] if plan.tile_grid(lv.index) != (1, 1)]
    if key is None:
        return {"tile": None, "tiled_levels": 0, "max_abs_error_8bit": 0.0, "mean_abs_error_8bit": 0.0,
                "pixels_differing": 0.0}
    src = plan.levels[key.level - 1]
    core, src_core = plan.core(key), plan.source_core(key)
    full = src_core.expand(plan.receptive_radius).clip(src.height, src.width)
    with torch.inference_mode():
        x = _exact_level(p, key.level - 1, full, {})
        outs = []
        for halo in (plan.halo, plan.receptive_radius):
            win = src_core.expand(halo).clip(src.height, src.width)
            ys, xs = win.relative_to(full)
            z = torch.from_numpy(noise.normal(p.request.seed, key.level, 0, 3, win)).unsqueeze(0)
            y = run_window(p.model.sr, x[:, ys, xs].unsqueeze(0), z, window=win, core=src_core,
                           level_size=(src.height, src.width))[0]
            oy, ox = core.y0 - SCALE * src_core.y0, core.x0 - SCALE * src_core.x0
            outs.append(to_uint8(y[:, oy:oy + core.height, ox:ox + core.width].numpy()).astype(np.int16))
    diff = np.abs(outs[0] - outs[1])
    return {"tile": str(key), "tiled_levels": len(tiled), "max_abs_error_8bit": float(diff.max()),
            "mean_abs_error_8bit": float(diff.mean()), "pixels_differing": float((diff.max(axis=0) > 0).mean())}


def describe_halo_error(plan: RenderPlan, err: dict[str, Any]) -> str:
    """One line for the CLI: what the measured error is, where, and that levels compound it."""
    head = f"halo {plan.halo} < receptive field {plan.receptive_radius}: NOT exact"
    if err.get("tile") is None:
        return (f"halo {plan.halo} < receptive field {plan.receptive_radius}, but every level is a single tile, so no "
                "halo is cut: the render is exact")
    share = 100 * err["pixels_differing"]
    return (f"{head}; measured on interior tile {err['tile']} from an exact source: max error "
            f"{err['max_abs_error_8bit']:.0f}/255, mean {err['mean_abs_error_8bit']:.4f}/255, {share:.3g}% of pixels "
            f"differ. This is one level's error: {err['tiled_levels']} level(s) are tiled and errors compound "
            "across levels, so the final image may differ more")
