"""How a render is sized before it runs: how many workers, how much memory each has, which tile
and chunk, and whether the largest task fits; the plan that results. ``render.prepare`` calls
``size_render`` with the loaded model's config."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import PlanError
from ..planning import footprint, projection
from ..planning.plan import DEFAULT_CHUNK, RenderPlan, chunk_for_tile
from .request import RenderRequest

if TYPE_CHECKING:
    from ..config import ModelConfig

ASSUMED_GPU_MEMORY = 24 << 30  # an A10G (cluster/aws-g5.yaml), when neither --worker-memory nor a local GPU says
ASSUMED_CLUSTER_WORKERS = 8  # when --address gives no worker count and the cluster cannot be asked


def _memory_budget(workers: int) -> int:
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = 16 << 30
    return int(0.8 * total / max(1, workers))


def worker_memory(req: RenderRequest, workers: int) -> tuple[int, bool, str]:
    """(bytes per worker, known?, where the figure comes from). --worker-memory wins; on CPU,
    80% of this machine's memory shared by the local workers (on a cluster: assumed like this
    machine's); on GPU, the memory of this machine's first GPU, else an assumed A10G."""
    if req.worker_memory:
        return req.worker_memory, True, "--worker-memory"
    if req.device.startswith("cuda"):
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_properties(0).total_memory, True, "this machine's GPU"
        return ASSUMED_GPU_MEMORY, False, "ASSUMED 24 GiB per GPU (an A10G); pass --worker-memory"
    local = req.address is None
    return (
        _memory_budget(workers if local else 1),
        True,
        "80% of this machine's memory" + (f" / {workers} workers" if local and workers > 1 else ""),
    )


@dataclass(frozen=True)
class Sizing:
    plan: RenderPlan
    need: int  # calibrated peak memory of a worker running the largest task
    notes: tuple[str, ...]  # what was chosen for the user, and why
    workers: int
    budget: int  # bytes per worker
    known: bool  # the budget is known (not assumed)
    workers_known: bool


def size_render(req: RenderRequest, cfg: ModelConfig, width: int, height: int) -> Sizing:
    """The plan for ``req`` at ``width`` x ``height``, with the tile chosen (``--tile auto``) for
    the workers and their memory; refuses a plan whose largest task does not fit a worker."""
    notes: list[str] = []
    workers, workers_known = _workers(req, notes)
    budget, known, where = worker_memory(req, workers)
    tile = req.tile
    if tile is None:
        choice = projection.choose_tile(
            width,
            height,
            base=cfg.base,
            sr=cfg.sr,
            chunk=req.chunk or DEFAULT_CHUNK,
            workers=workers,
            worker_memory=budget,
            device=req.device,
            halo=req.halo,
            shared_machine=req.address is None and req.device == "cpu",
        )
        tile = choice.tile
        notes.append(f"tile {tile} (auto): {choice.reason} ({where})")
    chunk = req.chunk
    if chunk is None:
        chunk = chunk_for_tile(tile)
        if chunk != DEFAULT_CHUNK:
            notes.append(
                f"chunk {chunk}: --tile {tile} is not a multiple of the default chunk {DEFAULT_CHUNK}, so the "
                f"store uses {chunk} px chunks (pass --chunk to choose)"
            )
    plan = RenderPlan.create(width, height, base=cfg.base, sr=cfg.sr, tile=tile, halo=req.halo, chunk=chunk)
    plan.check_halo(cfg.sr)
    _check_exact_path(req, plan)
    need = footprint.memory_model(req.device).task_peak(plan, cfg.sr, cfg.base)
    if known and need > budget:
        _refuse_memory(req, cfg, plan, need, budget, where)
    return Sizing(plan, need, tuple(notes), workers, budget, known, workers_known)


def _workers(req: RenderRequest, notes: list[str]) -> tuple[int, bool]:
    """(workers, known?): --workers, or with 0 all the cluster at --address offers (asked only
    when it sizes the tile; assumed when it cannot say)."""
    if req.workers != 0:
        return req.workers, True
    workers = None
    if req.tile is None:
        from .executors.ray_cluster import cluster_workers

        workers = cluster_workers(req.address, req.device)
    if workers is not None:
        return workers, True
    if req.tile is None:
        notes.append(f"workers: the cluster did not say how many; the tile is sized for {ASSUMED_CLUSTER_WORKERS} (pass --workers)")
    return ASSUMED_CLUSTER_WORKERS, False


def _check_exact_path(req: RenderRequest, plan: RenderPlan) -> None:
    if plan.exact and req.device == "cpu" and req.precision == "fp32":
        from ..store.fencing import exact_path_missing

        if why := exact_path_missing(req.device, req.precision):
            raise PlanError(
                f"exact mode (CPU, fp32, --halo exact) needs its exact convolution path: {why}; use a "
                "torch build with oneDNN (the PyPI CPU wheels have it), or pass --halo PX to render "
                "without the bit-exact guarantee"
            )


def _refuse_memory(req: RenderRequest, cfg: ModelConfig, plan: RenderPlan, need: int, budget: int, where: str) -> None:
    """The largest task does not fit a worker: say so, naming what the user can change."""
    what = "GPU" if req.device.startswith("cuda") else "worker"
    over = f"a task is projected to need {need / 2**30:.1f} GiB, over the {budget / 2**30:.1f} GiB per {what} available ({where})"
    if req.tile is not None:
        raise PlanError(f"--tile {plan.tile}: {over}; use a smaller --tile")
    # --tile auto chose the tile: the memory is set by the other options, so name those
    causes = []
    terms = footprint.task_bytes(plan, cfg.sr, cfg.base)
    largest = max(terms, key=terms.get)
    if largest in ("base", "patch_base"):
        causes.append(
            f"the largest task is the base image ({plan.base_width}x{plan.base_height}, about "
            f"{terms[largest] / 2**20:.0f} MiB counted), whatever the tile: a smaller --size draws a smaller base"
        )
    if req.halo != "exact":
        causes.append(f"--halo {req.halo} adds {req.halo} px around every tile: use a smaller --halo (or 'exact')")
    if req.workers > 1 and req.address is None and not req.worker_memory:
        causes.append(f"--workers {req.workers} share this machine's memory: pass fewer --workers")
    causes.append(
        "pass a larger --worker-memory if the workers really have more"
        if req.worker_memory or req.address is not None or req.device != "cpu"
        else "use a machine with more memory"
    )
    raise PlanError(f"even the {plan.tile} px tile that --tile auto chose does not fit: {over}; " + "; ".join(causes))
