"""A render on this machine's CUDA GPU: time per level, peak GPU memory against the plan's
projection, and (optionally) pictures to look at.

    python benchmarks/gpu_render.py MODEL --size 16384x12288 --precision fp16,bf16 \\
        --out /tmp/r.zarr --pictures /tmp/pics

For each precision the store at --out is rendered afresh by one in-process worker (the local
executor, the same ``TileWorker`` a Ray actor runs). Peak memory is PyTorch's allocator peak
(``max_memory_allocated``: tensors) and its reserve (``max_memory_reserved``: what the GPU gave
the process, the figure to compare with a card's memory), read after the render. --pictures writes
the whole image shrunk to 2048 px wide and 1:1 crops of the last level beside a bicubic x4 of
the level below (what the last SR level read), from the last precision's store.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

CROPS = ((0.3, 0.35), (0.5, 0.6), (0.75, 0.85))  # relative positions of the 1:1 crops


def level_seconds(summary) -> dict[str, float]:
    """Seconds from the first start to the last end of each level's tasks (the pyramid as one)."""
    spans: dict[str, list[float]] = {}
    for r in summary.reports:
        name = f"L{r.key.level}" if hasattr(r.key, "level") else "pyramid"
        s = spans.setdefault(name, [r.start, r.end])
        s[0], s[1] = min(s[0], r.start), max(s[1], r.end)
    return {k: round(v[1] - v[0], 2) for k, v in sorted(spans.items())}


def render_once(model: str, out: str, size: str, precision: str, tile: int | None, seed: int, device: str = "cuda") -> dict:
    import torch

    from ourgan_dist.engine.render import RenderRequest, prepare, render

    gpu = device == "cuda"
    p = prepare(
        RenderRequest(model=model, out=out, size=size, seed=seed, tile=tile, device=device, precision=precision, overwrite=True)
    )
    if gpu:
        torch.cuda.synchronize()
        torch.cuda.empty_cache()  # an earlier precision's cached blocks would count in this one's reserve
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    t_start = time.perf_counter()

    def progress(report, done: int, total: int) -> None:  # a line per task: a run cut short still says how far
        print(
            f"  {report.key} {report.end - report.start:.2f} s ({done}/{total}, {time.perf_counter() - t_start:.1f} s)", flush=True
        )

    summary = render(p, on_progress=progress)
    if gpu:
        torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    tasks = [r for r in summary.reports]
    return {
        "precision": precision,
        "size": size,
        "tile": p.plan.tile,
        "levels": [f"{lv.width}x{lv.height}" for lv in p.plan.levels],
        "tasks": len(tasks),
        "wall_s": round(wall, 2),
        "task_span_s": round(max(r.end for r in tasks) - min(r.start for r in tasks), 2),
        "level_s": level_seconds(summary),
        "peak_allocated_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if gpu else None,
        "peak_reserved_gib": round(torch.cuda.max_memory_reserved() / 2**30, 2) if gpu else None,
        "projected_task_gib": round(p.projected_task_bytes / 2**30, 2),
        "worker_memory_gib": round(p.worker_memory / 2**30, 1),
    }


def _rgb(a) -> "object":
    import numpy as np

    a = np.asarray(a)
    if a.dtype != np.uint8:  # generation levels: float in [-1, 1]
        a = np.clip(np.round((a.astype(np.float32) + 1) * 127.5), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(a.transpose(1, 2, 0))


def pictures(store: str, where: str, crop: int = 512) -> list[str]:
    """The whole view (2048 px wide) and a montage of 1:1 crops: [last level | bicubic x4 of the
    level below], one row per position in CROPS."""
    import numpy as np
    from PIL import Image

    from ourgan_dist.store.canvas import Canvas
    from ourgan_dist.planning.geometry import Box

    os.makedirs(where, exist_ok=True)
    c = Canvas(store)
    plan = c.plan
    shapes = plan.pyramid_shapes
    scale = min(range(len(shapes)), key=lambda s: abs(shapes[s][1] - 2048))
    h, w = shapes[scale]
    whole = Image.fromarray(_rgb(c.read(str(scale), Box(0, h, 0, w))))
    written = [os.path.join(where, "whole.jpg")]
    whole.save(written[0], quality=90)
    last = plan.final_level
    below = c.level_array_name(last - 1)
    H, W = shapes[0]
    rows = []
    for fx, fy in CROPS:
        y0 = (int(fy * (H - crop)) // 4) * 4
        x0 = (int(fx * (W - crop)) // 4) * 4
        sr = _rgb(c.read("0", Box(y0, y0 + crop, x0, x0 + crop)))
        low = Image.fromarray(_rgb(c.read(below, Box(y0 // 4, (y0 + crop) // 4, x0 // 4, (x0 + crop) // 4))))
        bic = np.asarray(low.resize((crop, crop), Image.BICUBIC))
        rows.append(np.concatenate([sr, np.full((crop, 8, 3), 255, np.uint8), bic], 1))
    gap = np.full((8, rows[0].shape[1], 3), 255, np.uint8)
    montage = rows[0]
    for r in rows[1:]:
        montage = np.concatenate([montage, gap, r], 0)
    written.append(os.path.join(where, "crops.png"))
    Image.fromarray(montage).save(written[1])
    return written


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--size", default="16384x12288")
    ap.add_argument("--precision", default="fp16", help="comma-separated: fp32, fp16, bf16")
    ap.add_argument("--tile", type=int, default=None, help="output px a side (default: auto; 0: untiled)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True, help="the store (rendered afresh for each precision)")
    ap.add_argument("--pictures", default=None, help="folder for whole.jpg and crops.png")
    ap.add_argument("--json", default=None, help="also write the results here")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"], help="cpu: to try the script without a GPU")
    a = ap.parse_args()

    import torch

    if a.device == "cuda":
        if not torch.cuda.is_available():
            sys.exit("gpu_render: no CUDA GPU visible here")
        props = torch.cuda.get_device_properties(0)
        gpu = f"{props.name}, {props.total_memory / 2**30:.1f} GiB"
    else:
        gpu = "none (cpu)"
    print(f"GPU: {gpu}; torch {torch.__version__}", flush=True)
    results = []
    for precision in a.precision.split(","):
        r = render_once(a.model, a.out, a.size, precision.strip(), a.tile, a.seed, a.device)
        results.append(r)
        print(json.dumps(r), flush=True)
    print("\n| precision | size | tile | tasks | wall s | per level s | peak allocated | peak reserved | projected task |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        lv = ", ".join(f"{k} {v}" for k, v in r["level_s"].items())
        print(
            f"| {r['precision']} | {r['size']} | {r['tile']} | {r['tasks']} | {r['wall_s']} | {lv} | "
            f"{r['peak_allocated_gib']} GiB | {r['peak_reserved_gib']} GiB | {r['projected_task_gib']} GiB |"
        )
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"gpu": gpu, "torch": torch.__version__, "results": results}, f, indent=1)
    if a.pictures:
        for path in pictures(a.out, a.pictures):
            print(f"wrote {path}")


if __name__ == "__main__":
    main()
