"""What `render --dry-run` forecasts against what the render then takes: wall time (with the
forecast's range) and each worker's peak memory, for a few sizes and presets.

    python benchmarks/forecast_vs_actual.py                          # demo model, 4096x2560 and 16384x10240, 2 workers
    python benchmarks/forecast_vs_actual.py --runs cpu:4096x2560:1,tiny:4096x2560:2
    python benchmarks/forecast_vs_actual.py --base                   # the patch base's times and the probe's rate

A run is PRESET:SIZE:WORKERS. The cpu preset renders the trained demo model that ships in
``ourgan_dist/data/demo-model``, the tiny preset an untrained model (benchmarks/common.py). For
each run the dry run is the command a user types (`ourgan-dist render ... --dry-run`, a fresh
process), then the render runs in another fresh process (the library's render with the executor
the command would make, so each worker's peak memory can be read). "actual" is that process's
wall time, start to finish, as a user waits for it; the phases come from the tasks' own clocks.

``--base`` times the model's patch base at three base sizes on one thread, with the probe's
one-thread rate before and after: the figures ``forecast.BASE_SECONDS`` and ``BASE_PROBE_RATE``
hold (and how much faster a probe of a guided first level runs: ``GUIDED_PROBE_RATE``). Times
depend on the machine and on everything else it runs: the script prints the load average with
every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

STARTED = time.time()
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DEMO_MODEL = os.path.join(ROOT, "ourgan_dist", "data", "demo-model")
DEFAULT_RUNS = "cpu:4096x2560:2,cpu:16384x10240:2"


def load() -> str:
    return "load " + ", ".join(f"{x:.1f}" for x in os.getloadavg())


def seconds_of(text: str) -> float:
    """Back from forecast.duration: '45 s', '8 min 20 s', '3 h 05 min', '2.1 days'."""
    text = text.strip()
    if text.endswith("days"):
        return float(text.split()[0]) * 86400
    total = 0.0
    for value, unit in re.findall(r"([\d.]+)\s*(h|min|s)\b", text):
        total += float(value) * {"h": 3600, "min": 60, "s": 1}[unit]
    return total


def model_for(preset: str, where: str) -> str:
    if preset == "cpu":
        return DEMO_MODEL
    sys.path.insert(0, HERE)
    from common import make_model

    return make_model(preset, where)


def dry_run(model: str, size: str, workers: int, out: str) -> dict:
    """The command a user types; its time line and memory line, read back."""
    cmd = [sys.executable, "-m", "ourgan_dist.cli", "render", model, "--out", out, "--size", size, "--workers", str(workers)]
    t0 = time.perf_counter()
    res = subprocess.run([*cmd, "--dry-run"], capture_output=True, text=True, check=True)
    took = time.perf_counter() - t0
    line = next(x for x in res.stdout.splitlines() if x.startswith("time: about"))
    m = re.match(r"time: about (.+?) \((.+?) to (.+?)\)", line)
    mem = re.search(r"projected memory per task: (\d+) MiB", res.stdout)
    tile = re.search(r"tile (\d+)", res.stdout)
    return {
        "line": line,
        "seconds": seconds_of(m.group(1)),
        "low": seconds_of(m.group(2)),
        "high": seconds_of(m.group(3)),
        "memory_mib": int(mem.group(1)),
        "tile": int(tile.group(1)) if tile else None,
        "dry_run_s": took,
    }


def one(model: str, size: str, workers: int, out: str) -> dict:
    """Render once in this (fresh) process as the command would; the measurements as JSON data."""
    import resource

    from ourgan_dist.engine.render import RenderRequest, make_executor, prepare, render
    from ourgan_dist.planning.plan import PyramidKey

    req = RenderRequest(model=model, out=out, size=size, workers=workers, overwrite=True)
    p = prepare(req)
    ex = make_executor(req, model=p.model)
    summary = render(p, executor=ex)
    end = time.time()
    reps = summary.reports
    base = [r for r in reps if not isinstance(r.key, PyramidKey) and r.key.level == 0]
    sr = [r for r in reps if not isinstance(r.key, PyramidKey) and r.key.level > 0]
    pyr = [r for r in reps if isinstance(r.key, PyramidKey)]
    peaks = getattr(ex, "worker_peak_rss", None)
    if not peaks:  # the in-process worker is this process
        peaks = [resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024]
    return {
        "startup_s": min(r.start for r in reps) - STARTED,
        "base_s": sum(r.end - r.start for r in base),
        "sr_s": max(r.end for r in sr) - min(r.start for r in sr),
        "pyramid_s": max(r.end for r in pyr) - min(r.start for r in pyr) if pyr else 0.0,
        "tasks_s": max(r.end for r in reps) - min(r.start for r in reps),
        "in_process_s": end - STARTED,
        "peaks_mib": [round(b / 2**20) for b in peaks],
        "tile": p.plan.tile,
    }


def measure(preset: str, size: str, workers: int, where: str) -> dict:
    model = model_for(preset, where)
    out = os.path.join(where, f"{preset}-{size}-{workers}.zarr")
    before = load()
    fc = dry_run(model, size, workers, out)
    t0 = time.perf_counter()
    res = subprocess.run(
        [sys.executable, __file__, "--one", model, size, str(workers), out], capture_output=True, text=True, check=True
    )
    wall = time.perf_counter() - t0
    got = json.loads(res.stdout.strip().splitlines()[-1])
    return {
        "preset": preset,
        "size": size,
        "workers": workers,
        "forecast": fc,
        "actual_s": wall,
        **got,
        "load": f"{before} / {load()}",
    }


def report(r: dict) -> None:
    from ourgan_dist.engine.forecast import duration

    fc = r["forecast"]
    inside = fc["low"] <= r["actual_s"] <= fc["high"]
    print(
        f"{r['preset']} {r['size']} on {r['workers']} worker(s), tile {r['tile']}: forecast {duration(fc['seconds'])} "
        f"({duration(fc['low'])} to {duration(fc['high'])}), actual {duration(r['actual_s'])} "
        f"({r['actual_s'] / fc['seconds']:.2f} x the forecast, {'inside' if inside else 'OUTSIDE'} the range); "
        f"memory forecast {fc['memory_mib']} MiB, worker peaks {r['peaks_mib']} MiB"
    )
    print(
        f"  actual phases: start-up {r['startup_s']:.1f} s, base {r['base_s']:.1f} s, SR {r['sr_s']:.1f} s, "
        f"viewing pyramid {r['pyramid_s']:.1f} s (overlapping the SR), all tasks {r['tasks_s']:.1f} s; {r['load']}"
    )
    print(f"  dry run ({fc['dry_run_s']:.1f} s): {fc['line']}")


def base_times(model: str, sizes=((160, 256), (320, 512), (640, 1024), (768, 1024))) -> None:
    """The patch base on one thread at a few base sizes, between two one-thread probes; then each
    size again in a fresh process, for its memory high-water mark over what the process held
    before (the Python, torch and model baseline), beside ``footprint.base_activation_bytes``."""
    import torch

    from ourgan_dist.engine.forecast import probe_tile
    from ourgan_dist.engine.render import RenderRequest, prepare

    def prepared(size: str):
        return prepare(RenderRequest(model=model, out=os.path.join(tempfile.gettempdir(), "unused.zarr"), size=size, workers=2))

    p = prepared("16384x10240")  # its last level is an SR level (the probe BASE_PROBE_RATE is of)
    rates = [probe_tile(p, threads=1).macs_per_s]
    guided = probe_tile(prepared("4096x2560"), threads=1).macs_per_s  # a guided first level
    print(f"probe of a guided first level / of an SR level, one thread: {guided / rates[0]:.2f} (GUIDED_PROBE_RATE)")
    points = []
    for h, w in sizes:
        t0 = time.perf_counter()
        with torch.inference_mode():
            p.model.base.generate(h, w, 0)
        points.append((h * w, round(time.perf_counter() - t0, 1)))
        print(f"base {w}x{h}: {points[-1][1]} s on one thread; {load()}", flush=True)
    rates.append(probe_tile(p, threads=1).macs_per_s)
    print(f"probe on one thread: {', '.join(f'{r / 1e9:.1f}' for r in rates)} GMAC/s; {load()}")
    print(f"BASE_SECONDS = {tuple(points)}\nBASE_PROBE_RATE = {sum(rates) / len(rates) / 1e9:.1f}e9")
    for h, w in sizes:
        out = subprocess.run([sys.executable, "-c", BASE_MEMORY, model, str(h), str(w)], capture_output=True, text=True, check=True)
        grew, projected = (int(v) for v in out.stdout.split())
        print(f"base {w}x{h}: peak memory +{grew / 2**20:.0f} MiB in a fresh process (counted {projected / 2**20:.0f} MiB)")


BASE_MEMORY = """
import resource, sys
import torch
from ourgan_dist.models import checkpoint
from ourgan_dist.planning.footprint import base_activation_bytes


def high_water():  # this process's own peak: VmHWM restarts at exec, ru_maxrss keeps the parent's
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) * 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


model, h, w = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
m = checkpoint.load(model)
held = high_water()
with torch.inference_mode():
    m.base.generate(h, w, 0)
print(high_water() - held, base_activation_bytes(m.config.base, h, w))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", default=DEFAULT_RUNS, help="PRESET:SIZE:WORKERS, comma-separated")
    ap.add_argument("--base", action="store_true", help="time the demo model's patch base and the one-thread probe")
    ap.add_argument("--save", help="also write the measurements as JSON here")
    ap.add_argument("--one", nargs=4, metavar=("MODEL", "SIZE", "WORKERS", "OUT"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    if a.one:
        model, size, workers, out = a.one
        print(json.dumps(one(model, size, int(workers), out)))
        return
    if a.base:
        base_times(DEMO_MODEL)
        return
    sys.path.insert(0, HERE)
    from common import machine

    print(machine())
    results = []
    with tempfile.TemporaryDirectory() as where:
        for run in a.runs.split(","):
            preset, size, workers = run.split(":")
            results.append(measure(preset, size, int(workers), where))
            report(results[-1])
    if a.save:
        with open(a.save, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
