"""A render's progress as a person reads it: how much of the work is done, how fast the requested
image is being made, and when it will be finished.

Tasks differ in cost by orders of magnitude (a viewing-pyramid block is a few milliseconds of
I/O, a last-level tile of the paper preset minutes of GPU time), so counting tasks misleads: the
first seconds of a render finish many cheap tasks. Here every task weighs what
``projection.Work`` expects it to cost, and:

- work done is the share of that expected cost completed;
- MP/s is megapixels *of the requested image* per second: the share of the whole render's work
  done so far x the requested pixels / seconds since the render started (levels below the last
  and the viewing pyramid count only as the share of the work they are);
- the ETA divides the work left by a rate that starts from what the finished tasks' own
  durations say a worker does (times the workers) and moves to the render's measured average as
  the work gets done, and is smoothed, so one slow or quick task does not swing it.

``WorkTracker`` is the arithmetic (tested on synthetic completions); ``progress_bar`` shows it
with tqdm on stderr.
"""

from __future__ import annotations

import sys
import time
from typing import Callable, Iterable, Mapping

from ..planning.geometry import PyramidKey, TaskKey

MIN_DONE_FOR_ETA = 0.01  # share of the work to finish before an ETA is shown
ETA_SMOOTHING = 0.25  # weight of a new finish-time estimate against the running one


def task_label(plan, key: TaskKey) -> str:
    """What a task is, in words: 'base image', 'level 3/4 tile (5,0)' (level 3 of the 4 x4
    levels, tile row 5, column 0), 'viewing pyramid 1/7 block (0,3)' (the first of 7 halvings)."""
    if isinstance(key, PyramidKey):
        return f"viewing pyramid {key.scale}/{len(plan.pyramid_shapes) - 1} block ({key.ty},{key.tx})"
    if key.level == 0:
        return "base image"
    return f"level {key.level}/{plan.n_sr} tile ({key.ty},{key.tx})"


class WorkTracker:
    """Weighted work done and time left of one run's tasks.

    ``weights``: expected seconds of each task this run will do (any consistent unit: only ratios
    and the finished tasks' measured durations matter). ``total_weight``: the same for the whole
    render, done or not (for the image's MP/s; defaults to this run's). ``workers``: how many
    run at once, if known (otherwise the distinct workers seen so far)."""

    def __init__(
        self,
        weights: Mapping[TaskKey, float],
        pixels: int,
        *,
        total_weight: float | None = None,
        workers: int | None = None,
        start: float | None = None,
    ):
        self.weights = dict(weights)
        self.todo_weight = sum(self.weights.values()) or 1.0
        self.total_weight = total_weight or self.todo_weight
        self.pixels = pixels
        self.workers = workers or 0
        self.start = time.time() if start is None else start
        self.done_weight = 0.0
        self.busy_seconds = 0.0  # summed durations of finished tasks
        self.finished = 0
        self.seen: set[str] = set()
        self._finish: float | None = None  # smoothed estimate of the wall-clock finish time

    @property
    def fraction(self) -> float:
        """Share of this run's expected work done."""
        return min(1.0, self.done_weight / self.todo_weight)

    def done(self, key: TaskKey, started: float, ended: float, worker: str = "", now: float | None = None) -> None:
        now = ended if now is None else now
        self.done_weight += self.weights.get(key, 0.0)
        self.busy_seconds += max(0.0, ended - started)
        self.finished += 1
        if worker:
            self.seen.add(worker)
        raw = self._raw_eta(now)
        if raw is not None:
            target = now + raw
            self._finish = target if self._finish is None else self._finish + ETA_SMOOTHING * (target - self._finish)

    def _raw_eta(self, now: float) -> float | None:
        left = self.todo_weight - self.done_weight
        if left <= 0:
            return 0.0
        if self.fraction < MIN_DONE_FOR_ETA or self.busy_seconds <= 0:
            return None
        workers = max(self.workers, len(self.seen), 1)
        remaining_tasks = len(self.weights) - self.finished
        per_worker = self.done_weight / self.busy_seconds  # expected seconds of work a worker does per second
        modelled = per_worker * max(1, min(workers, remaining_tasks))
        measured = self.done_weight / max(1e-9, now - self.start)
        f = self.fraction
        return left / ((1 - f) * modelled + f * measured)

    def eta(self, now: float | None = None) -> float | None:
        """Seconds left, smoothed; None until enough work is done to say."""
        if self.done_weight >= self.todo_weight:
            return 0.0
        if self._finish is None:
            return None
        now = time.time() if now is None else now
        return max(0.0, self._finish - now)

    def megapixels_per_s(self, now: float | None = None) -> float:
        """Megapixels of the requested image made per second since the render started."""
        now = time.time() if now is None else now
        return self.pixels * (self.done_weight / self.total_weight) / 1e6 / max(1e-9, now - self.start)


def tracker_for(p, keys: Iterable[TaskKey]) -> WorkTracker:
    """A tracker for the tasks ``keys`` of a prepared render ``p`` (render.Prepared), weighted by
    the reference throughput of its device."""
    from ..planning import projection

    plan, cfg, req = p.plan, p.model.config, p.request
    work = projection.Work(plan, cfg.sr, cfg.base, projection.reference_throughput(req.device, req.precision))
    weights = {k: work.seconds(k) for k in keys}
    total = sum(work.seconds(k) * n for level in [*range(plan.n_sr + 1), None] for k, n in projection.task_groups(plan, level))
    return WorkTracker(weights, plan.width * plan.height, total_weight=total, workers=getattr(p, "workers", None))


def _format_eta(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60:02d}:{s % 60:02d}"


class ProgressBar:
    """The CLI's progress line on stderr, e.g.
    ``render  43%|####      | 120/480 [01:02<01:31, 2.10 MP/s, level 3/4 tile (5,0)]``:
    weighted share of the work, tasks done/total, elapsed < ETA, MP/s of the requested image, the
    last task finished. Call ``begin(keys)`` with the tasks to run, then once per finished task."""

    def __init__(self, p):
        self.p = p
        self.tracker: WorkTracker | None = None
        self.bar = None

    def begin(self, keys: list[TaskKey]) -> None:
        from tqdm import tqdm

        class _Bar(tqdm):
            extra = {"tasks": f"0/{len(keys)}", "eta_w": "?", "mps": "0.00", "label": "starting"}

            @property
            def format_dict(self):
                d = super().format_dict
                d.update(self.extra)
                return d

        self.tracker = tracker_for(self.p, keys)
        self.tracker.start = time.time()
        self.bar = _Bar(
            total=self.tracker.todo_weight,
            file=sys.stderr,
            dynamic_ncols=True,
            desc="render",
            bar_format="{desc} {percentage:3.0f}%|{bar}| {tasks} [{elapsed}<{eta_w}, {mps} MP/s, {label}]",
        )
        self.bar.refresh()

    def __call__(self, report, n: int, total: int) -> None:
        if self.tracker is None:  # a caller that did not announce its tasks: take the whole render's
            from .render import task_order

            self.begin(task_order(self.p.plan))
        t = self.tracker
        now = time.time()
        before = t.done_weight
        t.done(report.key, report.start, report.end, report.worker, now=now)
        self.bar.extra = {
            "tasks": f"{n}/{total}",
            "eta_w": _format_eta(t.eta(now)),
            "mps": f"{t.megapixels_per_s(now):.2f}",
            "label": task_label(self.p.plan, report.key),
        }
        self.bar.update(t.done_weight - before)
        if n == total:
            self.bar.n = self.bar.total
            self.bar.close()


def progress_bar(p) -> Callable:
    """The progress callback for ``render.render(p, on_progress=...)``."""
    return ProgressBar(p)
