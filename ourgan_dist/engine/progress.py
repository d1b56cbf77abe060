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
- the expectation is corrected as tasks finish: each kind of task (a level, the viewing pyramid)
  is scaled by what its finished tasks measured, so the bar follows the real time share;
- the ETA divides the work left by a rate that starts from what the finished tasks' own
  durations say a worker does (times the workers) and moves to the render's measured average as
  the work gets done, and is smoothed, so one slow or quick task does not swing it.

``WorkTracker`` is the arithmetic (tested on synthetic completions); ``progress_bar`` shows it
on stderr: a tqdm bar on a terminal, plain lines in a log.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Callable, Iterable, Mapping

from ..planning.geometry import PyramidKey, TaskKey

MIN_DONE_FOR_ETA = 0.01  # share of the work to finish before an ETA is shown
ETA_SMOOTHING = 0.25  # weight of a new finish-time estimate against the running one
MAX_UNFINISHED = 0.999  # the most the bar shows while a task is left (shown as 99%)


def task_label(plan, key: TaskKey) -> str:
    """What a task is, in words: 'base image', 'level 3/4 tile (5,0)' (level 3 of the 4 x4
    levels, tile row 5, column 0), 'viewing pyramid 1/7 block (0,3)' (the first of 7 halvings)."""
    if isinstance(key, PyramidKey):
        return f"viewing pyramid {key.scale}/{len(plan.pyramid_shapes) - 1} block ({key.ty},{key.tx})"
    if key.level == 0:
        return "base image"
    return f"level {key.level}/{plan.n_sr} tile ({key.ty},{key.tx})"


def task_kind(key) -> object:
    """The group a task's cost is calibrated in: its generation level, or the viewing pyramid
    (other keys, as in tests, form one group)."""
    if isinstance(key, PyramidKey):
        return "pyramid"
    return getattr(key, "level", None)


class WorkTracker:
    """Weighted work done and time left of one run's tasks.

    ``weights``: expected seconds of each task this run will do (any consistent unit: only ratios
    and the finished tasks' measured durations matter). ``total_weight``: the same for the whole
    render, done or not (for the image's MP/s; defaults to this run's). ``workers``: how many
    run at once, if known (otherwise the distinct workers seen so far).

    The expectation is calibrated as tasks finish: within each kind of task (a generation level,
    the viewing pyramid) the finished tasks' measured seconds over their expected ones scale the
    kind's unfinished tasks, so a level the projection over- or underrates takes its real share
    of the bar from its first finished task on. A kind none of whose tasks has finished keeps
    its expected seconds. ``fraction`` is done / (done + left) in those seconds: it never goes
    back, and reaches 1 only when every task is done."""

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
        self._left = set(self.weights)  # tasks not yet reported
        # per kind of task: [expected seconds left, expected seconds done, measured seconds done]
        self._kinds: dict[object, list[float]] = {}
        for key, w in self.weights.items():
            self._kinds.setdefault(task_kind(key), [0.0, 0.0, 0.0])[0] += w
        self._fraction = 0.0
        self._finish: float | None = None  # smoothed estimate of the wall-clock finish time

    @property
    def fraction(self) -> float:
        """Share of this run's work done, in [0, 1]: never lower than it was, 1 only when every task is done."""
        return self._fraction

    def calibrated(self) -> tuple[float, float]:
        """(done, left): this run's work in seconds of one worker, each kind of task's expected
        seconds scaled by what its finished tasks measured."""
        done = left = 0.0
        for expected_left, expected_done, measured in self._kinds.values():
            ratio = measured / expected_done if expected_done > 0 and measured > 0 else 1.0
            done += expected_done * ratio
            left += expected_left * ratio
        return done, left

    def done(self, key: TaskKey, started: float, ended: float, worker: str = "", now: float | None = None) -> None:
        """Record a finished task; a key reported again (a retried or duplicated execution) or
        not among this run's tasks changes nothing."""
        now = ended if now is None else now
        if key not in self._left:
            return
        self._left.discard(key)
        w, seconds = self.weights[key], max(0.0, ended - started)
        kind = self._kinds[task_kind(key)]
        kind[0] -= w
        kind[1] += w
        kind[2] += seconds
        self.done_weight += w
        self.busy_seconds += seconds
        self.finished += 1
        if worker:
            self.seen.add(worker)
        done, left = self.calibrated()
        if not self._left:
            self._fraction = 1.0
        elif done + left > 0:
            self._fraction = max(self._fraction, min(MAX_UNFINISHED, done / (done + left)))
        raw = self._raw_eta(now, done, left)
        if raw is not None:
            target = now + raw
            self._finish = target if self._finish is None else self._finish + ETA_SMOOTHING * (target - self._finish)

    def _raw_eta(self, now: float, done: float, left: float) -> float | None:
        if not self._left:
            return 0.0
        if self.fraction < MIN_DONE_FOR_ETA or self.busy_seconds <= 0 or done <= 0:
            return None
        workers = max(self.workers, len(self.seen), 1)
        modelled = max(1, min(workers, len(self._left)))  # calibrated seconds are a worker's seconds
        measured = done / max(1e-9, now - self.start)
        f = self.fraction
        return left / ((1 - f) * modelled + f * measured)

    def eta(self, now: float | None = None) -> float | None:
        """Seconds left, smoothed; None until enough work is done to say, and None again once the
        expected finish has passed with tasks still running (a bar stuck at "00:00" left misleads)."""
        if not self._left:
            return 0.0
        if self._finish is None:
            return None
        now = time.time() if now is None else now
        left = self._finish - now
        return left if left > 0 else None

    def megapixels_per_s(self, now: float | None = None) -> float:
        """Megapixels of the requested image made per second since the render started."""
        now = time.time() if now is None else now
        return self.pixels * (self.fraction * self.todo_weight / self.total_weight) / 1e6 / max(1e-9, now - self.start)


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
    """The CLI's progress on stderr, e.g.
    ``render  43%|####      | 120/480 [01:02<01:31, 2.10 MP/s, level 3/4 tile (5,0)]``:
    share of the work done (``WorkTracker.fraction``, rounded down: 100% only at the end), tasks
    done/total, elapsed < ETA, MP/s of the requested image, the last task finished. Call
    ``begin(keys)`` with the tasks to run, then once per finished task.

    On a terminal this is a tqdm bar redrawn in place. Elsewhere (a log file, a pipe, CI) each
    update is a line of its own, ``LOG_EVERY_S`` apart at most, plus the first and the last,
    each written once."""

    LOG_EVERY_S = 10.0

    def __init__(self, p, file=None):
        self.p = p
        self.file = file
        self.tracker: WorkTracker | None = None
        self.bar = None  # the tqdm bar on a terminal
        self._last_line = 0.0  # when the last log line was written

    def begin(self, keys: list[TaskKey]) -> None:
        self.file = self.file or sys.stderr
        self.tracker = tracker_for(self.p, keys)
        self.tracker.start = time.time()
        fields = {"tasks": f"0/{len(keys)}", "eta_w": "?", "mps": "0.00", "label": "starting"}
        if _is_terminal(self.file):
            self.bar = _terminal_bar(self.file, fields)  # tqdm draws it once on creation
        else:
            self._log(fields, self.tracker.start)

    def __call__(self, report, n: int, total: int) -> None:
        if self.tracker is None:  # a caller that did not announce its tasks: take the whole render's
            from .render import task_order

            self.begin(task_order(self.p.plan))
        t = self.tracker
        now = time.time()
        t.done(report.key, report.start, report.end, report.worker, now=now)
        last = n >= total
        fields = {
            "tasks": f"{n}/{total}",
            "eta_w": _format_eta(0.0 if last else t.eta(now)),
            "mps": f"{t.megapixels_per_s(now):.2f}",
            "label": task_label(self.p.plan, report.key),
        }
        shown = 1.0 if last else min(t.fraction, MAX_UNFINISHED)
        if self.bar is None:
            if last or now - self._last_line >= self.LOG_EVERY_S:
                self._log(fields, now, shown)
        else:
            self.bar.extra = fields
            if last:  # close() draws the final state, once
                self.bar.n = 1.0
                self.bar.close()
            else:
                self.bar.update(shown - self.bar.n)
                self.bar.n = shown  # exactly: float steps never carry it past 1

    def _log(self, fields: dict, now: float, fraction: float = 0.0) -> None:
        elapsed = _format_eta(max(0.0, now - self.tracker.start))
        self.file.write(
            f"render {_percent(fraction):3d}% {fields['tasks']} [{elapsed}<{fields['eta_w']}, {fields['mps']} MP/s, "
            f"{fields['label']}]\n"
        )
        self.file.flush()
        self._last_line = now


def _percent(fraction: float) -> int:
    """Whole percent, rounded down: 99.7% of the work is not yet 100%."""
    return int(fraction * 100)


def _is_terminal(file) -> bool:
    """A terminal to redraw a bar on: a tty that reports a width (a pseudo-terminal of no size,
    as some job runners give, would get nothing from tqdm: it gets log lines)."""
    try:
        if not file.isatty():
            return False
    except (AttributeError, ValueError):  # no isatty, or a closed file
        return False
    try:
        return os.get_terminal_size(file.fileno()).columns > 0
    except (OSError, ValueError):  # a terminal-like object with no file descriptor: tqdm picks a width
        return True


def _terminal_bar(file, fields: dict):
    """A tqdm bar over the fraction of work done (total 1), with this module's fields."""
    from tqdm import tqdm

    class _Bar(tqdm):
        extra = fields

        @property
        def format_dict(self):
            d = super().format_dict
            d.update(self.extra, pct=f"{_percent(min(1.0, d['n'] / d['total'])):3d}")
            return d

    return _Bar(
        total=1.0,
        file=file,
        dynamic_ncols=True,
        miniters=0,  # redraw on time alone (tqdm's mininterval), whatever the step
        desc="render",
        bar_format="{desc} {pct}%|{bar}| {tasks} [{elapsed}<{eta_w}, {mps} MP/s, {label}]",
    )


def progress_bar(p) -> Callable:
    """The progress callback for ``render.render(p, on_progress=...)``."""
    return ProgressBar(p)
