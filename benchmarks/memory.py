"""Peak memory of a Ray worker and of the driver, for a 2K and a 16K render (goal: flat).

    python benchmarks/memory.py [--preset tiny] [--sizes 2048x1366,16384x10922] [--tile 768] [--workers 2]

Each size renders in a fresh driver process (so its peak is its own) with a fresh local Ray; a
worker's peak is its process's ``ru_maxrss`` asked from the actor at the end of the render (the
figure compared across sizes is the largest of the workers'), the driver's is its own. Both
include the Python, torch and Ray baseline (also printed: the peak of a process that has only
imported them and loaded the model).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile


def one(model: str, size: str, tile: int, workers: int, out: str) -> dict:
    from common import render_once, start_local_ray, task_span

    from ourgan_dist.engine.executors.ray import RayExecutor

    start_local_ray(os.cpu_count() or 1)
    ex = RayExecutor(workers=workers)
    wall, s = render_once(model, out, size, tile, 256, ex)
    return {
        "size": size,
        "tasks": len(s.reports),
        "wall_s": round(wall, 1),
        "span_s": round(task_span(s), 1),
        "driver_peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
        "worker_peak_mib": [b // 2**20 for b in ex.worker_peak_rss],
    }


def baseline(model: str) -> int:
    from ourgan_dist.models import checkpoint

    checkpoint.load(model)
    import ray  # noqa: F401

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--sizes", default="2048x1366,16384x10922")
    ap.add_argument("--tile", type=int, default=768)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: render one size in this process
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--baseline", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.baseline:
        print(json.dumps({"baseline_mib": baseline(args.model)}))
        return
    if args.one:
        print(json.dumps(one(args.model, args.one, args.tile, args.workers, args.out)))
        return

    from common import machine, make_model

    tmp = tempfile.mkdtemp(prefix="ourgan-mem-")
    model = make_model(args.preset, tmp)
    here = os.path.dirname(os.path.abspath(__file__))

    def child(*extra: str) -> dict:
        run = subprocess.run(
            [sys.executable, os.path.join(here, "memory.py"), "--model", model, *extra], capture_output=True, text=True
        )
        if run.returncode:
            sys.exit(f"memory.py {' '.join(extra)} failed (exit {run.returncode}):\n{run.stderr[-3000:]}")
        return json.loads(run.stdout.strip().splitlines()[-1])

    print(
        f"{machine()}\npreset {args.preset}, tile {args.tile}, {args.workers} workers; baseline (python + torch + "
        f"ray + model): {child('--baseline')['baseline_mib']} MiB"
    )
    sizes, worker_peaks = args.sizes.split(","), []
    for size in sizes:
        r = child(
            "--one", size, "--tile", str(args.tile), "--workers", str(args.workers), "--out", os.path.join(tmp, f"{size}.zarr")
        )
        worker_peaks.append(max(r["worker_peak_mib"], default=0))
        print(
            f"  {size}: {r['tasks']} tasks in {r['wall_s']} s; driver peak {r['driver_peak_mib']} MiB; worker peak "
            f"{worker_peaks[-1]} MiB (each worker: {r['worker_peak_mib']} MiB)",
            flush=True,
        )
        subprocess.run(["rm", "-rf", os.path.join(tmp, f"{size}.zarr")], check=False)
    if len(worker_peaks) > 1 and worker_peaks[0]:
        print(f"worker peak {sizes[-1]} / {sizes[0]}: x{worker_peaks[-1] / worker_peaks[0]:.2f} (goal: flat, <= x1.10)")


if __name__ == "__main__":
    main()
