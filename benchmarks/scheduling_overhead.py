"""Scheduling overhead: tasks per second the Ray driver sustains when the network is trivial.

    python benchmarks/scheduling_overhead.py [--size 2048x1366] [--tile 64] [--workers 2]

The tiny preset with small tiles makes each task a few milliseconds of compute plus its store
reads and writes (a local directory), so the rate is bounded by scheduling and I/O. Reported:
tasks/s over the task span and over the whole render, the workers' mean time per task, and the
driver's own CPU time per task (submitting, waiting, progress).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from common import machine, make_model, render_once, start_local_ray, task_span


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="2048x1366")
    ap.add_argument("--tile", type=int, default=64)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()

    from ourgan_dist.engine.executors.ray import RayExecutor

    tmp = tempfile.mkdtemp(prefix="ourgan-sched-")
    model = make_model("tiny", tmp)
    start_local_ray(os.cpu_count() or 1)
    cpu0 = time.process_time()
    wall, s = render_once(model, os.path.join(tmp, "r.zarr"), args.size, args.tile, args.tile, RayExecutor(workers=args.workers))
    driver_cpu = time.process_time() - cpu0
    n, span = len(s.reports), task_span(s)
    busy = sum(r.end - r.start for r in s.reports)
    print(
        f"{machine()}\ntiny preset, {args.size}, tile {args.tile}, {args.workers} workers: {n} tasks; "
        f"{n / span:.0f} tasks/s over the task span ({span:.2f} s), {n / wall:.0f} tasks/s over the whole render "
        f"({wall:.2f} s); a worker spends {1000 * busy / n:.1f} ms per task; the driver {1000 * driver_cpu / n:.2f} "
        f"ms CPU per task"
    )


if __name__ == "__main__":
    main()
