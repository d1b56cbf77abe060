"""Progress as a person reads it: task labels, work weighted by expected cost, and an ETA that
holds steady on a synthetic render whose cheap tasks finish first."""

from __future__ import annotations

import heapq
import io
import random
import warnings
from types import SimpleNamespace

import pytest

from ourgan_dist.config import PRESETS
from ourgan_dist.planning.plan import PyramidKey, RenderPlan, TileKey
from ourgan_dist.engine.progress import WorkTracker, task_kind, task_label, tracker_for
from ourgan_dist.engine.render import task_order
from ourgan_dist.engine.tile import TaskReport

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


def test_an_overdue_finish_says_unknown_not_zero_while_tasks_still_run():
    tracker = WorkTracker({"a": 50.0, "b": 50.0}, 1_000_000, workers=1, start=0.0)
    tracker.done("a", 0.0, 10.0)
    expected = tracker.eta(10.0)
    assert expected is not None and expected > 0
    assert tracker.eta(10.0 + expected + 30.0) is None  # "b" runs late: "?", not "00:00"
    tracker.done("b", 10.0, 50.0)
    assert tracker.eta(50.0) == 0.0


def test_workers_are_counted_from_reports_when_not_given():
    costs = [1.0] * 40
    done, makespan = simulate(costs, 4, 1.0, seed=3)
    tracker = WorkTracker(dict(enumerate(costs)), 100, start=0.0)
    for key, t0, t1, w in done[:12]:
        tracker.done(key, t0, t1, w)
    assert len(tracker.seen) == 4
    assert tracker.eta(done[11][2]) == pytest.approx(makespan - done[11][2], rel=0.35)


def bar_for(plan, **kwargs):
    """A ProgressBar of a prepared render's shape (plan, model config, workers, device)."""
    from ourgan_dist.engine.progress import ProgressBar

    p = SimpleNamespace(
        plan=plan, model=SimpleNamespace(config=CPU), workers=2, request=SimpleNamespace(device="cpu", precision="fp32")
    )
    return ProgressBar(p, **kwargs)


def feed(bar, keys, seconds=lambda key: 0.01, repeat=()):
    """Report every task finished, in order (the tasks in ``repeat`` reported twice, as a retried
    execution is); returns the tracker's fraction after each report."""
    fractions = []
    n = 0
    for key in keys:
        n += 1
        for _ in range(2 if key in repeat else 1):
            bar(TaskReport(key, 0.0, seconds(key), 1, f"worker-{n % 2}"), n, len(keys))
            fractions.append(bar.tracker.fraction)
    return fractions


PLAN = RenderPlan.create(4000, 2800, base=CPU.base, sr=CPU.sr, tile=1024)


def test_the_fraction_stays_in_0_1_never_goes_back_and_is_1_only_at_the_end():
    keys = task_order(PLAN)
    pyramid = [k for k in keys if isinstance(k, PyramidKey)]
    assert PLAN.n_sr == 1 and len(pyramid) >= 4
    # the pyramid's blocks take 50x and the last level's tiles 1/7 of what the projection expects;
    # every fourth task is reported twice (a retried execution)
    work = tracker_for(SimpleNamespace(plan=PLAN, model=SimpleNamespace(config=CPU), request=bar_for(PLAN).p.request), keys)

    def seconds(key):
        return work.weights[key] * (50.0 if isinstance(key, PyramidKey) else 1 / 7 if key.level == 1 else 1.0)

    bar = bar_for(PLAN, file=io.StringIO())
    bar.begin(keys)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # tqdm's "clamping frac to range [0, 1]" among them
        fractions = feed(bar, keys, seconds, repeat=set(keys[::4]))
    assert all(0.0 <= f <= 1.0 for f in fractions)
    assert all(b >= a for a, b in zip(fractions, fractions[1:]))
    assert fractions[-1] == 1.0 and max(fractions[: -1 - (keys[-1] in keys[::4])]) < 1.0


def test_the_fraction_follows_the_time_the_tasks_really_take():
    """A base that takes 5x, tiles that take half and pyramid blocks that take a tenth of what the
    projection expects (the recorded CPU rate on a quicker machine is like this): counting the
    expected weights says 20% done when the tiles are, and the last four tasks sweep the bar to
    100% in 3% of the time. Calibrated, once a task of every kind still to run has finished,
    the fraction is the share of the time spent."""
    keys = [TileKey(0, 0, 0)] + [TileKey(1, 0, x) for x in range(8)] + [PyramidKey(1, 0, x) for x in range(4)]
    expected_and_real = {"base": (1.0, 5.0), "tile": (2.0, 1.0), "pyramid": (10.0, 1.0)}
    kinds = {k: "pyramid" if isinstance(k, PyramidKey) else "base" if k.level == 0 else "tile" for k in keys}
    expected = {k: expected_and_real[kinds[k]][0] for k in keys}
    real = {k: expected_and_real[kinds[k]][1] for k in keys}
    tracker = WorkTracker(expected, 1_000_000, workers=1, start=0.0)
    now, timed = 0.0, 0
    for n, key in enumerate(keys, 1):
        tracker.done(key, now, now + real[key])
        now += real[key]
        if {task_kind(k) for k in keys[n:]} <= {task_kind(k) for k in keys[:n]}:
            assert tracker.fraction == pytest.approx(now / sum(real.values())), n
            timed += 1
        if n < len(keys):
            assert tracker.fraction < 1.0
    assert timed == 4 and tracker.fraction == 1.0 and tracker.eta(now) == 0.0
    assert tracker.done_weight / tracker.todo_weight == 1.0


def test_a_log_gets_one_line_per_update_and_the_first_and_last_once():
    keys = task_order(PLAN)
    log = io.StringIO()  # not a terminal: stderr redirected to a file, a pipe, CI
    bar = bar_for(PLAN, file=log)
    bar.LOG_EVERY_S = 0.0  # a line for every task
    bar.begin(keys)
    feed(bar, keys)
    text = log.getvalue()
    assert "\r" not in text and text.endswith("\n")
    lines = text.splitlines()
    assert len(lines) == len(keys) + 1 and len(set(lines)) == len(lines)
    assert lines[0].startswith(f"render   0% 0/{len(keys)} [") and lines[0].endswith("starting]")
    assert lines[-1].startswith(f"render 100% {len(keys)}/{len(keys)} [") and "<00:00, " in lines[-1]
    percents = [int(line.split("%")[0].split()[-1]) for line in lines]
    assert percents == sorted(percents) and percents.count(100) == 1
    assert f"level {PLAN.n_sr}/{PLAN.n_sr} tile (" in text and "viewing pyramid" in text and "MP/s" in text
    # updates closer together than LOG_EVERY_S give no line but the last
    quiet = io.StringIO()
    bar = bar_for(PLAN, file=quiet)
    bar.begin(keys)
    feed(bar, keys)
    assert [line.split("[")[0] for line in quiet.getvalue().splitlines()] == [
        f"render   0% 0/{len(keys)} ",
        f"render 100% {len(keys)}/{len(keys)} ",
    ]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_one_bar_drawn_in_place_with_0_and_100_once():
    keys = task_order(PLAN)
    tty = Terminal()
    bar = bar_for(PLAN, file=tty)
    bar.begin(keys)
    bar.bar.mininterval = 0  # draw every update
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        feed(bar, keys, repeat={keys[-2]})
    text = tty.getvalue()
    assert text.endswith("\n") and text.count("\n") == 1  # one line, redrawn in place
    draws = [d.strip() for d in text.split("\r") if d.strip()]
    assert len(draws) >= len(keys)
    assert sum(f" 0/{len(keys)} [" in d for d in draws) == 1 and draws[0].startswith("render   0%|")  # drawn once at the start
    assert sum(d.startswith("render 100%") for d in draws) == 1 and draws[-1].startswith("render 100%|")
    assert f"{len(keys)}/{len(keys)} [" in draws[-1] and "MP/s" in draws[-1]
    percents = [int(d.split("%")[0].split()[-1]) for d in draws]
    assert percents == sorted(percents)


def test_a_render_piped_to_a_log_writes_each_progress_line_once(tiny_model, tmp_path):
    from click.testing import CliRunner

    from ourgan_dist.cli import main

    r = CliRunner().invoke(main, ["render", tiny_model, "--out", str(tmp_path / "r.zarr"), "--size", "96x64", "--tile", "32"])
    assert r.exit_code == 0, r.output
    lines = [line for line in r.stderr.splitlines() if line.startswith("render ")]
    assert "\r" not in r.stderr
    assert lines[0].startswith("render   0% 0/") and lines[-1].startswith("render 100% ")
    assert len(set(lines)) == len(lines) and sum("100%" in line for line in lines) == 1


def test_a_terminal_of_no_size_gets_lines_not_an_empty_bar():
    """A pseudo-terminal that reports no width (as some job runners open) would show nothing of a
    tqdm bar; it gets the log's lines."""
    import os
    import pty
    import select

    master, replica = pty.openpty()
    with os.fdopen(replica, "w") as tty:
        assert tty.isatty() and os.get_terminal_size(tty.fileno()).columns == 0
        keys = task_order(PLAN)
        bar = bar_for(PLAN, file=tty)
        bar.begin(keys)
        feed(bar, keys)
        assert bar.bar is None
    text = ""
    while select.select([master], [], [], 1.0)[0] and text.count("\n") < 2:
        text += os.read(master, 1 << 16).decode()
    os.close(master)
    lines = [line.split("[")[0] for line in text.splitlines()]
    assert lines == [f"render   0% 0/{len(keys)} ", f"render 100% {len(keys)}/{len(keys)} "]
