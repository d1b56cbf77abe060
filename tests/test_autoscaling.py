"""A render on an autoscaling Ray cluster that starts with no worker nodes: Ray's fake multi-node
provider runs a real autoscaler that starts and stops nodes on this machine. The render asks the
autoscaler for its workers instead of refusing, starts as the nodes arrive, and gives the bytes of
a local render; a shape no node type can hold fails within the deadline, resumably."""

from __future__ import annotations

import time

import pytest
import ray

from helpers import arrays, assert_same_arrays, autoscaling_cluster, do_render
from ourgan_dist.engine.executors.dispatch import RenderStalled
from ourgan_dist.engine.executors.ray import RayExecutor
from ourgan_dist.engine.render import RenderRequest, prepare, render

pytestmark = [pytest.mark.cluster, pytest.mark.slow]  # a head plus nodes started on demand: about a minute

SIZE, CHUNK, TILE = "300x200", 16, 48
NODE_TYPES = {"cpu1": {"resources": {"CPU": 1, "object_store_memory": 200 << 20}, "min_workers": 0, "max_workers": 2}}


def worker_nodes() -> list[str]:
    return [n["NodeID"] for n in ray.nodes() if n["Alive"] and n["Resources"].get("CPU", 0) > 0]


def test_render_waits_for_the_autoscaler_and_equals_the_local_render(tiny_model, tmp_path):
    reference = str(tmp_path / "ref.zarr")
    do_render(tiny_model, reference, SIZE, tile=0, chunk=CHUNK)  # in-process, each level untiled
    out = str(tmp_path / "auto.zarr")
    with autoscaling_cluster(tmp_path, NODE_TYPES):
        assert worker_nodes() == []  # min_workers 0: nothing to run on yet

        # no node type holds a 4-CPU worker: no worker is ever placed, and the render says so in time
        p = prepare(RenderRequest(model=tiny_model, out=out, size=SIZE, tile=TILE, chunk=CHUNK, workers=2))
        t0 = time.monotonic()
        with pytest.raises(
            RenderStalled,
            match=r"no live Ray worker for \d+ s: none of the 2 worker\(s\) of "
            r"\{CPU: 4\} asked for has started .*its autoscaler started none",
        ):
            render(p, executor=RayExecutor(workers=2, cpus_per_worker=4, no_worker_timeout_s=5))
        assert time.monotonic() - t0 < 60 and worker_nodes() == []

        # the same render resumed with workers that fit: the autoscaler starts a node for each; a
        # render this small can end on the first before the second has joined (seen once in CI)
        p = prepare(RenderRequest(model=tiny_model, out=out, size=SIZE, tile=TILE, chunk=CHUNK, workers=2, resume=True))
        t0 = time.monotonic()
        s = render(p, executor=RayExecutor(workers=2))
        took = time.monotonic() - t0
        started = worker_nodes()
        assert 1 <= len(started) <= 2 and all(n.startswith("ffff") for n in started)  # the fake provider's nodes
        ran = {r.worker for r in s.reports}
        assert ran <= {"worker-0", "worker-1"} and s.tasks_run == len(s.reports)
        assert len(ran) <= len(started)  # a 1-CPU worker a node: as many workers ran as nodes started, at most
        assert_same_arrays(arrays(out), arrays(reference))

        # the request is withdrawn at the end: idle nodes go after the idle timeout (6 s)
        deadline = time.monotonic() + 90
        while worker_nodes() and time.monotonic() < deadline:
            time.sleep(1)
        assert worker_nodes() == [], "the autoscaler kept the render's nodes after it ended"
    print(f"render on autoscaled nodes: {took:.1f} s")
