"""Parallel efficiency of the Ray executor (issue 4: goal >= 0.9).

    python benchmarks/parallel_efficiency.py [--size 2048x1366] [--tile 512] [--workers 2] [--repeat 2]

efficiency = T(untiled, one process, torch using every core) / T(tiled, N Ray workers with
cores/N torch threads each), the same cpu-preset network and size. Runs alternate so that
machine load affects both alike; the best of each is reported, as whole-render wall time (Ray
start-up of the workers included) and as task span (first task start to last task end). The
bytes of both results are compared.
"""

from __future__ import annotations

import argparse
import os
import tempfile

import numpy as np

from common import machine, make_model, render_once, start_local_ray, task_span


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--size", default="2048x1366")
    ap.add_argument("--tile", type=int, default=512)
    ap.add_argument("--chunk", type=int, default=256)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()

    import torch
    import zarr

    from ourgan_dist.engine.executors.local import LocalExecutor
    from ourgan_dist.engine.executors.ray import RayExecutor

    cores = os.cpu_count() or 1
    torch.set_num_threads(cores)  # the untiled reference uses the whole machine
    tmp = tempfile.mkdtemp(prefix="ourgan-eff-")
    model = make_model(args.preset, tmp)
    start_local_ray(cores)
    print(
        f"{machine()}\npreset {args.preset}, size {args.size}; untiled: 1 process x {cores} threads; "
        f"tiled {args.tile}: {args.workers} Ray workers x {max(1, cores // args.workers)} thread(s)"
    )
    best = {"untiled": (float("inf"), float("inf")), "ray": (float("inf"), float("inf"))}
    outs = {}
    for rep in range(args.repeat):
        for what in ("untiled", "ray"):
            out = os.path.join(tmp, f"{what}.zarr")
            if what == "untiled":
                wall, s = render_once(model, out, args.size, 0, args.chunk, LocalExecutor())
            else:
                wall, s = render_once(model, out, args.size, args.tile, args.chunk, RayExecutor(workers=args.workers))
            span = task_span(s)
            best[what] = (min(best[what][0], wall), min(best[what][1], span))
            outs[what] = out
            print(f"  run {rep}: {what:>7}: wall {wall:6.2f} s, task span {span:6.2f} s, {len(s.reports)} tasks", flush=True)
    same = np.array_equal(zarr.open_group(outs["untiled"])["0"][:], zarr.open_group(outs["ray"])["0"][:])
    (uw, us), (rw, rs) = best["untiled"], best["ray"]
    print(
        f"parallel efficiency (wall) = {uw:.2f} / {rw:.2f} = {uw / rw:.3f}; "
        f"(task span) = {us:.2f} / {rs:.2f} = {us / rs:.3f}; identical bytes: {same}; {machine()}"
    )
    raise SystemExit(0 if same else 1)


if __name__ == "__main__":
    main()
