"""Progress as a person reads it: task labels, work weighted by expected cost, and an ETA that
holds steady on a synthetic render whose cheap tasks finish first."""

from __future__ import annotations

import heapq
import random

import pytest

from ourgan_dist.config import PRESETS
from ourgan_dist.planning.plan import PyramidKey, RenderPlan, TileKey
from ourgan_dist.engine.progress import WorkTracker, task_label

CPU = PRESETS["cpu"]


def test_labels_say_what_a_task_is():
    plan = RenderPlan.create(16384, 10912, base=CPU.base, sr=CPU.sr, tile=1536)
    assert task_label(plan, TileKey(0, 0, 0)) == "base image"
    assert plan.n_sr == 2 and task_label(plan, TileKey(2, 5, 0)) == "level 2/2 tile (5,0)"
    assert task_label(plan, PyramidKey(1, 0, 2)) == f"viewing pyramid 1/{len(plan.pyramid_shapes) - 1} block (0,2)"


def simulate(costs: list[float], workers: int, seconds_per_unit: float, seed: int = 0):
    """Run tasks (in the given order) on ``workers`` workers, each as soon as one is free, with
    durations proportional to the cost times a noise factor. Returns (key, start, end, worker)
    in completion order, and the makespan."""
    rng = random.Random(seed)
    free = [(0.0, f"w{i}") for i in range(workers)]
    heapq.heapify(free)
    done = []
    for i, c in enumerate(costs):
        t, w = heapq.heappop(free)
        end = t + c * seconds_per_unit * rng.uniform(0.8, 1.25)
        done.append((i, t, end, w))
        heapq.heappush(free, (end, w))
    done.sort(key=lambda d: d[2])
    return done, max(d[2] for d in done)


def synthetic_render():
    """Cheap tasks first (a level of small tiles and its 1/16-size predecessor), then expensive
    last-level tiles, then a tail of near-free pyramid blocks: the shape of a real render."""
    return [0.2] * 4 + [1.0] * 16 + [16.0] * 64 + [0.05] * 40


def test_weighted_eta_is_close_early_and_steady_where_counting_tasks_swings():
    costs = synthetic_render()
    workers, unit, start = 4, 0.5, 100.0
    done, makespan = simulate(costs, workers, unit)
    tracker = WorkTracker(dict(enumerate(costs)), 1_000_000, workers=workers, start=start)
    errors, naive_errors, etas = [], [], []
    for n, (key, t0, t1, w) in enumerate(done, 1):
        tracker.done(key, start + t0, start + t1, w)
        eta = tracker.eta(start + t1)
        true_left = makespan - t1
        naive = t1 / n * (len(costs) - n)  # what counting tasks says (tqdm's ETA)
        if eta is not None and tracker.fraction >= 0.1 and n < len(costs):
            errors.append(abs(eta - true_left) / makespan)
            naive_errors.append(abs(naive - true_left) / makespan)
            etas.append(eta + t1)  # the projected finish time
    assert errors, "an ETA must be shown once a tenth of the work is done"
    assert max(errors) < 0.2, max(errors)  # within a fifth of the render's length from 10% on
    assert max(naive_errors) > 2 * max(errors)  # counting tasks is far worse on this render
    # the projected finish time never jumps by more than a tenth of the render between two tasks
    assert max(abs(b - a) for a, b in zip(etas, etas[1:])) < 0.1 * makespan
    assert tracker.eta(start + makespan) == 0.0 and tracker.fraction == pytest.approx(1.0)


def test_no_eta_until_some_work_is_done_and_mps_counts_the_requested_image():
    tracker = WorkTracker({"a": 1.0, "b": 99.0}, 2_000_000, total_weight=200.0, workers=1, start=0.0)
    tracker.done("a", 0.0, 0.5)
    assert tracker.fraction == pytest.approx(0.01) and tracker.eta(0.5) is not None
    fresh = WorkTracker({"a": 1.0, "b": 999.0}, 2_000_000, workers=1, start=0.0)
    fresh.done("a", 0.0, 0.5)
    assert fresh.eta(0.5) is None  # 0.1% of the work says nothing yet
    # half of this run's work is a quarter of the whole render (a resume): 0.5 MP of 2 MP in 10 s
    half = WorkTracker({"a": 50.0, "b": 50.0}, 2_000_000, total_weight=200.0, workers=1, start=0.0)
    half.done("a", 0.0, 10.0)
    assert half.megapixels_per_s(10.0) == pytest.approx(0.05)


def test_workers_are_counted_from_reports_when_not_given():
    costs = [1.0] * 40
    done, makespan = simulate(costs, 4, 1.0, seed=3)
    tracker = WorkTracker(dict(enumerate(costs)), 100, start=0.0)
    for key, t0, t1, w in done[:12]:
        tracker.done(key, t0, t1, w)
    assert len(tracker.seen) == 4
    assert tracker.eta(done[11][2]) == pytest.approx(makespan - done[11][2], rel=0.35)


def test_the_bar_shows_tasks_eta_image_megapixels_and_labels(capsys):
    from types import SimpleNamespace

    from ourgan_dist.engine.progress import ProgressBar
    from ourgan_dist.engine.render import task_order
    from ourgan_dist.engine.tile import TaskReport

    plan = RenderPlan.create(4000, 2800, base=CPU.base, sr=CPU.sr, tile=1024)
    assert plan.n_sr == 1
    p = SimpleNamespace(
        plan=plan, model=SimpleNamespace(config=CPU), workers=2, request=SimpleNamespace(device="cpu", precision="fp32")
    )
    keys = task_order(plan)
    bar = ProgressBar(p)
    bar.begin(keys)
    bar.bar.mininterval = 0  # show every update
    for n, key in enumerate(keys, 1):
        bar(TaskReport(key, 0.0, 0.01, 1, f"worker-{n % 2}"), n, len(keys))
    text = capsys.readouterr().err
    assert f"{len(keys)}/{len(keys)} [" in text and "MP/s" in text
    assert f"level {plan.n_sr}/{plan.n_sr} tile (" in text and "viewing pyramid" in text and "100%" in text
