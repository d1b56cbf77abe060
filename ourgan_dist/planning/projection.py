"""What a render will cost before it runs: work per task, time, and the automatic tile size that
fits the workers (memory per task and store size: ``footprint.py``).

Pure arithmetic over a ``RenderPlan`` and the model's configs, like ``plan.py``: no torch, Ray or
Zarr. The few measured numbers it needs (how fast a worker computes, how much memory a worker
holds beyond the activations it counts) are passed in as ``Throughput`` and ``MemoryModel``
values; the ones recorded here were fitted by ``benchmarks/plan_calibration.py``.

Cost model. An SR tile runs the network on its source core plus a halo and crops after every
block to what the rest of the network still needs (``models/window.py``), so each conv computes
on the core expanded by its ``reach``, read with its channels and resolution from the network's
description (``models/sr_architecture.py``); the rrdb tail runs at 2x and 4x. Its work is the
sum over layers of multiply-accumulates (MACs) on those regions. Its time is MACs / rate, plus
the store I/O and noise per output pixel, plus a fixed cost per task. Pyramid tasks are I/O alone.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from functools import lru_cache

from ..config import BaseConfig, PatchBaseConfig, SRConfig
from ..models.sr_architecture import sr_architecture
from .footprint import guided_level, memory_model
from .plan import PyramidKey, RenderPlan, TaskKey, TileKey

GiB = 1 << 30


# ---- network arithmetic -----------------------------------------------------------------------
def sr_macs_per_pixel(sr: SRConfig) -> int:
    """MACs per source pixel of a whole level (no halo): the network's arithmetic density, plus
    the detail stage's search (models/detail.py)."""
    return sr_architecture(sr).macs_per_pixel + detail_macs_per_pixel(sr)


def detail_macs_per_pixel(sr: SRConfig, guided: bool = False) -> int:
    """The detail stage per source pixel: a 48-value distance to every library key, then the
    selection of the nearest (counted as one MAC per key and choice); on a guided level
    (``footprint.guided_level``) a 48-value distance to each of 9 candidates and the 8x8x3 patch."""
    if sr.detail <= 0:
        return 0
    return 9 * 48 + 3 * 64 if guided else sr.detail_patches * (48 + sr.detail_choices + 1)


def base_macs(base: BaseConfig | PatchBaseConfig, height: int, width: int) -> int:
    """The base generator's arithmetic for a base image: every stage's convs at its scale, or for
    the patch base its searches (exact on the layout scales, local above) and votes."""
    if base.kind == "patches":
        area = height * width / (1 - base.pyramid_ratio**2)  # all scales together
        dims = 3 * base.patch**2
        layout = min(base.layout_pixels, height * width)
        exact = 2 * layout * layout * base.features * base.iterations / (1 - base.pyramid_ratio**2)
        local = area * base.refine_iterations * (24 * base.features + 2 * dims * base.features + dims)
        return int(exact + local)
    ratio = (base.coarsest_width / base.base_width) ** (1 / max(1, base.n_scales - 1))
    area = sum(height * width * ratio ** (2 * s) for s in range(base.n_scales))
    per_px = 9 * base.channels * (base.channels * (base.convs_per_stage - 1) + 3 + base.latent_channels + 1)
    return int(area * per_px)


@lru_cache(maxsize=4096)
def _tile_macs(sr: SRConfig, core_h: int, core_w: int, halo: int, guided: bool = False) -> int:
    """MACs of one SR tile whose source core is core_h x core_w, read with ``halo``: each layer
    on the core expanded by the reach it still needs (full at level edges too: run_window pads)."""
    total = 0
    for i, layer in enumerate(sr_architecture(sr).convs):
        reach = min(layer.reach, halo) if i else halo  # the first layer sees the whole window
        total += layer.macs * layer.scale**2 * (core_h + 2 * reach) * (core_w + 2 * reach)
    return total + detail_macs_per_pixel(sr, guided) * (core_h + 2) * (core_w + 2)  # blocks of the core and its rim


# ---- how fast a worker is ---------------------------------------------------------------------
@dataclass(frozen=True)
class Throughput:
    """How fast one worker runs tasks. ``source`` says where the numbers come from; the dry run
    prints it next to every time it projects."""

    macs_per_s: float  # network arithmetic of one worker using the whole machine (all cores or one GPU)
    io_s_per_px: float  # per output pixel of an SR tile: noise, reading the source, encoding and writing
    pyramid_s_per_px: float  # per pixel a viewing-pyramid task writes (reads 4, averages, writes)
    task_s: float  # fixed cost of any task: scheduling, store round trips
    source: str

    def with_rate(self, macs_per_s: float, source: str) -> "Throughput":
        return Throughput(macs_per_s, self.io_s_per_px, self.pyramid_s_per_px, self.task_s, source)


# Measured by benchmarks/plan_calibration.py on the project's 2-core CPU machine while other jobs
# ran (load average 13-17): 2-worker renders of the cpu preset at 4096x2730 did 4-6 GMAC/s in all
# (2-3 per worker), store I/O and noise cost 1-2 us per output pixel of an SR tile (tiny preset,
# whose arithmetic is negligible), a pyramid block 1-5 us per pixel it writes.
CPU_REFERENCE = Throughput(
    macs_per_s=5e9,
    io_s_per_px=1.35e-6,
    pyramid_s_per_px=2e-6,
    task_s=0.05,
    source="recorded rate of this project's busy 2-core CPU (benchmarks/plan_calibration.py)",
)
# Measured on one NVIDIA H200 (benchmarks/gpu_render.py: paper preset, one in-process worker,
# torch 2.11, cuDNN deterministic, TF32 off). Store I/O and noise: the cpu preset's last level of
# a 16384x12288 render (201 Mpx written, 8.6 TMAC) took 15.6 s, about 0.07 us per output pixel.
# With that, the paper preset's last level (377 TMAC, fp16) ran at about 22 TMAC/s, level 2 of a
# 4096x3072 render (34.7 TMAC) at 12 TMAC/s in fp32 and 13 in bf16 (a smaller level: less
# parallel work); the 16K viewing pyramid, averaged on the host, 0.2 us per pixel written.
GPU_REFERENCE = Throughput(
    macs_per_s=11e12,
    io_s_per_px=0.07e-6,
    pyramid_s_per_px=0.2e-6,
    task_s=0.05,
    source="rate measured on one H200 (fp32, TF32 off; benchmarks/gpu_render.py)",
)


CPU_REFERENCE_WORKERS = 2  # CPU_REFERENCE's rate is the machine's, its two workers together


def cpu_throughput(worker_rate: float, source: str) -> Throughput:
    """One CPU worker of ``worker_rate`` MACs/s (as a probe measured it). Store I/O, noise and the
    pyramid's averaging are CPU work too, recorded beside CPU_REFERENCE's rate: they scale with the
    worker's rate as the arithmetic does (on the idle machine a tiny-preset render's I/O took 131 ns
    and a pyramid block 170 ns per pixel, about a tenth of the busy machine's, as was its rate)."""
    slower = CPU_REFERENCE.macs_per_s / CPU_REFERENCE_WORKERS / worker_rate
    t = CPU_REFERENCE
    return Throughput(worker_rate, t.io_s_per_px * slower, t.pyramid_s_per_px * slower, t.task_s, source)


def reference_throughput(device: str, precision: str = "fp32") -> Throughput:
    if device.startswith("cuda"):
        if precision != "fp32":
            return GPU_REFERENCE.with_rate(20e12, "rate measured on one H200 (fp16; benchmarks/gpu_render.py)")
        return GPU_REFERENCE
    return CPU_REFERENCE


class Work:
    """Expected cost of each task of a plan: MACs and seconds on one worker of ``throughput``."""

    def __init__(self, plan: RenderPlan, sr: SRConfig, base: BaseConfig, throughput: Throughput = CPU_REFERENCE):
        self.plan, self.sr, self.base, self.throughput = plan, sr, base, throughput

    def macs(self, key: TaskKey) -> int:
        if isinstance(key, PyramidKey):
            return 0
        if key.level == 0:
            return base_macs(self.base, self.plan.base_height, self.plan.base_width)
        c = self.plan.source_core(key)
        return _tile_macs(self.sr, c.height, c.width, self.plan.halo, guided_level(self.sr, self.base, key.level))

    def pixels(self, key: TaskKey) -> int:
        """Output pixels the task writes."""
        return (self.plan.pyramid_block(key) if isinstance(key, PyramidKey) else self.plan.core(key)).area

    def seconds(self, key: TaskKey) -> float:
        t = self.throughput
        if isinstance(key, PyramidKey):
            return t.task_s + self.pixels(key) * t.pyramid_s_per_px
        return t.task_s + self.macs(key) / t.macs_per_s + self.pixels(key) * t.io_s_per_px

    def compute_overhead(self) -> float:
        """MACs of the SR levels as tiled over MACs of the same levels with no halo at all: the
        extra arithmetic the halos cost (1.0 would be free)."""
        tiled = bare = 0
        for lv in self.plan.levels[1:]:
            per_px = sr_architecture(self.sr).macs_per_pixel + detail_macs_per_pixel(
                self.sr, guided_level(self.sr, self.base, lv.index)
            )
            for key, n in task_groups(self.plan, lv.index):
                tiled += n * self.macs(key)
                bare += n * self.plan.source_core(key).area * per_px
        return tiled / bare if bare else 1.0


def _classes(n: int) -> list[tuple[int, int]]:
    """(index, count): row (or column) 0 stands for the n - 1 full ones, the last for itself."""
    return [(0, 1)] if n == 1 else [(0, n - 1), (n - 1, 1)]


def task_groups(plan: RenderPlan, level: int | None) -> list[tuple[TaskKey, int]]:
    """The tasks of a generation level (or, for ``None``, of the whole viewing pyramid) as
    (representative, count): every tile but those of the last row and column has the same shape,
    so a level has at most four kinds of task. Keeps projections of gigapixel plans instant."""
    if level is not None:
        rows, cols = plan.tile_grid(level)
        return [(TileKey(level, ty, tx), a * b) for ty, a in _classes(rows) for tx, b in _classes(cols)]
    out: list[tuple[TaskKey, int]] = []
    for s in range(1, len(plan.pyramid_shapes)):
        rows, cols = plan.pyramid_grid(s)
        out += [(PyramidKey(s, ty, tx), a * b) for ty, a in _classes(rows) for tx, b in _classes(cols)]
    return out


# ---- schedule: tasks per level, busy workers, time ----------------------------------------------
@dataclass(frozen=True)
class LevelLoad:
    """One wave of a render (a generation level, or the viewing pyramid) on ``workers`` workers."""

    name: str
    tasks: int
    busy: int  # workers that get at least one task
    work_s: float  # sum of the tasks' seconds on one worker
    span_s: float  # list-scheduling estimate of the wave's wall time

    def utilisation(self, workers: int) -> float:
        return self.work_s / (workers * self.span_s) if self.span_s else 1.0


EXPAND_TASKS = 20000  # above this many tasks in a wave, the span comes from a bound, not a simulation


def _span(groups: list[tuple[float, int]], workers: int) -> float:
    """Wall time of independent tasks ((seconds, count) groups) on ``workers`` workers: longest
    first to the least loaded worker (within 4/3 of the best; dynamic scheduling does about as
    well). Waves too large to simulate take the list-scheduling bound total / workers + longest."""
    n = sum(c for _, c in groups)
    longest = max((s for s, c in groups if c), default=0.0)
    if n <= workers:
        return longest
    if n > EXPAND_TASKS:
        return sum(s * c for s, c in groups) / workers + longest * (1 - 1 / workers)
    loads = [0.0] * workers
    for cost, count in sorted(groups, reverse=True):
        for _ in range(count):
            heapq.heapreplace(loads, loads[0] + cost)
    return max(loads)


def schedule(plan: RenderPlan, work: Work, workers: int) -> list[LevelLoad]:
    """Each generation level and the viewing pyramid as a wave of tasks, waves one after another.
    (Levels overlap in a real render, since a tile starts when its sources exist, so this errs
    long.)"""
    out = []
    waves = [(f"level {lv.index}", lv.index) for lv in plan.levels] + [("viewing pyramid", None)]
    for name, level in waves:
        groups = [(work.seconds(k), n) for k, n in task_groups(plan, level)]
        n = sum(c for _, c in groups)
        if n:
            out.append(LevelLoad(name, n, min(workers, n), sum(s * c for s, c in groups), _span(groups, workers)))
    return out


@dataclass(frozen=True)
class Estimate:
    seconds: float  # projected wall time of the tasks (start-up not included)
    work_s: float  # total task seconds on one worker
    levels: tuple[LevelLoad, ...]
    workers: int
    throughput: Throughput

    @property
    def utilisation(self) -> float:
        return self.work_s / (self.workers * self.seconds) if self.seconds else 1.0


def estimate(
    plan: RenderPlan, sr: SRConfig, base: BaseConfig, *, workers: int, throughput: Throughput, shared_machine: bool = False
) -> Estimate:
    """Projected time of a render on ``workers`` workers. ``throughput`` is one worker's; with
    ``shared_machine`` (local workers on one machine) the workers split its cores, so each
    computes at rate / workers."""
    workers = max(1, workers)
    per_worker = throughput.with_rate(throughput.macs_per_s / workers, throughput.source) if shared_machine else throughput
    levels = tuple(schedule(plan, Work(plan, sr, base, per_worker), workers))
    return Estimate(sum(lv.span_s for lv in levels), sum(lv.work_s for lv in levels), levels, workers, throughput)


# ---- the automatic tile -----------------------------------------------------------------------
MIN_AUTO_TILE = 512  # smaller tiles pay more per-task cost than they gain in balance
MAX_AUTO_TILE = 16384
MAX_COMPUTE_OVERHEAD = 4.0  # never let halos more than quadruple the SR arithmetic
TILE_SLACK = 0.10  # among tiles this close to the best score, the smallest (more tasks: better balance)


@dataclass(frozen=True)
class TileChoice:
    tile: int
    workers: int
    worker_memory: int
    task_peak: int  # projected memory of a task at this tile
    seconds: float  # projected wall time (reference throughput), for comparing tiles
    reason: str


def _plan_for(width: int, height: int, base: BaseConfig, sr: SRConfig, tile: int, chunk: int, halo: int | str) -> RenderPlan:
    return RenderPlan.create(width, height, base=base, sr=sr, tile=tile, halo=halo, chunk=chunk)


def choose_tile(
    width: int,
    height: int,
    *,
    base: BaseConfig,
    sr: SRConfig,
    chunk: int,
    workers: int,
    worker_memory: int,
    device: str = "cpu",
    halo: int | str = "exact",
    shared_machine: bool = False,
) -> TileChoice:
    """The tile side for a render on ``workers`` workers of ``worker_memory`` bytes each.

    Every candidate (a multiple of ``chunk`` from ``MIN_AUTO_TILE`` up to the last level's long
    side) whose projected task memory fits the worker and whose halos cost at most
    ``MAX_COMPUTE_OVERHEAD`` x the bare arithmetic is scored by its projected wall time plus its
    total work per worker (time the user waits + machine time paid for). The smallest tile
    within ``TILE_SLACK`` of the best score wins: more tasks per worker balance better, absorb
    slow or lost workers and show finer progress, at nearly no cost. Pure arithmetic."""
    workers = max(1, workers)
    mem = memory_model(device)
    thr = reference_throughput(device)
    top = _plan_for(width, height, base, sr, 0, chunk, halo).levels[-1]
    longest = max(top.stored_height, top.stored_width)
    hi = min(MAX_AUTO_TILE, -(-longest // chunk) * chunk)
    lo = min(hi, -(-MIN_AUTO_TILE // chunk) * chunk)
    scored, smallest_fit = [], None
    for tile in range(lo, hi + 1, chunk):
        plan = _plan_for(width, height, base, sr, tile, chunk, halo)
        peak = mem.task_peak(plan, sr, base)
        if peak > worker_memory:
            break  # larger tiles need more
        smallest_fit = smallest_fit or (tile, peak)
        work = Work(plan, sr, base, thr)
        if work.compute_overhead() > MAX_COMPUTE_OVERHEAD and tile < hi:
            continue
        est = estimate(plan, sr, base, workers=workers, throughput=thr, shared_machine=shared_machine)
        scored.append((est.seconds + est.work_s / workers, tile, peak, est.seconds))
    if not scored:
        if smallest_fit is None:
            tile = lo
            plan = _plan_for(width, height, base, sr, tile, chunk, halo)
            return TileChoice(
                tile, workers, worker_memory, mem.task_peak(plan, sr, base), float("nan"), "no tile fits the worker's memory"
            )
        tile, peak = smallest_fit
        return TileChoice(
            tile,
            workers,
            worker_memory,
            peak,
            float("nan"),
            "the largest halo overhead allowed needs more memory than a worker has",
        )
    best = min(s for s, *_ in scored)
    score, tile, peak, seconds = min((t for t in scored if t[0] <= best * (1 + TILE_SLACK)), key=lambda t: t[1])
    return TileChoice(
        tile, workers, worker_memory, peak, seconds, f"sized for {workers} worker(s) of {worker_memory / GiB:.1f} GiB"
    )
