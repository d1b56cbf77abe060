"""Tile plans of the paper preset on GPU clusters: what `render --tile auto --device cuda` picks for
a 16K image and a gigapixel on 8, 32 and 100 GPUs of 80 GB, with tasks per level, expected
utilisation, halo overhead and projected memory per task; and the same for the old fixed 4096 px
tile. Pure arithmetic (``ourgan_dist/planning/projection.py``): no model, GPU or cluster needed.

    python benchmarks/gpu_plans.py [--sizes 16384x12288,36864x27648] [--gpus 8,32,100] [--memory-gb 80]

Utilisation weighs tasks by the planner's cost model, in which the GPU rate is assumed (no GPU
was measured), but only the ratio of arithmetic to per-pixel I/O depends on it.
"""

from __future__ import annotations

import argparse

from ourgan_dist.planning import footprint
from ourgan_dist.planning import projection as pj
from ourgan_dist.config import preset
from ourgan_dist.models.sr_architecture import sr_architecture
from ourgan_dist.planning.plan import RenderPlan, parse_size


def row(size: str, gpus: int, tile: int | None, memory: int, cfg) -> str:
    w, h = parse_size(size)
    how = "auto"
    if tile is None:
        tile = pj.choose_tile(w, h, base=cfg.base, sr=cfg.sr, chunk=256, workers=gpus, worker_memory=memory, device="cuda").tile
    else:
        how = "fixed"
    plan = RenderPlan.create(w, h, base=cfg.base, sr=cfg.sr, tile=tile)
    est = pj.estimate(plan, cfg.sr, cfg.base, workers=gpus, throughput=pj.GPU_REFERENCE)
    work = pj.Work(plan, cfg.sr, cfg.base, pj.GPU_REFERENCE)
    sr_levels = [lv for lv in est.levels if lv.name.startswith("level ") and lv.name != "level 0"]
    tasks = " / ".join(str(lv.tasks) for lv in sr_levels)
    last = sr_levels[-1]
    peak = footprint.GPU_MEMORY.task_peak(plan, cfg.sr, cfg.base)
    return (
        f"| {size} | {gpus} | {tile} ({how}) | {tasks} | {last.busy}/{gpus}, {100 * last.utilisation(gpus):.0f}% | "
        f"{100 * est.utilisation:.0f}% | {100 * (work.compute_overhead() - 1):.0f}% | "
        f"{peak / 2**30:.1f} GiB |"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="16384x12288,36864x27648")
    ap.add_argument("--gpus", default="8,32,100")
    ap.add_argument("--memory-gb", type=float, default=80, help="GPU memory per worker, GB (10^9 bytes)")
    ap.add_argument("--preset", default="paper")
    args = ap.parse_args()
    cfg = preset(args.preset)
    memory = int(args.memory_gb * 1e9)
    print(f"preset {args.preset} (receptive field {sr_architecture(cfg.sr).receptive_radius} px), {args.memory_gb:g} GB per GPU")
    print(
        "| size | GPUs | tile | tasks per SR level | last level: busy GPUs, utilisation | whole render utilisation | "
        "halo overhead (SR arithmetic) | projected memory per task |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for size in args.sizes.split(","):
        for gpus in (int(g) for g in args.gpus.split(",")):
            print(row(size, gpus, None, memory, cfg))
        for gpus in (int(g) for g in args.gpus.split(",")):
            print(row(size, gpus, 4096, memory, cfg))


if __name__ == "__main__":
    main()
