"""Faults on a real Ray cluster: a worker process killed mid-render and a node removed
mid-render; Ray restarts or replaces the actor, retries its tasks, and the bytes are identical.

Marked cluster (a 1024x683 render each on a cluster of up to four nodes): the default suite has both
faults at a smaller size on a two-node cluster in tests/test_ray_scheduling.py."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from helpers import actor_pids, arrays, assert_same_arrays, do_render, local_cluster

pytestmark = pytest.mark.cluster

SIZE = "1024x683"


@pytest.fixture(scope="module")
def reference(tiny_model, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("ref") / "ref.zarr")
    do_render(tiny_model, out, SIZE, tile=0, seed=2)
    return arrays(out)


@pytest.fixture(scope="module")
def cluster():
    # the head runs no workers, so every worker lives on a node that can be taken away
    with local_cluster(0, [2]) as c:
        yield c


def _render_in_thread(model, out, **kw):
    box = {}

    def go():
        try:
            box["summary"] = do_render(model, out, SIZE, tile=32, seed=2, workers=2, **kw)
        except BaseException as e:  # surfaced by the test
            box["error"] = e

    t = threading.Thread(target=go)
    t.start()
    return t, box


def _wait_done(out, n, timeout=120):
    from ourgan_dist.store.canvas import Canvas

    t0 = time.time()
    while time.time() - t0 < timeout:
        try:
            if len(Canvas(out).done()) >= n:
                return
        except Exception:
            pass
        time.sleep(0.05)
    raise AssertionError("no progress")


def test_killed_worker_process_is_restarted_and_bytes_are_identical(cluster, tiny_model, reference, tmp_path):
    out = str(tmp_path / "w.zarr")
    t, box = _render_in_thread(tiny_model, out)
    _wait_done(out, 80)
    pids = actor_pids(cluster, "_TileActor")
    assert pids, "no worker actor process found"
    os.kill(pids[0], signal.SIGKILL)
    t.join(timeout=300)
    assert "error" not in box, box.get("error")
    assert_same_arrays(arrays(out), reference)


def _actor_nodes():
    """Node ids hosting live worker actors (from the GCS actor table; no dashboard needed)."""
    from ray._private import state

    return {
        info["Address"]["NodeID"]
        for info in state.actors().values()
        if info["ActorClassName"].endswith("_TileActor") and info["State"] == "ALIVE"
    }


def test_removed_node_mid_render_and_bytes_are_identical(cluster, tiny_model, reference, tmp_path):
    import ray

    for _ in range(2):  # room for both workers after one node is gone
        cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1")
    cluster.wait_for_nodes()
    assert len([n for n in ray.nodes() if n["Alive"]]) == 4
    out = str(tmp_path / "n.zarr")
    t, box = _render_in_thread(tiny_model, out)
    _wait_done(out, 80)
    hosts = _actor_nodes()
    victim = next(n for n in cluster.worker_nodes if n.node_id in hosts)  # a node running a worker
    cluster.remove_node(victim)
    t.join(timeout=300)
    assert "error" not in box, box.get("error")
    workers = {r.worker for r in box["summary"].reports}
    assert workers == {"worker-0", "worker-1"}
    assert_same_arrays(arrays(out), reference)
