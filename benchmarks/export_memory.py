"""Peak memory of exports at 4K, 16K and one gigapixel.

Builds synthetic render stores (``tests/synthetic.py``: the real store layout, a cheap
pattern instead of a model, so no render is needed) and exports each in a fresh Python process,
which reports its own peak resident set size: ``VmHWM`` from /proc/self/status, which starts
afresh at exec (``ru_maxrss`` is printed too, but on Linux it carries the forking parent's peak
across exec, so it is not the export's own figure). Prints a table and
writes it as JSON. The memory goal: the largest peak at most 1.25x the smallest, per format.

    nice -n 10 python benchmarks/export_memory.py --dir /tmp/export-bench
    python benchmarks/export_memory.py --sizes 4096x2730 --formats tif   # a quick look
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time

SIZES = {"4K": "4096x2730", "16K": "16384x10912", "1 Gpx": "38912x25856"}
FORMATS = {  # name: (file suffix, compression)
    "tif": (".tif", "deflate"),
    "tif-jpeg": (".tif", "jpeg"),
    "dzi": (".dzi", "jpeg"),
    "png": (".png", None),
}

CHILD = r"""
import json, resource, sys, time
from ourgan_dist.engine.allocator import bound_allocator
from ourgan_dist.outputs.export import export
bound_allocator()  # as `ourgan-dist export` does in its own process
url, out, comp = sys.argv[1], sys.argv[2], (sys.argv[3] or None)
t = time.perf_counter()
export(url, out, compression=comp, progress=False)
seconds = time.perf_counter() - t
hwm = next((int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:")), 0)
print(json.dumps({"seconds": seconds, "ru_maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "vmhwm_mib": hwm / 1024}))
"""


def parse_size(size: str) -> tuple[int, int]:
    """``WIDTHxHEIGHT`` -> (width, height), positive integers; anything else is refused."""
    parts = size.strip().lower().split("x")
    if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise SystemExit(f"--sizes: {size!r} is not WIDTHxHEIGHT (e.g. 4096x2730)")
    return int(parts[0]), int(parts[1])


def ensure_store(directory: str, size: str) -> str:
    from ourgan_dist.store.canvas import Canvas

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))
    from synthetic import write_synthetic_store  # test scaffolding: the store layout with a cheap pattern

    width, height = parse_size(size)
    url = os.path.join(directory, f"store-{size}.zarr")
    if Canvas.is_render_store(url) and Canvas(url).complete:
        return url
    Canvas.delete(url)
    t = time.perf_counter()
    write_synthetic_store(url, width, height, chunk=256)
    print(f"wrote synthetic store {size} in {time.perf_counter() - t:.0f} s", file=sys.stderr)
    return url


def measure(url: str, out: str, compression: str | None) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHILD, url, out, compression or ""], capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"export of {url} to {out} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", default="/tmp/ourgan-export-bench", help="where stores and exports go")
    ap.add_argument("--sizes", default=",".join(SIZES.values()), help="WxH,WxH,...")
    ap.add_argument("--formats", default="tif,tif-jpeg,dzi,png", help=f"some of {','.join(FORMATS)}")
    ap.add_argument("--json", default=None, help="write the results here (default DIR/export_memory.json)")
    args = ap.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    sizes = args.sizes.split(",")
    for size in sizes:
        parse_size(size)  # refuse a bad size before any store is written
    results = []
    for size in sizes:
        url = ensure_store(args.dir, size)
        for fmt in args.formats.split(","):
            suffix, comp = FORMATS[fmt]
            out = os.path.join(args.dir, f"export-{size}-{fmt}{suffix}")
            r = dict(size=size, megapixels=round(math.prod(parse_size(size)) / 1e6, 1), format=fmt, **measure(url, out, comp))
            results.append(r)
            print(f"{size:>12} {fmt:>9}: peak RSS (VmHWM) {r['vmhwm_mib']:7.1f} MiB in {r['seconds']:6.1f} s", flush=True)
            if fmt == "dzi":
                import shutil

                shutil.rmtree(out[:-4] + "_files", ignore_errors=True)
            if os.path.exists(out):
                os.remove(out)
    print("\nratio largest/smallest peak RSS per format:")
    for fmt in args.formats.split(","):
        peaks = [r["vmhwm_mib"] for r in results if r["format"] == fmt]
        print(f"  {fmt:>9}: {max(peaks) / min(peaks):.2f}  ({min(peaks):.1f} -> {max(peaks):.1f} MiB)")
    with open(args.json or os.path.join(args.dir, "export_memory.json"), "w") as f:
        json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
