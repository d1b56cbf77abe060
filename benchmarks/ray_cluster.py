"""The Ray executor on a real multi-node cluster on this machine (``ray.cluster_utils``).

    python benchmarks/ray_cluster.py [--nodes 6] [--size 4096x2730] [--tile 64]

Starts a head with no CPUs and ``--nodes`` worker nodes of one CPU each (separate raylets,
object stores and worker processes, all on 127.0.0.1), renders the tiny preset with small tiles
into a local directory with one owner actor per node, and reports: tasks, tasks per second over
the task span and the whole render, the driver's CPU per task, and the fraction of the span the
workers sit idle (1 - summed task time / (workers x span)). On a machine with fewer cores than
nodes the workers share cores, so compute per task grows with the node count; the driver's CPU
per task and the idle fraction are the scheduler's figures.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from common import machine, make_model, render_once, task_span


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=6)
    ap.add_argument("--size", default="4096x2730")
    ap.add_argument("--tile", type=int, default=64)
    args = ap.parse_args()

    # every Ray process on loopback (see DESIGN.md), as the tests do
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray
    from ray.cluster_utils import Cluster

    from ourgan_dist.engine.executors.ray import RayExecutor

    tmp = tempfile.mkdtemp(prefix="ourgan-cluster-")
    model = make_model("tiny", tmp)
    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False, "node_ip_address": "127.0.0.1"}
    )
    try:
        for _ in range(args.nodes):
            cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1")
        ray.init(address=cluster.address, log_to_driver=False)
        cpu0 = time.process_time()
        wall, s = render_once(model, os.path.join(tmp, "r.zarr"), args.size, args.tile, args.tile, RayExecutor(workers=args.nodes))
        driver_cpu = time.process_time() - cpu0
    finally:
        ray.shutdown()
        cluster.shutdown()
    n, span = len(s.reports), task_span(s)
    busy = sum(r.end - r.start for r in s.reports)
    workers = len({r.worker for r in s.reports})
    idle = 1 - busy / (args.nodes * span)
    print(
        f"{machine()}\n{args.nodes} nodes x 1 CPU, tiny preset, {args.size}, tile {args.tile}: {n} tasks on "
        f"{workers} workers; {n / span:.0f} tasks/s over the task span ({span:.1f} s), {n / wall:.0f} tasks/s "
        f"over the whole render ({wall:.1f} s); driver {1000 * driver_cpu / n:.2f} ms CPU per task; workers "
        f"idle {100 * idle:.0f}% of the span ({1000 * busy / n:.1f} ms per task)"
    )


if __name__ == "__main__":
    main()
