"""What the planner projects against what a render measures: worker peak memory, task times,
render time and store size, for a few sizes and tiles of the tiny and cpu presets.

    python benchmarks/plan_calibration.py                      # measure the default runs, print the table
    python benchmarks/plan_calibration.py --runs cpu:4096x2730:1024,tiny:4096x2730:512 --workers 2
    python benchmarks/plan_calibration.py --save runs.json     # keep the measurements ...
    python benchmarks/plan_calibration.py --load runs.json     # ... and print them against the current planner

Each run renders in a fresh driver process with a fresh local Ray (``--workers`` actors), so every
worker's ``ru_maxrss`` is its own. The cpu preset renders the trained demo model that ships in
``ourgan_dist/data/demo-model`` (its store compresses like a real render), the tiny preset an
untrained model. After the table, the script fits the constants the planner uses
(``ourgan_dist/planning/projection.py``, ``footprint.py``): memory = runtime + factor x counted activations, and task time =
network MACs / rate + output pixels x I/O time; copy them there when they move.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_RUNS = "tiny:4096x2730:512,tiny:4096x2730:1024,tiny:4096x2730:2048,cpu:4096x2730:512,cpu:4096x2730:1024,cpu:4096x2730:2048"


def _model(preset: str, where: str) -> str:
    if preset == "cpu":
        return os.path.join(os.path.dirname(HERE), "ourgan_dist", "data", "demo-model")
    sys.path.insert(0, HERE)
    from common import make_model

    return make_model(preset, where)


def one(model: str, size: str, tile: int, workers: int, out: str) -> dict:
    """Render once in this process; the measurements as JSON-able data."""
    import resource

    sys.path.insert(0, HERE)
    import ray
    from common import render_once

    from ourgan_dist.engine.executors.ray import RayExecutor
    from ourgan_dist.planning.plan import TileKey

    # address="local": a fresh instance of our own, even when another Ray runs on this machine
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    ray.init(
        address="local",
        num_cpus=os.cpu_count() or 1,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
        _node_ip_address="127.0.0.1",
    )
    ex = RayExecutor(workers=workers)
    wall, s = render_once(model, out, size, tile, 256, ex)
    tasks = [
        [
            "L" if isinstance(r.key, TileKey) else "P",
            getattr(r.key, "level", getattr(r.key, "scale", 0)),
            r.key.ty,
            r.key.tx,
            r.start,
            r.end,
            r.pixels,
        ]
        for r in s.reports
    ]
    store = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(out) for f in fs)
    return {
        "wall_s": wall,
        "worker_peak": ex.worker_peak_rss,
        "tasks": tasks,
        "store_bytes": store,
        "driver_peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }


def measure(runs: list[tuple[str, str, int]], workers: int) -> list[dict]:
    tmp = tempfile.mkdtemp(prefix="ourgan-calib-")
    out = []
    for preset, size, tile in runs:
        model = _model(preset, tmp)
        store = os.path.join(tmp, f"{preset}-{size}-{tile}.zarr")
        cmd = [
            sys.executable,
            os.path.abspath(__file__),
            "--one",
            size,
            "--model",
            model,
            "--tile",
            str(tile),
            "--workers",
            str(workers),
            "--out",
            store,
        ]
        run = subprocess.run(cmd, capture_output=True, text=True)
        if run.returncode:
            raise SystemExit(f"{preset} {size} tile {tile} failed:\n{run.stderr[-3000:]}")
        r = json.loads(run.stdout.strip().splitlines()[-1])
        r.update(preset=preset, size=size, tile=tile, workers=workers, model=model)
        print(
            f"  measured {preset} {size} tile {tile}: {r['wall_s']:.1f} s, worker peaks {[b >> 20 for b in r['worker_peak']]} MiB",
            file=sys.stderr,
            flush=True,
        )
        subprocess.run(["rm", "-rf", store], check=False)
        out.append(r)
    return out


def _key(t):
    from ourgan_dist.planning.plan import PyramidKey, TileKey

    return TileKey(*t[1:4]) if t[0] == "L" else PyramidKey(*t[1:4])


def report(results: list[dict], probe: bool = True) -> None:
    import numpy as np

    from ourgan_dist.planning import footprint, projection
    from ourgan_dist.config import preset as preset_config
    from ourgan_dist.planning.plan import RenderPlan, TileKey, parse_size

    rates = {}
    if probe:  # the dry run's own forecast against actual renders is benchmarks/forecast_vs_actual.py
        print("(the dry run's probe and its forecast against actual renders: benchmarks/forecast_vs_actual.py)")
    print(
        "| preset | size | tile | workers | projected memory per task (largest counted term) | measured worker peak "
        "| projected time of tasks, recorded rate / probe now | measured: tasks (wall) | projected store | measured store |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    fits: dict[str, list] = {}
    mem_rows = []
    for r in results:
        cfg = preset_config(r["preset"])
        w, h = parse_size(r["size"])
        plan = RenderPlan.create(w, h, base=cfg.base, sr=cfg.sr, tile=r["tile"], chunk=256)
        terms = footprint.task_bytes(plan, cfg.sr, cfg.base)
        big = max(terms, key=terms.get)
        mem = footprint.CPU_MEMORY.task_peak(plan, cfg.sr, cfg.base)
        thr = projection.CPU_REFERENCE
        est = projection.estimate(plan, cfg.sr, cfg.base, workers=r["workers"], throughput=thr, shared_machine=True)
        now = (
            ""
            if r["preset"] not in rates
            else " / "
            + str(
                round(
                    projection.estimate(
                        plan,
                        cfg.sr,
                        cfg.base,
                        workers=r["workers"],
                        shared_machine=True,
                        throughput=thr.with_rate(rates[r["preset"]], "probe"),
                    ).seconds
                )
            )
            + " s"
        )
        store = footprint.store_bytes(plan)
        peak = max(r["worker_peak"]) if r["worker_peak"] else 0
        span = max(t[5] for t in r["tasks"]) - min(t[4] for t in r["tasks"])
        mem_rows.append((terms[big], peak))
        print(
            f"| {r['preset']} | {r['size']} | {r['tile']} | {r['workers']} | {mem >> 20} MiB ({big} {terms[big] >> 20}"
            f" MiB) | {peak >> 20} MiB | {est.seconds:.0f} s{now} | {span:.0f} s ({r['wall_s']:.0f} s) | "
            f"{sum(store) / 2**20:.1f} MiB | {r['store_bytes'] / 2**20:.1f} MiB |"
        )
        work = projection.Work(plan, cfg.sr, cfg.base, thr)
        for t in r["tasks"]:
            key = _key(t)
            kind = "tile" if isinstance(key, TileKey) and key.level > 0 else ("base" if isinstance(key, TileKey) else "pyramid")
            fits.setdefault((r["preset"], kind), []).append((work.macs(key), t[6], t[5] - t[4], r["workers"]))
    print()
    acts = np.array([a for a, p in mem_rows if p], float)
    peaks = np.array([p for a, p in mem_rows if p], float)
    if len(acts) >= 2:
        slope, icpt = np.polyfit(acts, peaks, 1)
        print(
            f"worker peak = {icpt / 2**20:.0f} MiB + {slope:.2f} x largest counted term (least squares, {len(acts)} "
            f"runs); residuals {[int(x) >> 20 for x in peaks - (icpt + slope * acts)]} MiB"
        )

    # Task seconds = MACs / rate + output pixels x I/O. Per-task fits are ill-posed (MACs and pixels
    # go together) and noisy on a shared machine, so sum over tasks: a preset whose arithmetic is
    # negligible (tiny) gives the I/O per pixel, the others their MAC rate with that I/O taken off.
    def total(rows, i):
        return float(np.sum(np.array(rows, float)[:, i]))

    tiles = {name: rows for (name, kind), rows in fits.items() if kind == "tile"}
    io = None
    if "tiny" in tiles:
        io = total(tiles["tiny"], 2) / total(tiles["tiny"], 1)
        print(f"SR tile I/O and noise (tiny preset): {io * 1e9:.0f} ns per output pixel")
    for name, rows in sorted(tiles.items()):
        if name == "tiny" or io is None:
            continue
        workers = rows[0][3]
        per_worker = total(rows, 0) / (total(rows, 2) - io * total(rows, 1))
        vs = f", {per_worker * workers / rates[name]:.2f} x the probe now" if name in rates else ""
        print(
            f"{name} SR tiles: {per_worker / 1e9:.2f} GMAC/s per worker, {per_worker * workers / 1e9:.2f} GMAC/s for "
            f"the machine ({int(workers)} workers sharing it{vs})"
        )
    for (name, kind), rows in sorted(fits.items()):
        if kind == "pyramid":
            print(f"{name} viewing pyramid: {total(rows, 2) / total(rows, 1) * 1e9:.0f} ns per pixel written")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", default=DEFAULT_RUNS, help="preset:WxH:tile, comma-separated")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--save", help="write the measurements to this JSON file")
    ap.add_argument("--load", help="print measurements saved earlier instead of measuring (several: comma-separated)")
    ap.add_argument("--no-probe", action="store_true", help="do not probe the SR network's speed on this machine")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: one render in this process
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--tile", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(args.model, args.one, args.tile, args.workers, args.out)))
        return
    if args.load:
        results = []
        for name in args.load.split(","):
            with open(name) as f:
                results += json.load(f)
    else:
        sys.path.insert(0, HERE)
        from common import machine

        print(machine(), file=sys.stderr)
        runs = [(p, s, int(t)) for p, s, t in (r.split(":") for r in args.runs.split(","))]
        results = measure(runs, args.workers)
        if args.save:
            with open(args.save, "w") as f:
                json.dump(results, f)
    report(results, probe=not args.no_probe)


if __name__ == "__main__":
    main()
