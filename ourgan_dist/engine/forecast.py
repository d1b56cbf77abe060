"""The dry run's forecast: load per worker, halo overhead, memory per task, store size and time,
from the plan's arithmetic (``projection.py``) and a short probe of the SR network's speed on
this machine."""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..planning import projection

if TYPE_CHECKING:
    from .render import Prepared

PROBE_MACS = 2e9  # arithmetic of one probe run: a fraction of a second on a laptop CPU
HUGE_STORE, HUGE_SECONDS, HUGE_PIXELS = 50 << 30, 2 * 3600, 4e9  # past any of these, the plan warns first
# Renders' SR tiles did this many times the probe's MACs per second (benchmarks/plan_calibration.py:
# 4.6 GMAC/s for 2 workers of the cpu preset, the probe 1.4-3 on the same busy machine): the probe's
# small image uses the CPU less well than a tile's window.
PROBE_TO_RENDER = 2.0


def probe_macs_per_s(net, sr, device: str = "cpu", precision: str = "fp32") -> tuple[float, float]:
    """(MACs per second, seconds of the timed run) of the SR network ``net`` (config ``sr``) on a
    small image on ``device``: the best of two runs after a warm-up on a smaller one."""
    import torch

    gpu = device.startswith("cuda")
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision] if gpu else torch.float32
    if gpu:
        import copy

        net = copy.deepcopy(net).to(device, dtype)  # the driver's model stays as the local executor expects it
    per_px = projection.sr_macs_per_pixel(sr)
    side = int(min(160, max(16, math.sqrt(PROBE_MACS / per_px))))
    gen = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        best = float("inf")
        for i, s in enumerate((16, side, side)):  # a small warm-up (kernels, caches), then the best of two runs
            x = torch.rand(1, 3, s, s, generator=gen).to(device if gpu else "cpu", dtype)
            if gpu:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            net(x)
            if gpu:
                torch.cuda.synchronize()
            if i:
                best = min(best, time.perf_counter() - t0)
    return per_px * side * side / best, best


def measure_throughput(p: Prepared) -> projection.Throughput:
    """One worker's speed for the time estimate: the SR network run on a small image on this
    machine (the CPU, or its GPU for --device cuda), with the recorded per-pixel I/O costs. For
    --device cuda on a machine without a GPU, the rate measured on an H200."""
    import torch

    r = p.request
    ref = projection.reference_throughput(r.device, r.precision)
    gpu = r.device.startswith("cuda")
    if gpu and not torch.cuda.is_available():
        return ref
    rate, took = probe_macs_per_s(p.model.sr, p.model.config.sr, r.device, r.precision)
    rate *= 1.0 if gpu else PROBE_TO_RENDER
    where = "GPU" if gpu else f"CPU ({torch.get_num_threads()} threads)"
    return ref.with_rate(
        rate,
        f"measured now: a {took:.2f} s probe of the SR network on this machine's {where}, "
        f"{rate / 1e9:.1f} GMAC/s; I/O per pixel as recorded",
    )


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

    estimate: projection.Estimate
    store: tuple[int, int]  # bytes: image + viewing pyramid, generation levels
    lines: tuple[str, ...]
    warning: str | None  # a request big enough that the user should look before it runs


def forecast(p: Prepared, throughput: projection.Throughput | None = None, probe: bool = True) -> Forecast:
    """The dry run's projections: tasks per level and busy workers, halo overhead, memory per task,
    store size and time. ``throughput`` defaults to a probe on this machine (``measure_throughput``),
    or without ``probe`` to the recorded (CPU) or assumed (GPU) rate."""
    r, plan, cfg = p.request, p.plan, p.model.config
    thr = throughput or (measure_throughput(p) if probe else projection.reference_throughput(r.device, r.precision))
    local_cpu = r.address is None and r.device == "cpu"
    est = projection.estimate(plan, cfg.sr, cfg.base, workers=p.workers, throughput=thr, shared_machine=local_cpu)
    work = projection.Work(plan, cfg.sr, cfg.base, thr)
    mem = projection.memory_model(r.device)
    image, gen = projection.store_bytes(plan)
    where = (
        "local, sharing this machine's CPUs"
        if local_cpu
        else "GPUs"
        if r.device.startswith("cuda")
        else "Ray workers; time assumes each is as fast as this machine"
    )
    lines = [f"load on {p.workers} worker(s){'' if p.workers_known else ' (assumed; pass --workers)'} ({where}):"]
    for lv in est.levels:
        lines.append(
            f"  {lv.name}: {lv.tasks} task(s), {lv.busy}/{p.workers} worker(s) busy, "
            f"{100 * lv.utilisation(p.workers):.0f}% utilised, {duration(lv.span_s)}"
        )
    lines.append(
        f"  whole render: {100 * est.utilisation:.0f}% utilisation (levels run one after another here; in a "
        "render they overlap, so this errs low)"
    )
    lines.append(
        f"halo overhead: {100 * (work.compute_overhead() - 1):.0f}% extra SR arithmetic, "
        f"{100 * (plan.halo_overhead() - 1):.0f}% extra source pixels read"
    )
    act = mem.counted(plan, cfg.sr, cfg.base)
    budget = f"{size_text(p.worker_memory)} per {'GPU' if r.device.startswith('cuda') else 'worker'}" + (
        "" if p.memory_known else " (assumed)"
    )
    lines.append(
        f"projected memory per task: {p.projected_task_bytes / 2**20:.0f} MiB peak per worker, of {budget} "
        f"[{size_text(mem.runtime_bytes)} runtime + weights + {mem.factor:g} x {act / 2**20:.0f} MiB counted "
        f"for the largest task; {mem.source}]"
    )
    lines.append(
        f"store on disk: about {size_text(image + gen)} (image and viewing pyramid {size_text(image)}, "
        f"generation levels {size_text(gen)}; compression as measured on a demo render)"
    )
    line = f"time: about {duration(est.seconds)} of tasks, plus start-up [{thr.source}]"
    if r.device == "cpu" and thr is not projection.CPU_REFERENCE:  # the probe is noisy on a busy machine: show both
        ref = projection.estimate(
            plan, cfg.sr, cfg.base, workers=p.workers, throughput=projection.CPU_REFERENCE, shared_machine=local_cpu
        )
        line += f"; at the rate recorded on the project's busy 2-core CPU: {duration(ref.seconds)}"
    lines.append(line)
    warning = None
    if image + gen >= HUGE_STORE or est.seconds >= HUGE_SECONDS or plan.width * plan.height >= HUGE_PIXELS:
        warning = (
            f"--size {plan.width}x{plan.height} is {plan.width * plan.height / 1e9:.1f} gigapixels: about "
            f"{size_text(image + gen)} on disk and about {duration(est.seconds)} on {p.workers} worker(s)"
        )
        free = _free_bytes(r.out)
        if free is not None and free < image + gen:
            warning += f"; the disk at --out has only {size_text(free)} free"
    return Forecast(est, (image, gen), tuple(lines), warning)


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
