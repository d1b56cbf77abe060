"""Driver cost per task of the Ray executor's scheduling loop, from 1k to 25k tasks and 8 to 128
workers, with stand-in actors (no compute, no store):

    python benchmarks/driver_overhead.py                       # the table, simulated actors
    python benchmarks/driver_overhead.py --ray --workers 4 8   # real Ray, no-op actors (a process each)

Default: the executor's real loop (``dispatch.Dispatch``: schedule, submission, result handling) runs
against an in-process stand-in for Ray whose actors take one virtual time unit per task, one
task at a time, starting a task once its input refs exist. Reported: the driver's CPU per task
(building the task graph plus the loop), with the stand-in's own bookkeeping measured and left
out; and how busy the workers were (work / (span x workers) in virtual time, 1.0 = never idle).

``--ray``: the same loop through ``RayExecutor.run`` on a local Ray instance with no-op actors,
so Ray's own per-call cost (``.remote``, ``ray.wait``, ``ray.get``) is included; one process per
worker, so only as many workers as the machine holds.
"""

from __future__ import annotations

import argparse
import heapq
import os
import time
import types

from common import machine

# (width, height, tile, chunk) of tiny-preset renders with about 1k, 5k, 10k and 25k tasks
PLANS = {1_000: (2048, 1366, 64, 64), 5_000: (4608, 3072, 64, 64), 10_000: (6528, 4352, 64, 64), 25_000: (10368, 6912, 64, 64)}


class _Ref:
    __slots__ = ("value", "done", "inputs", "actor")

    def __init__(self, value=None, done=False, inputs=(), actor=None):
        self.value, self.done, self.inputs, self.actor = value, done, inputs, actor


class _Method:
    def __init__(self, fn):
        self.remote = fn


class StandInRay:
    """Actors that run one task at a time (out of order: the first queued task whose inputs
    exist), one virtual time unit each; ``wait`` advances virtual time to the next completion."""

    def __init__(self, workers: int):
        from ray import exceptions

        self.exceptions = exceptions
        self.now, self.events, self.seq, self.cpu = 0.0, [], 0, 0.0
        self.queues: list[list[_Ref]] = [[] for _ in range(workers)]
        self.busy = [False] * workers
        self.waiters: dict[_Ref, set[int]] = {}
        self.work = 0.0
        self.actors = [self._actor(w) for w in range(workers)]

    def _actor(self, w: int):
        def run(key, *inputs):
            t = time.process_time()
            ref = _Ref(value=key, inputs=inputs, actor=w)  # the "report" is the key
            self.queues[w].append(ref)
            for r in inputs:
                if not r.done:
                    self.waiters.setdefault(r, set()).add(w)
            self._start(w)
            self.cpu += time.process_time() - t
            return ref

        return types.SimpleNamespace(run=_Method(run), ping=_Method(lambda: _Ref(True, True)))

    def _start(self, w: int) -> None:
        if self.busy[w]:
            return
        for n, ref in enumerate(self.queues[w]):
            if all(r.done for r in ref.inputs):
                del self.queues[w][n]
                self.busy[w] = True
                self.seq += 1
                heapq.heappush(self.events, (self.now + 1.0, self.seq, ref))
                return

    def _finish(self) -> None:
        self.now, _, ref = heapq.heappop(self.events)
        ref.done, self.busy[ref.actor] = True, False
        self.work += 1.0
        self._start(ref.actor)
        for w in self.waiters.pop(ref, ()):
            self._start(w)

    def wait(self, refs, num_returns=1, timeout=None, **_):
        t = time.process_time()
        ready = [r for r in refs if r.done]
        while not ready and timeout != 0 and self.events:
            self._finish()
            ready = [r for r in refs if r.done]
        self.cpu += time.process_time() - t
        return ready[:num_returns], None

    def get(self, ref):
        return ref.value

    def cancel(self, ref) -> None:
        if not ref.done and ref in self.queues[ref.actor]:
            self.queues[ref.actor].remove(ref)
            ref.done = True


def standin_row(n_tasks: int, workers: int) -> tuple[int, float, float, float]:
    """(tasks, driver CPU ms per task, stand-in CPU ms per task, worker busy fraction)."""
    from ourgan_dist.config import preset
    from ourgan_dist.engine.executors.dispatch import Dispatch
    from ourgan_dist.engine.executors.ray import RayExecutor
    from ourgan_dist.planning.plan import RenderPlan
    from ourgan_dist.engine.render import task_order

    w, h, tile, chunk = PLANS[n_tasks]
    cfg = preset("tiny")
    plan = RenderPlan.create(w, h, base=cfg.base, sr=cfg.sr, tile=tile, chunk=chunk)
    keys = task_order(plan)
    sim = StandInRay(workers)
    ex = RayExecutor(workers=workers)
    ex.actors = sim.actors
    done = []
    t0 = time.process_time()
    Dispatch(ex, plan, keys, done.append, api=sim).run()
    total = time.process_time() - t0
    assert len(done) == len(keys)
    n = len(keys)
    return n, 1000 * (total - sim.cpu) / n, 1000 * sim.cpu / n, sim.work / (sim.now * workers)


def ray_row(n_tasks: int, workers: int) -> tuple[int, float, float]:
    """(tasks, driver CPU ms per task, wall s) through RayExecutor.run with no-op actors."""
    from ourgan_dist.config import preset
    from ourgan_dist.engine.executors.ray import RayExecutor
    from ourgan_dist.planning.plan import RenderPlan
    from ourgan_dist.engine.render import task_order
    from ourgan_dist.engine.tile import RenderJob, TaskReport

    class NoOp:
        def __init__(self, job, name, env):
            self.name = name

        def run(self, key, *inputs):
            t = time.time()
            return TaskReport(key, t, t, 0, self.name)

        def ping(self):
            return self.name

        def peak_rss(self):
            return 0

    w, h, tile, chunk = PLANS[n_tasks]
    cfg = preset("tiny")
    plan = RenderPlan.create(w, h, base=cfg.base, sr=cfg.sr, tile=tile, chunk=chunk)
    keys = task_order(plan)
    done = []
    job = RenderJob(model="unused", store="unused", seed=0)
    t0, c0 = time.perf_counter(), time.process_time()
    RayExecutor(workers=workers, actor=NoOp).run(job, plan, keys, done.append)
    assert len(done) == len(keys)
    return len(keys), 1000 * (time.process_time() - c0) / len(keys), time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", type=int, nargs="+", default=sorted(PLANS), choices=sorted(PLANS))
    ap.add_argument("--workers", type=int, nargs="+", default=[8, 16, 32, 64, 128])
    ap.add_argument("--ray", action="store_true", help="real Ray with no-op actors instead of the stand-in")
    args = ap.parse_args()
    print(machine())
    if args.ray:
        import ray

        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        print("| tasks | workers | driver CPU per task | wall |\n| ---: | ---: | ---: | ---: |")
        for workers in args.workers:
            ray.init(
                num_cpus=workers,
                include_dashboard=False,
                log_to_driver=False,
                configure_logging=False,
                _node_ip_address="127.0.0.1",
            )
            try:
                for target in args.tasks:
                    n, ms, wall = ray_row(target, workers)
                    print(f"| {n} | {workers} | {ms:.3f} ms | {wall:.1f} s |", flush=True)
            finally:
                ray.shutdown()
        return
    print(
        "| tasks | workers | driver CPU per task | stand-in CPU per task (left out) | workers busy |\n"
        "| ---: | ---: | ---: | ---: | ---: |"
    )
    for target in args.tasks:
        for workers in args.workers:
            n, ms, sim_ms, busy = standin_row(target, workers)
            print(f"| {n} | {workers} | {ms:.3f} ms | {sim_ms:.3f} ms | {busy:.2f} |", flush=True)


if __name__ == "__main__":
    main()
