"""Storage requests a resume makes to read a store's completion records, on S3.

Starts moto's S3 server on 127.0.0.1 with a counting loopback proxy in front of it
(``tests/s3proxy.py``), creates the store of a plan (metadata only, no pixels), records every
generation-level task as done (a render killed before its viewing pyramid), then counts the HTTP
requests of: opening the store, ``Canvas.done()`` (one listing of ``progress/``), and, for
comparison, reading every record chunk as ourgan-dist did before records were listed.

    python benchmarks/resume_requests.py                       # 40960x24576 (1 gigapixel), tile 256
    python benchmarks/resume_requests.py --size 16384x10912 --tile 1024
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from collections import Counter

import fsspec
import numpy as np


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="40960x24576")
    ap.add_argument("--tile", type=int, default=256)
    ap.add_argument("--chunk", type=int, default=256)
    ap.add_argument("--base-width", type=int, default=256, help="the model's base width (sets the levels)")
    a = ap.parse_args()

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))
    from moto.server import ThreadedMotoServer
    from s3proxy import FaultProxy  # test scaffolding: a loopback proxy that sees every request

    from ourgan_dist.store.canvas import Canvas, plan_to_info
    from ourgan_dist.planning.plan import RenderPlan, choose_levels, parse_size

    width, height = parse_size(a.size)
    n_sr, bh, bw = choose_levels(width, height, a.base_width)
    plan = RenderPlan(
        width=width, height=height, n_sr=n_sr, base_height=bh, base_width=bw, tile=a.tile, halo=0, receptive_radius=0, chunk=a.chunk
    )
    tasks = plan.n_tiles + sum(1 for _ in plan.all_pyramid_tasks())

    import logging

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        os.environ.setdefault(k, "testing")
    direct = {"endpoint_url": f"http://127.0.0.1:{port}", "key": "testing", "secret": "testing"}
    proxy, seen = FaultProxy(direct["endpoint_url"]), []
    proxy.fail = lambda method, path: seen.append((method, path)) and False
    counted = dict(direct, endpoint_url=proxy.url, skip_instance_cache=True)
    try:
        fsspec.filesystem("s3", **direct).mkdir("bench")
        url = "s3://bench/resume.zarr"
        info = {
            "name": "bench",
            "model": "(none)",
            "model_id": "none",
            "model_preset": "none",
            "seed": 0,
            "size": [width, height],
            "plan": plan_to_info(plan),
            "exact": True,
            "precision": "fp32",
        }
        t = time.perf_counter()
        c = Canvas.create(url, plan, info, direct)
        for lv in plan.levels:
            c.array(f"progress/L{lv.index}")[:] = np.ones(plan.tile_grid(lv.index), np.uint8)
        print(
            f"{plan!r}: {tasks} tasks, {plan.n_tiles} recorded done (pyramid not started); "
            f"records written in {time.perf_counter() - t:.0f} s",
            file=sys.stderr,
        )

        seen.clear()
        resumed = Canvas(url, counted)
        opened = len(seen)
        seen.clear()
        t = time.perf_counter()
        done = resumed.done()
        listed, listed_s = len(seen), time.perf_counter() - t
        assert len(done) == plan.n_tiles

        seen.clear()
        t = time.perf_counter()
        old = 0
        for lv in plan.levels:  # the per-record reads of store format 1's resume
            old += int(np.count_nonzero(resumed.array(f"progress/L{lv.index}")[:]))
        for s in range(1, len(plan.pyramid_shapes)):
            old += int(np.count_nonzero(resumed.array(f"progress/P{s}")[:]))
        per_record, per_record_s = len(seen), time.perf_counter() - t
        kinds = Counter(m for m, _ in seen)
        assert old == plan.n_tiles
    finally:
        proxy.close()
        server.stop()
    print(f"plan {a.size}, tile {a.tile}, chunk {a.chunk}: {tasks} tasks, {plan.n_tiles} records")
    print(f"  open the store:                    {opened} requests")
    print(f"  done() by listing progress/:       {listed} requests ({listed_s:.2f} s)")
    print(
        f"  reading every record (format 1):   {per_record} requests ({per_record_s:.1f} s; "
        + ", ".join(f"{n} {m}" for m, n in kinds.most_common())
        + ")"
    )


if __name__ == "__main__":
    main()
