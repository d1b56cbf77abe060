"""The scheduler's arithmetic and bookkeeping, without Ray: dependencies by index arithmetic equal
a brute-force scan, and a schedule driven through random completions, failures, lost workers and
slow workers runs every task exactly once, each only after what it reads."""

from __future__ import annotations

import math
import random

from hypothesis import example, given, settings
from hypothesis import strategies as st

from ourgan_dist.config import BaseConfig, SRConfig
from ourgan_dist.engine.executors.schedule import DONE, READY, RUNNING, Schedule, TaskGraph
from ourgan_dist.planning.plan import RenderPlan
from ourgan_dist.engine.render import task_order

BASE = BaseConfig(base_width=32, coarsest_width=12, n_scales=3, channels=8, convs_per_stage=3, vae_scales=1, latent_channels=4)
SR = SRConfig(features=8, growth=4, blocks=1, rdbs_per_block=1, dense_convs=3)


def make(w: int, h: int, k: int, c: int, halo) -> RenderPlan:
    """A plan with tile k*c (0: untiled), scaled up by a whole number of k*c if the final level would
    have over ~400 tiles, so that the brute force below stays quick; halos reach past tiles."""
    m = max(1, math.ceil(math.sqrt(w * h / 400) / (k * c))) if k else 1
    return RenderPlan.create(w, h, base=BASE, sr=SR, tile=k * c * m, halo=halo, chunk=c)


plans = st.builds(
    make,
    st.integers(60, 900),
    st.integers(60, 900),
    st.integers(0, 6),
    st.sampled_from([4, 8, 16, 32]),
    st.one_of(st.just("exact"), st.integers(0, 60)),
)


def brute_force(plan: RenderPlan, key):
    """Every task of the level or scale below whose output overlaps what ``key`` reads."""
    if hasattr(key, "scale"):
        src = plan.pyramid_source(key)
        if key.scale == 1:
            return {k for k in plan.tiles(plan.final_level) if plan.core(k).intersects(src)}
        return {k for k in plan.pyramid_tasks(key.scale - 1) if plan.pyramid_block(k).intersects(src)}
    if key.level == 0:
        return set()
    win = plan.source_window(key)
    return {k for k in plan.tiles(key.level - 1) if plan.core(k).intersects(win)}


@settings(max_examples=60, deadline=None)
@given(plans)
@example(make(900, 700, 2, 8, 30))  # three levels, halos of several tiles
@example(make(899, 611, 1, 4, 60))
def test_dependencies_by_index_arithmetic_equal_a_scan(plan):
    for key in task_order(plan):
        deps = plan.task_dependencies(key)
        assert len(deps) == len(set(deps))
        assert set(deps) == brute_force(plan, key), key


def drive(plan, workers, seed, slots=4, prefetch=2, fail=0.0, lose=0.0, slow=()):
    """Run a schedule to the end with random events; returns (completion order, graph)."""
    rng = random.Random(seed)
    graph = TaskGraph(plan, task_order(plan))
    s = Schedule(graph, [plan.owner(k, workers) for k in graph.keys], workers, slots, prefetch)
    for w in range(workers):
        s.worker_up(w)
    live: set[int] = set()  # submitted, not superseded
    done: list[int] = []
    while not s.finished:
        assigned, withdrawn = s.assign()
        live.difference_update(withdrawn)
        for i, w in assigned:
            assert s.state[i] == RUNNING and s.worker[i] == w
            assert all(s.state[d] in (RUNNING, DONE) for d in graph.deps[i])  # inputs at least submitted
            live.add(i)
        assert all(len(r) <= slots for r in s.running)
        runnable = [i for i in live if all(s.state[d] == DONE for d in graph.deps[i])]
        assert runnable, "nothing can run: the schedule is stuck"
        fast = [i for i in runnable if s.worker[i] not in slow]
        i = rng.choice(fast if fast and rng.random() < 0.9 else runnable)
        event = rng.random()
        if event < fail:
            live.difference_update(s.requeue(i))
        elif event < fail + lose:
            w = s.worker[i]
            lost, requeued = s.worker_lost(w)
            assert i in lost and set(lost) <= set(requeued)
            live.difference_update(requeued)
            if rng.random() < 0.7 or not any(s.up):
                s.worker_up(w)
        else:
            live.discard(i)
            s.complete(i)
            done.append(i)
    return done, graph, s


@settings(max_examples=30, deadline=None)
@given(plans, st.integers(1, 9), st.integers(0, 2**32 - 1))
@example(make(900, 700, 2, 8, 30), 5, 0)
def test_every_task_runs_once_after_its_inputs_through_failures_and_lost_workers(plan, workers, seed):
    done, graph, s = drive(plan, workers, seed, fail=0.05, lose=0.03, slow={0})
    assert sorted(done) == list(range(len(graph)))
    position = {i: p for p, i in enumerate(done)}
    for i, ds in enumerate(graph.deps):
        assert all(position[d] < position[i] for d in ds)
    assert s.ready == 0 and not any(s.running)


def test_owners_get_their_own_tasks_and_idle_workers_steal():
    plan = RenderPlan.create(700, 500, base=BASE, sr=SR, tile=32, chunk=16)
    graph = TaskGraph(plan, task_order(plan))
    owners = [plan.owner(k, 4) for k in graph.keys]
    s = Schedule(graph, owners, 4, 4, 2)
    for w in (0, 1, 2):  # worker 3 is down: its tasks must go to the others
        s.worker_up(w)
    ran_by: dict[int, int] = {}
    while not s.finished:  # workers of equal speed: each in turn finishes its oldest runnable task
        for w in (0, 1, 2):
            assigned, _ = s.assign()
            ran_by.update((i, w) for i, w in assigned)
            runnable = [i for i in s.running[w] if all(s.state[d] == DONE for d in graph.deps[i])]
            if runnable:
                s.complete(min(runnable, key=s.seq.__getitem__))
    assert set(ran_by.values()) == {0, 1, 2}
    assert sum(ran_by[i] == owners[i] for i in ran_by) > 0.6 * len(ran_by)  # mostly where they are owned
    assert any(owners[i] == 3 for i in ran_by)  # and the lost owner's tasks ran elsewhere


def test_resume_counts_what_is_done_as_done():
    plan = RenderPlan.create(300, 200, base=BASE, sr=SR, tile=32, chunk=16)
    keys = task_order(plan)
    done, rest = set(keys[: len(keys) // 3]), keys[len(keys) // 3 :]
    graph = TaskGraph(plan, rest)
    s = Schedule(graph, [0] * len(graph), 1, 4, 2)
    ready = {graph.keys[i] for i in range(len(graph)) if s.state[i] == READY}
    assert ready == {k for k in rest if all(d in done for d in plan.task_dependencies(k))}


def makespan(plan, seconds_per_task: list[float]) -> float:
    """Virtual time to run a plan when worker w takes ``seconds_per_task[w]`` per task, one task at
    a time in submission order; a task taken back while running occupies its worker to the end."""
    workers = len(seconds_per_task)
    graph = TaskGraph(plan, task_order(plan))
    s = Schedule(graph, [plan.owner(k, workers) for k in graph.keys], workers, 4, 2)
    for w in range(workers):
        s.worker_up(w)
    now, ends, current = 0.0, [0.0] * workers, [-1] * workers
    queues: list[list[int]] = [[] for _ in range(workers)]
    while not s.finished:
        assigned, withdrawn = s.assign(now)
        for q in queues:
            q[:] = [i for i in q if i not in withdrawn]
        for i, w in assigned:
            queues[w].append(i)
        for w in range(workers):
            ready = [i for i in queues[w] if all(s.state[d] == DONE for d in graph.deps[i])]
            if current[w] < 0 and ready:
                current[w], ends[w] = ready[0], now + seconds_per_task[w]
                queues[w].remove(ready[0])
        now = min([ends[w] for w in range(workers) if current[w] >= 0] + [s.wake_at])
        assert now < float("inf"), "stuck"
        for w in range(workers):
            if current[w] >= 0 and ends[w] <= now:
                i, current[w] = current[w], -1
                if s.state[i] == RUNNING and s.worker[i] == w:  # else taken back: its result is ignored
                    s.complete(i, now)
    return now


def test_a_task_running_far_too_long_is_taken_back_by_an_idle_worker(monkeypatch):
    import ourgan_dist.engine.executors.schedule as schedule

    plan = RenderPlan.create(300, 200, base=BASE, sr=SR, tile=48, chunk=16)
    with_take_back = makespan(plan, [1.0, 20.0])
    monkeypatch.setattr(schedule, "SLOW_MIN_S", float("inf"))  # only queued tasks are taken back
    without = makespan(plan, [1.0, 20.0])
    alone = len(task_order(plan)) * 1.0  # the fast worker alone
    assert with_take_back < 1.5 * alone < without, (with_take_back, alone, without)
