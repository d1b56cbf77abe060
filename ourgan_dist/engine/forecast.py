"""The dry run's forecast: load per worker, halo overhead, memory per task, store size and one
time with a range, from the plan's arithmetic (``projection.py``), a probe that times a real SR
tile of the plan on this machine, and the patch base's recorded times.

What a render's wall time is made of, and where each part comes from:

- start-up: the driver's Ray (local workers) and every worker loading the model: recorded on the
  idle machine, stretched by this machine's load;
- the base: the patch base runs on one CPU thread (on GPU workers too), and its time grows with
  base pixels in a way its MACs do not capture (memory-bound searches): recorded on this project's
  CPU at a few base sizes, scaled by how fast the probe runs here against the same probe there
  (a GPU render: at the recorded rate); a GAN base is convolutions, so its MACs at the probe's rate;
- the SR levels and the viewing pyramid: every task's MACs (``projection.Work``) at the probe's
  rate for one worker, with the store I/O per pixel as recorded beside the reference rate and
  scaled with the probe's (``projection.cpu_throughput``), scheduled on the workers.

The range is the probe's own run-to-run spread widened by how far forecasts missed measured
renders in ``benchmarks/forecast_vs_actual.py``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..planning import footprint, projection

if TYPE_CHECKING:
    from .render import Prepared

HUGE_STORE, HUGE_SECONDS, HUGE_PIXELS = 50 << 30, 2 * 3600, 4e9  # past any of these, the plan warns first

# The probe: one interior tile of the render's last SR level (cut to a smaller tile of the same
# network and halo when a whole one would take long), timed until it has run for PROBE_MIN_S.
PROBE_RUN_S = 0.5  # each timed run lasts about this long
PROBE_MIN_S = 1.0  # the timed runs together, at least: short runs on a busy machine mislead
PROBE_WARMUP_TILE = 64  # output px: the untimed first run (kernels, caches) that sizes the timed ones

# Recorded by benchmarks/forecast_vs_actual.py --base on this project's 2-core CPU: the demo
# model's patch base (one thread) at a few base sizes, (base pixels, seconds), while the probe
# ran one thread at BASE_PROBE_RATE MACs/s. Between and beyond the points: linear in pixels.
BASE_SECONDS = ((256 * 160, 2.8), (512 * 320, 4.3), (1024 * 640, 18.4), (1024 * 768, 22.5))
BASE_PROBE_RATE = 19.5e9
# The probe's MACs/s depend on what it times: a guided first level (models/guided_detail.py) runs
# at 1.86 x an SR level's MACs/s (37.5 against 20.2 GMAC/s, one thread, the same idle minute), so
# a probe of a guided level is compared with this rate, not BASE_PROBE_RATE.
GUIDED_PROBE_RATE = 1.86 * BASE_PROBE_RATE
# Start-up and shut-down around the tasks on the idle machine (load under 1 on 2 cores), recorded
# by the same benchmark: the in-process worker loads the model (about 3 s in all); local Ray starts
# and each actor imports torch and loads the model (7.9-8.9 s). On the busy machine (load 5-8)
# Ray's took 18-26 s: the forecast stretches these by the load per core when it is above 1.
STARTUP_S = {"in-process": 3.0, "ray": 9.0}
# The range's ends, beyond the probe's own spread: renders of the benchmark took 0.69-1.38 x the
# forecast on this project's 2-core machine, whose load (other jobs) moved between 2 and 9 while
# they ran; a probe of a second sees only the load of its second.
BAND_LOW, BAND_HIGH = 0.65, 1.5
# Without a probe (a real run prints its plan too), one thread's rate as the probe measured it on
# this project's 2-core CPU: 5.7-18.4 GMAC/s as its load moved from 9 to 2 (projection.CPU_REFERENCE's
# rate, 5 GMAC/s for two workers together, was recorded at load 13-17).
RECORDED_THREAD_RATE = 12e9


@dataclass(frozen=True)
class Probe:
    """A real SR task of the plan timed on this machine: the rate the time forecast uses."""

    tile: int  # output px side of the timed tile
    level: int
    macs: int  # of one timed run (projection.Work's count for that tile)
    runs: tuple[float, ...]  # seconds of each timed run
    threads: int  # torch threads it ran on (CPU)
    device: str

    @property
    def seconds(self) -> float:
        return sum(self.runs)

    @property
    def macs_per_s(self) -> float:
        return self.macs * len(self.runs) / self.seconds

    def describe(self) -> str:
        where = "GPU" if self.device.startswith("cuda") else f"CPU, {self.threads} thread(s)"
        return (
            f"measured now: a {self.seconds:.1f} s probe ({len(self.runs)} runs of a {self.tile} px tile of level {self.level}, "
            f"{self.macs / 1e9:.1f} GMAC each) on this machine's {where}: {self.macs_per_s / 1e9:.1f} GMAC/s"
        )


def probe_tile(p: Prepared, threads: int | None = None, min_s: float | None = None) -> Probe | None:
    """Time the SR step of an interior tile of the render's last level (``tile.sr_core``, what a
    worker runs, on a source of the window's size) on ``threads`` torch threads (CPU) or the GPU
    of --device cuda. A tile that would run longer than ``PROBE_RUN_S`` is replaced by a smaller
    tile of the same network and halo; runs repeat until they add up to ``min_s`` (default
    ``PROBE_MIN_S``). None when the plan has no SR level."""
    import numpy as np
    import torch

    from ..planning.plan import RenderPlan, TileKey, chunk_for_tile
    from .tile import guided_levels, sr_core

    r, plan, cfg = p.request, p.plan, p.model.config
    level = plan.final_level
    if level == 0:
        return None
    top = plan.levels[level]
    cap = min(plan.tile or max(top.stored_height, top.stored_width), max(top.stored_height, top.stored_width))
    gpu = r.device.startswith("cuda")
    model, dtype = p.model, torch.float32
    if gpu:
        import copy

        dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[r.precision]
        model = copy.deepcopy(model).to(r.device)  # the driver's model stays as the local executor expects it
        model.sr.to(dtype)
    rng = np.random.default_rng(0)

    def task(side: int) -> tuple[RenderPlan, TileKey]:
        tp = (
            plan
            if side == cap
            else RenderPlan.create(
                plan.width, plan.height, base=cfg.base, sr=cfg.sr, tile=side, halo=plan.halo, chunk=chunk_for_tile(side)
            )
        )
        rows, cols = tp.tile_grid(level)
        return tp, TileKey(level, min(1, rows - 1), min(1, cols - 1))

    def run(side: int) -> float:
        tp, key = task(side)
        window = tp.source_window(key)
        x = rng.uniform(-1, 1, (3, window.height, window.width)).astype(np.float32)
        field = None
        if level == 1 and guided_levels(model):  # the guided detail reads the base's correspondence
            rows, cols = np.mgrid[window.y0 : window.y1, window.x0 : window.x1]
            field = np.stack([rows, cols]).astype(np.int16)
        t0 = time.perf_counter()
        sr_core(model, tp, level, tp.core(key), window, x, r.seed, r.device, dtype, field)
        return time.perf_counter() - t0

    def macs(side: int) -> int:
        tp, key = task(side)
        return projection.Work(tp, cfg.sr, cfg.base).macs(key)

    before = torch.get_num_threads()
    if threads and not gpu:
        torch.set_num_threads(threads)
    try:
        warm = min(cap, PROBE_WARMUP_TILE)
        run(warm)  # kernels, caches, the GPU's context
        rate = macs(warm) / run(warm)
        sides = [s for s in range(PROBE_WARMUP_TILE, cap, PROBE_WARMUP_TILE)] + [cap]
        side = max((s for s in sides if macs(s) <= rate * PROBE_RUN_S), default=warm)
        runs: list[float] = []
        least = PROBE_MIN_S if min_s is None else min_s
        while len(runs) < 2 or sum(runs) < least:
            runs.append(run(side))
        return Probe(side, level, macs(side), tuple(runs), torch.get_num_threads(), r.device)
    finally:
        torch.set_num_threads(before)


def worker_threads(p: Prepared) -> tuple[int, float]:
    """(torch threads of one worker, the share of a core each of them gets). Local Ray workers
    split this machine's CPUs as ``capacity.size_workers`` does (more workers than cores share
    them); the in-process worker, and a cluster's workers (assumed like this machine), use
    torch's default."""
    import torch

    cores = os.cpu_count() or 1
    if p.request.address is None and p.workers > 1:
        threads = max(1, max(cores, p.workers) // p.workers)
        return threads, min(1.0, cores / (p.workers * threads))
    return torch.get_num_threads(), 1.0


def base_seconds(pixels: int, thread_rate: float, guided: bool = False) -> float:
    """The patch base's time for a base of ``pixels`` on one thread of ``thread_rate`` MACs/s (as
    the probe measures it; ``guided``: a probe of a guided first level): ``BASE_SECONDS``
    interpolated linearly, scaled from the rate the same probe ran at when they were recorded."""
    pts = sorted(BASE_SECONDS)
    if pixels <= pts[0][0]:
        at = pts[0][1]
    else:
        (p0, s0), (p1, s1) = next(((a, b) for a, b in zip(pts, pts[1:]) if pixels <= b[0]), (pts[-2], pts[-1]))
        at = s0 + (s1 - s0) * (pixels - p0) / (p1 - p0)
    return at * (GUIDED_PROBE_RATE if guided else BASE_PROBE_RATE) / thread_rate


@dataclass(frozen=True)
class TimeForecast:
    """The render's wall time from start-up to its last task, with a range, and what it rests on."""

    seconds: float
    low: float
    high: float
    startup_s: float
    base_s: float
    sr_s: float  # the SR levels, one after another
    pyramid_s: float
    basis: str

    def line(self) -> str:
        return (
            f"time: about {duration(self.seconds)} ({duration(self.low)} to {duration(self.high)}): start-up "
            f"{duration(self.startup_s)}, base {duration(self.base_s)}, SR {duration(self.sr_s)}, viewing pyramid "
            f"{duration(self.pyramid_s)} [{self.basis}]"
        )


def forecast_time(p: Prepared, probe: Probe | None, thread_probe: Probe | None = None) -> tuple[TimeForecast, projection.Estimate]:
    """One time with a range for the whole render, from ``probe`` (None: the rate recorded on this
    project's CPU, or the GPU reference) and ``thread_probe`` (one thread: the patch base's rate,
    and the least a worker of several threads does; default: the probe's rate per thread).
    Returns it with the per-level schedule it sums."""
    r, plan, cfg = p.request, p.plan, p.model.config
    gpu = r.device.startswith("cuda")
    threads, share = worker_threads(p) if not gpu else (1, 1.0)
    ref = projection.reference_throughput(r.device, r.precision)
    spread_lo = spread_hi = 1.0
    if probe is not None:
        rate, basis = probe.macs_per_s * share, probe.describe()
        if thread_probe is not None and thread_probe.macs_per_s * share > rate:
            # several threads are never slower than one over a render; over a probe's second, on a
            # machine with more runnable threads than cores, they can be (their barriers wait)
            rate = thread_probe.macs_per_s * share
            basis += f", under one thread's {thread_probe.macs_per_s / 1e9:.1f}: the worker's rate taken as one thread's"
        mean = probe.seconds / len(probe.runs)
        spread_lo, spread_hi = min(probe.runs) / mean, max(probe.runs) / mean
        if share < 1:
            basis += f"; {p.workers} workers share {os.cpu_count()} cores"
    elif gpu:
        rate, basis = ref.macs_per_s, ref.source
    else:
        rate = RECORDED_THREAD_RATE * threads * share
        basis = f"no probe: {RECORDED_THREAD_RATE / 1e9:.0f} GMAC/s per thread as probed on this project's 2-core CPU"
    thr = ref.with_rate(rate, basis) if gpu else projection.cpu_throughput(rate, basis)
    est = projection.estimate(plan, cfg.sr, cfg.base, workers=p.workers, throughput=thr)
    spans = {lv.name: lv.span_s for lv in est.levels}
    if cfg.base.kind == "patches":  # on one CPU thread, whatever the device the SR levels run on
        if thread_probe is not None:
            one = thread_probe.macs_per_s
            basis += f"; the patch base's recorded times, at {one / 1e9:.1f} GMAC/s probed on one thread"
        elif gpu:
            one = RECORDED_THREAD_RATE
            basis += "; the patch base (one CPU thread of the GPU's host) at this project's recorded CPU times"
        else:
            one = rate / threads / share
            basis += "; the patch base's recorded times on one thread, at the probe's speed per thread"
        guided = probe is not None and footprint.guided_level(cfg.sr, cfg.base, probe.level)
        base_s = base_seconds(plan.base_height * plan.base_width, one, guided)
    else:
        base_s = spans.get("level 0", 0.0)
    pyramid_s = spans.get("viewing pyramid", 0.0)
    sr_s = sum(s for name, s in spans.items() if name not in ("level 0", "viewing pyramid"))
    startup_s = STARTUP_S["in-process" if p.workers == 1 and r.address is None else "ray"]
    cores = os.cpu_count() or 1
    if r.address is None and (busy := os.getloadavg()[0]) > cores:
        startup_s *= busy / cores  # processes start on the cores other work leaves
        if not gpu:
            basis += f"; this machine is busy (load {busy:.1f} on {cores} cores): the time moves with its load"
    total = startup_s + base_s + sr_s + pyramid_s
    t = TimeForecast(total, total * BAND_LOW * spread_lo, total * BAND_HIGH * spread_hi, startup_s, base_s, sr_s, pyramid_s, basis)
    return t, est


def duration(seconds: float) -> str:
    """45 s, 8 min 20 s, 3 h 05 min, 2.1 days."""
    if seconds != seconds:
        return "unknown"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"
    if seconds < 48 * 3600:
        return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"
    return f"{seconds / 86400:.1f} days"


def size_text(n: float) -> str:
    for unit, k in (("TiB", 40), ("GiB", 30), ("MiB", 20)):
        if n >= 1 << k:
            return f"{n / (1 << k):.{0 if k == 20 else 1}f} {unit}"
    return f"{n / 1024:.0f} KiB"


@dataclass(frozen=True)
class Forecast:
    """What the plan projects for this request, and the lines that say so."""

    estimate: projection.Estimate  # the SR levels' and viewing pyramid's schedule on the workers
    time: TimeForecast
    store: tuple[int, int]  # bytes: image + viewing pyramid, generation levels
    lines: tuple[str, ...]
    warning: str | None  # a request big enough that the user should look before it runs


def forecast(p: Prepared, probe: bool = True) -> Forecast:
    """The dry run's projections: tasks per level and busy workers, halo overhead, memory per task,
    store size and one time with a range. ``probe``: time a real tile on this machine first
    (``probe_tile``, about a second; a GPU render without a local GPU uses the reference rate);
    without it, the recorded rates."""
    import torch

    r, plan, cfg = p.request, p.plan, p.model.config
    gpu = r.device.startswith("cuda")
    measured = one_thread = None
    if probe and (not gpu or torch.cuda.is_available()):
        threads = worker_threads(p)[0]
        measured = probe_tile(p, None if gpu else threads)
        if not gpu and threads > 1 and measured is not None:
            one_thread = probe_tile(p, 1, PROBE_MIN_S / 2)  # the patch base's thread, and a floor for the worker's
    t, est = forecast_time(p, measured, one_thread)
    local_cpu = r.address is None and not gpu
    work = projection.Work(plan, cfg.sr, cfg.base, est.throughput)
    mem = footprint.memory_model(r.device)
    image, gen = footprint.store_bytes(plan)
    where = (
        "local, sharing this machine's CPUs"
        if local_cpu
        else "GPUs"
        if gpu
        else "Ray workers; time assumes each is as fast as this machine"
    )
    lines = [f"load on {p.workers} worker(s){'' if p.workers_known else ' (assumed; pass --workers)'} ({where}):"]
    for lv in est.levels:
        if lv.name == "level 0":
            lines.append(f"  level 0: 1 task, the base, {duration(t.base_s)}")
            continue
        lines.append(
            f"  {lv.name}: {lv.tasks} task(s), {lv.busy}/{p.workers} worker(s) busy, "
            f"{100 * lv.utilisation(p.workers):.0f}% utilised, {duration(lv.span_s)}"
        )
    lines.append(
        f"  whole render: {100 * est.utilisation:.0f}% utilisation of the workers (levels one after another; "
        "in a render they overlap)"
    )
    lines.append(
        f"halo overhead: {100 * (work.compute_overhead() - 1):.0f}% extra SR arithmetic, "
        f"{100 * (plan.halo_overhead() - 1):.0f}% extra source pixels read"
    )
    act = mem.counted(plan, cfg.sr, cfg.base)
    budget = f"{size_text(p.worker_memory)} per {'GPU' if gpu else 'worker'}" + ("" if p.memory_known else " (assumed)")
    lines.append(
        f"projected memory per task: {p.projected_task_bytes / 2**20:.0f} MiB peak per worker, of {budget} "
        f"[{size_text(mem.runtime_bytes)} runtime + weights + {mem.factor:g} x {act / 2**20:.0f} MiB counted "
        f"for the largest task; {mem.source}]"
    )
    lines.append(
        f"store on disk: about {size_text(image + gen)} (image and viewing pyramid {size_text(image)}, "
        f"generation levels {size_text(gen)}; compression as measured on a demo render)"
    )
    lines.append(t.line())
    warning = None
    if image + gen >= HUGE_STORE or t.seconds >= HUGE_SECONDS or plan.width * plan.height >= HUGE_PIXELS:
        warning = (
            f"--size {plan.width}x{plan.height} is {plan.width * plan.height / 1e9:.1f} gigapixels: about "
            f"{size_text(image + gen)} on disk and about {duration(t.seconds)} on {p.workers} worker(s)"
        )
        free = _free_bytes(r.out)
        if free is not None and free < image + gen:
            warning += f"; the disk at --out has only {size_text(free)} free"
    return Forecast(est, t, (image, gen), tuple(lines), warning)


def _free_bytes(url: str) -> int | None:
    """Free bytes where a local --out would go; None for object storage or when unknown."""
    if "://" in url and not url.startswith("file://"):
        return None
    path = os.path.abspath(url.removeprefix("file://"))
    while path and not os.path.exists(path):
        path = os.path.dirname(path)
    try:
        st = os.statvfs(path or "/")
    except OSError:
        return None
    return st.f_bavail * st.f_frsize
