"""Tiled vs untiled render time, one process, the same model and size (issue: goal <= 1.10).

    python benchmarks/tiled_vs_untiled.py [--model DIR] [--size 4096x2730] [--tile auto] [--repeat 2]

Without --model, an untrained cpu-preset model is made (render cost does not depend on the
weights). Renders alternate untiled (--tile 0) and tiled so that machine load affects both alike;
the best time of each is reported with the ratio tiled / untiled and a check that the bytes match.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model")
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--size", default="4096x2730")
    ap.add_argument("--tile", default="auto")
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()

    import torch
    import zarr

    from common import untrained_model
    from ourgan_dist.models import checkpoint
    from ourgan_dist.models.sr_architecture import sr_architecture
    from ourgan_dist.engine.render import RenderRequest, prepare, render

    tmp = tempfile.mkdtemp(prefix="ourgan-bench-")
    model = args.model
    if model is None:
        model = os.path.join(tmp, "model")
        checkpoint.save(untrained_model(args.preset), model, {"note": "untrained SR, benchmark"})
    cfg = checkpoint.load(model).config
    tile = (
        prepare(RenderRequest(model=model, out=os.path.join(tmp, "plan.zarr"), size=args.size)).plan.tile
        if args.tile == "auto"
        else int(args.tile)
    )  # auto: what `render --tile auto` picks here
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; preset {cfg.preset}, receptive field "
        f"{sr_architecture(cfg.sr).receptive_radius}; size {args.size}; tile {tile}"
    )
    best = {0: float("inf"), tile: float("inf")}
    outs = {}
    for rep in range(args.repeat):
        for t in (0, tile):
            out = os.path.join(tmp, f"r{t}-{rep}.zarr")
            p = prepare(RenderRequest(model=model, out=out, size=args.size, tile=t, seed=1))
            t0 = time.perf_counter()
            render(p)
            dt = time.perf_counter() - t0
            best[t] = min(best[t], dt)
            outs[t] = out
            print(f"  run {rep}: tile {t or 'untiled':>7}: {dt:7.2f} s ({p.plan.n_tiles} generation tasks)", flush=True)
    same = np.array_equal(zarr.open_group(outs[0])["0"][:], zarr.open_group(outs[tile])["0"][:])
    print(
        f"untiled {best[0]:.2f} s, tiled {best[tile]:.2f} s, ratio tiled/untiled = {best[tile] / best[0]:.3f}; "
        f"identical bytes: {same}"
    )
    sys.exit(0 if same else 1)


if __name__ == "__main__":
    main()
