"""The Ray executor's scheduling on a real two-node cluster with no spare capacity (each node has
one CPU, each of the two workers takes one): a lost node's work finishes on the survivor, a slow
worker does not set the pace, transient worker errors and a failed model load are retried, and a
render that cannot progress says why within its deadline. Stand-in workers are subclasses of the
real actor, so the bytes come from the real renderer."""

from __future__ import annotations

import sys
import threading
import time

import pytest
import ray.cloudpickle

from helpers import actor_pids, arrays, assert_same_arrays, do_render, local_cluster
from ourgan_dist.errors import TileError
from ourgan_dist.engine.executors.dispatch import RenderStalled
from ourgan_dist.engine.executors.ray import RayExecutor, _TileActor

SIZE, CHUNK, SEED = "300x200", 16, 3

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the stand-in workers below travel by value


@pytest.fixture(scope="module")
def cluster():
    with local_cluster(1, [1]) as c:  # 2 CPUs in all: the two workers fill the cluster
        yield c


@pytest.fixture(scope="module")
def reference(tiny_model, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("ref") / "ref.zarr")
    do_render(tiny_model, out, SIZE, tile=0, chunk=CHUNK, seed=SEED)  # in-process, each level untiled
    return arrays(out)


def ray_render(model, out, tile=48, **executor):  # tile 48: 59 tasks
    from ourgan_dist.engine.render import RenderRequest, prepare, render

    p = prepare(RenderRequest(model=model, out=out, size=SIZE, tile=tile, chunk=CHUNK, seed=SEED, workers=2))
    return render(p, executor=RayExecutor(workers=2, **executor))


class Slow(_TileActor):
    """A render that takes long enough to lose a node in the middle of it."""

    def run(self, key, *after):
        time.sleep(0.05)
        return super().run(key, *after)


DELAY = 1.0


class Straggler(_TileActor):
    def run(self, key, *after):
        if self.name == "worker-1":
            time.sleep(DELAY)
        return super().run(key, *after)


class Flaky(_TileActor):
    """Loading the model fails twice (at start-up and on the first task), and the first attempt
    of every third task fails with a dropped connection."""

    def _start(self):
        self.starts = getattr(self, "starts", 0) + 1
        if self.starts <= 2:
            self.init_error = OSError("injected: checkpoint read timed out")
            return
        super()._start()

    def run(self, key, *after):
        self.seen = getattr(self, "seen", set())
        if (7 * key.ty + key.tx) % 3 == 0 and key not in self.seen and self.worker is not None:
            self.seen.add(key)
            raise TileError(key, ConnectionResetError("injected: connection reset by peer"))
        return super().run(key, *after)


class AlwaysTimesOut(_TileActor):
    def run(self, key, *after):
        raise TileError(key, TimeoutError("injected: read timed out"))


class Hangs(_TileActor):
    def run(self, key, *after):
        time.sleep(3600)


class NeverStarts(_TileActor):
    def __init__(self, *args):
        time.sleep(3600)


def _render_in_background(tiny_model, out):
    """A render with slow stand-in actors in a thread: (thread, box) where box gets "summary" or
    "error" when it ends."""
    box: dict = {}

    def go():
        try:
            box["summary"] = ray_render(tiny_model, out, actor=Slow)
        except BaseException as e:  # surfaced by the caller
            box["error"] = e

    t = threading.Thread(target=go)
    t.start()
    return t, box


def _wait_for_tasks(out, n, timeout=120):
    """Until the render at ``out`` has recorded ``n`` finished tasks (or ``timeout`` s)."""
    from ourgan_dist.store.canvas import Canvas

    deadline = time.time() + timeout
    while time.time() < deadline and len(_done(out, Canvas)) < n:
        time.sleep(0.05)


@pytest.mark.slow  # ~10 s; the default suite keeps the killed-worker case below; CI runs it
def test_lost_node_without_spare_capacity_finishes_on_the_survivor(cluster, tiny_model, reference, tmp_path):
    """Every CPU is taken by a worker, so the lost worker cannot be restarted anywhere: its tasks
    must go to the surviving worker, and the bytes equal an undisturbed render's."""
    import ray

    from ourgan_dist.store.canvas import Canvas

    assert ray.cluster_resources()["CPU"] == 2
    out = str(tmp_path / "lost.zarr")
    t, box = _render_in_background(tiny_model, out)
    victim = cluster.worker_nodes and next(iter(cluster.worker_nodes))
    try:
        _wait_for_tasks(out, 15)
        assert len(_done(out, Canvas)) >= 15, "the render made no progress"
        removed = time.time()
        cluster.remove_node(victim)
        t.join(timeout=180)
        assert not t.is_alive(), "the render hangs after losing a node"
        assert "error" not in box, box.get("error")
        reports = box["summary"].reports
        assert len({r.worker for r in reports if r.start > removed + 5}) <= 1  # the loss is seen within seconds
        assert sum(r.start > removed for r in reports) > 10  # and the survivor finished the render
        assert_same_arrays(arrays(out), reference)
    finally:
        t.join(timeout=180)
        cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1")  # room again for the next tests
        cluster.wait_for_nodes()


def test_killed_worker_process_is_restarted_and_bytes_are_identical(cluster, tiny_model, reference, tmp_path):
    """A worker's process SIGKILLed mid-render: Ray restarts the actor in the CPU it freed, its
    tasks are retried, and the bytes equal an undisturbed render's. (At a larger size, and with a
    node removed, on a four-node cluster: tests/test_ray_faults.py, with the slow tests.)"""
    import os
    import signal

    from ourgan_dist.store.canvas import Canvas

    out = str(tmp_path / "killed.zarr")
    t, box = _render_in_background(tiny_model, out)
    try:
        _wait_for_tasks(out, 15)
        assert len(_done(out, Canvas)) >= 15, "the render made no progress"
        pids = actor_pids(cluster, "Slow")
        assert pids, "no worker actor process found on the cluster"
        os.kill(pids[0], signal.SIGKILL)
        t.join(timeout=180)
        assert not t.is_alive(), "the render hangs after losing a worker process"
        assert "error" not in box, box.get("error")
        assert len(_done(out, Canvas)) == box["summary"].tasks_run
        assert_same_arrays(arrays(out), reference)
    finally:
        t.join(timeout=180)


def _done(out, Canvas):
    try:
        return Canvas(out).done()
    except Exception:  # not created yet
        return set()


@pytest.mark.slow  # ~16 s of a deliberately slow worker; CI runs it
def test_a_straggler_does_not_set_the_pace(cluster, tiny_model, reference, tmp_path):
    out = str(tmp_path / "straggler.zarr")
    s = ray_render(tiny_model, out, actor=Straggler)
    # with static bands worker-1 would run the tasks it owns, and sleep through each of them
    owned = sum(s.plan.owner(r.key, 2) == 1 for r in s.reports)
    span = max(r.end for r in s.reports) - min(r.start for r in s.reports)
    ran = sum(r.worker == "worker-1" for r in s.reports)
    assert span < 0.6 * DELAY * owned and ran < owned / 2, (span, owned, ran)
    assert_same_arrays(arrays(out), reference)


def test_transient_errors_and_a_failed_model_load_are_retried(cluster, tiny_model, reference, tmp_path):
    out = str(tmp_path / "flaky.zarr")
    s = ray_render(tiny_model, out, actor=Flaky)
    assert len(s.reports) == s.tasks_run  # one report per task, retries not double counted
    assert_same_arrays(arrays(out), reference)


def test_retries_are_bounded_and_the_error_keeps_its_key(cluster, tiny_model, tmp_path):
    with pytest.raises(TileError) as err:
        ray_render(tiny_model, str(tmp_path / "timeouts.zarr"), actor=AlwaysTimesOut)
    assert str(err.value.key) == "L0/0.0" and isinstance(err.value.cause, TimeoutError)
    assert "4 attempts" in err.value.__notes__


def test_a_hanging_worker_is_reported_within_the_stall_timeout(cluster, tiny_model, tmp_path):
    t0 = time.monotonic()
    with pytest.raises(RenderStalled, match=r"no task finished in \d+ s \(\d+ running, e.g. L0/0.0 on worker-\d"):
        ray_render(tiny_model, str(tmp_path / "hang.zarr"), actor=Hangs, stall_timeout_s=3)
    assert time.monotonic() - t0 < 30


def test_workers_that_never_start_are_reported_within_the_deadline(cluster, tiny_model, tmp_path):
    t0 = time.monotonic()
    with pytest.raises(RenderStalled, match="no live Ray worker for"):
        ray_render(tiny_model, str(tmp_path / "none.zarr"), actor=NeverStarts, no_worker_timeout_s=3)
    assert time.monotonic() - t0 < 30
