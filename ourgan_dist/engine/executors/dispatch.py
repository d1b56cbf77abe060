"""The Ray executor's driver loop (``Dispatch``): one render's tasks submitted to the actors,
their results collected, failed or lost tasks requeued, lost workers pinged, deadlines enforced.

The driver keeps a ``Schedule`` (``schedule.py``): dependency counters and ready queues built once
from the plan's index arithmetic. A task is submitted once every task it reads from is at least
submitted, with their ObjectRefs as arguments, so Ray starts it as soon as those exist: no
barrier between levels. It goes to its owner (``plan.owner``, for locality) when the owner is up
and has a free slot; otherwise an idle worker steals it. In-flight work is bounded per worker and
``ray.wait`` sees only in-flight refs, so the driver's cost per task is flat.

Faults: actors restart without limit (``max_restarts=-1``) but Ray retries no task itself; the
driver does. A task whose worker died or became unreachable is requeued and goes to a live worker
(the render finishes on the survivors even when a lost worker cannot be restarted for want of
room); a lost worker is pinged until it answers again. A task that fails with a transient
(storage) error is retried a few times; any other worker error stops the render as a
``TileError`` with the key. A render that cannot progress (no live worker, or nothing finished
for too long) stops with a ``RenderStalled`` that says why. Tasks are idempotent (whole-chunk
writes plus a completion record), so repeating one is harmless. Tasks carry keys, never pixels or
weights; actors load the model once and read and write the store themselves.
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Protocol, Sequence

from ...errors import TileError
from ...planning.plan import RenderPlan, TaskKey
from ...store.storage import transient
from ..tile import TaskReport
from .schedule import Schedule, TaskGraph

__all__ = ["Dispatch", "RenderStalled"]

log = logging.getLogger(__name__)


class Workers(Protocol):
    """What the loop needs of its executor (``ray.RayExecutor``): the started actors, the bounds on
    work in flight, and the deadlines; ``waiting_for_workers(seconds)``, if it has one, says why none
    has started."""

    actors: list
    in_flight_per_worker: int
    prefetch_per_worker: int
    stall_timeout_s: float
    no_worker_timeout_s: float


TASK_RETRIES = 3  # re-runs of a task after transient errors
WORKER_LOSSES = 8  # times a task may be lost with its worker before the render gives up
POLL_S = 1.0  # the longest the driver waits before checking pings and deadlines
PING_INTERVAL_S = 2.0  # between pings of a lost worker


class RenderStalled(RuntimeError):
    """A render that cannot progress: no live worker, or no task finished for too long. Finished
    tasks are recorded, so a re-run with --resume continues."""


class Dispatch:
    """One render's loop: submit what the schedule assigns, collect results with ``ray.wait`` over
    in-flight refs only, requeue what failed or was lost, ping lost workers, enforce deadlines.
    ``api`` stands in for the ``ray`` module (wait, get, cancel, exceptions) in benchmarks."""

    def __init__(self, ex: Workers, plan: RenderPlan, keys: Sequence[TaskKey], on_done: Callable[[TaskReport], None], api=None):
        import ray

        self.ray, self.ex, self.actors, self.on_done = api or ray, ex, ex.actors, on_done
        graph = TaskGraph(plan, keys)
        n = len(self.actors)
        self.keys = graph.keys
        self.sched = Schedule(graph, [plan.owner(k, n) for k in graph.keys], n, ex.in_flight_per_worker, ex.prefetch_per_worker)
        self.refs: list = [None] * len(graph)  # ObjectRef of each running task
        self.pending: dict = {}  # in-flight task ref -> task
        self.pings: dict = {}  # in-flight ping ref -> worker
        self.stale: set = set()  # refs of requeued tasks: read and dropped when they resolve
        self.ping_at: dict[int, float] = {}  # lost worker -> when to ping it again
        self.last_error: dict[int, str] = {}  # worker -> why it was last seen down
        self.failures = [0] * len(graph)  # transient errors, per task
        self.losses = [0] * len(graph)  # times lost with its worker, per task
        self.last_done = self.none_up_since = time.monotonic()
        self.ever_up = False  # some worker has answered: later outages are losses, not a slow start

    def run(self) -> list[bool]:
        """Run every task; returns which workers are up at the end."""
        for w in range(len(self.actors)):  # a worker takes tasks once it answers
            self._ping(w)
        try:
            while not self.sched.finished:
                self._submit()
                for ref in self._wait():
                    if ref in self.pings:
                        self._pinged(ref)
                    elif ref in self.stale:
                        self._drop(ref)
                    else:
                        self._settle(ref)
                self._check(time.monotonic())
        finally:  # superseded copies, and after a failure the rest, that have resolved by now
            self.stale.update(self.pending)
            if self.stale:
                for ref in self.ray.wait(list(self.stale), num_returns=len(self.stale), timeout=0)[0]:
                    self._drop(ref)
        return list(self.sched.up)

    def _submit(self) -> None:
        assigned, withdrawn = self.sched.assign(time.monotonic())
        for i in withdrawn:  # taken back: cancelled if it has not started, ignored if it has
            if self.refs[i] is not None:
                self._cancel(self.refs[i])
        self._forget(withdrawn)
        for i, w in assigned:
            inputs = [self.refs[d] for d in self.sched.inputs_in_flight(i)]
            ref = self.actors[w].run.remote(self.keys[i], *inputs)
            self.refs[i] = ref
            self.pending[ref] = i

    def _wait(self) -> list:
        refs = [*self.pending, *self.pings, *self.stale]
        if not refs:  # every worker lost, none due for a ping yet
            time.sleep(min(POLL_S, PING_INTERVAL_S))
            return []
        ready, _ = self.ray.wait(refs, num_returns=len(refs), timeout=0)  # everything that is ready
        if not ready:  # wait for one, or until an idle worker may take back a slow task
            timeout = min(POLL_S, max(0.01, self.sched.wake_at - time.monotonic()))
            ready, _ = self.ray.wait(refs, num_returns=1, timeout=timeout)
        return ready

    def _settle(self, ref) -> None:
        i = self.pending.get(ref)
        if i is None:  # forgotten: requeued with a lost worker or a failed input
            return
        try:
            report = self.ray.get(ref)
        except self.ray.exceptions.RayError as e:
            self._failed(ref, i, e)
            return
        del self.pending[ref]
        self.refs[i] = None
        self.last_done = time.monotonic()
        self.sched.complete(i, self.last_done)
        self.on_done(report)

    def _failed(self, ref, i: int, e: Exception) -> None:
        errors = self.ray.exceptions
        # an input's failure reaches this task too: settle the inputs first, which requeues this
        # task along with a failed input, so that only a task's own failure counts against it
        inputs = [self.refs[d] for d in self.sched.inputs_in_flight(i)]
        if inputs:
            for r in self.ray.wait(inputs, num_returns=len(inputs), timeout=0)[0]:
                self._settle(r)
            if ref not in self.pending:
                return
        del self.pending[ref]  # read: not stale
        if isinstance(e, errors.RayActorError):  # died or unreachable (ActorDiedError, ActorUnavailableError)
            self._lost(self.sched.worker[i], e)
            return
        key, cause = self.keys[i], e.cause if isinstance(e, errors.RayTaskError) else e
        if isinstance(cause, TileError):
            key, cause = cause.key, cause.cause
        retry = transient(cause) or not isinstance(e, errors.RayTaskError)  # a Ray system error: worth a retry
        if not retry or self.failures[i] >= TASK_RETRIES:
            err = TileError(key, cause if isinstance(cause, BaseException) else e)
            if self.failures[i]:
                err.add_note(f"{self.failures[i] + 1} attempts")
            raise err from None
        self.failures[i] += 1
        log.warning("task %s: %s: %s; retry %d/%d", key, type(cause).__name__, cause, self.failures[i], TASK_RETRIES)
        self._forget(self.sched.requeue(i))

    def _lost(self, w: int, e: Exception) -> None:
        """Worker ``w`` died or cannot be reached: its tasks go to live workers, and it is pinged
        until it answers again (Ray restarts it when the cluster has room)."""
        lost, requeued = self.sched.worker_lost(w)
        self._forget(requeued)
        self.last_error[w] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
        log.warning("worker-%d lost (%s); %d task(s) requeued", w, self.last_error[w], len(requeued))
        for i in lost:
            self.losses[i] += 1
            if self.losses[i] > WORKER_LOSSES:
                raise TileError(
                    self.keys[i],
                    RuntimeError(
                        f"its worker was lost {self.losses[i]} times while running it (last: {self.last_error[w]}); "
                        "finished tiles are recorded: re-run with --resume"
                    ),
                ) from None
        self._ping(w)

    def _forget(self, tasks: list[int]) -> None:
        for i in tasks:
            if self.pending.pop(self.refs[i], None) is not None:
                self.stale.add(self.refs[i])
            self.refs[i] = None

    def _drop(self, ref) -> None:
        """A requeued task's old ref resolved: its result or error is superseded (read here so that
        Ray does not report it as unhandled)."""
        self.stale.discard(ref)
        try:
            self.ray.get(ref)
        except self.ray.exceptions.RayError:
            pass

    def _cancel(self, ref) -> None:
        try:
            self.ray.cancel(ref)
        except (self.ray.exceptions.RayError, ValueError):  # finished or gone already: nothing to cancel
            pass

    def _ping(self, w: int) -> None:
        self.pings[self.actors[w].ping.remote()] = w

    def _pinged(self, ref) -> None:
        w = self.pings.pop(ref)
        try:
            self.ray.get(ref)
        except self.ray.exceptions.RayError as e:  # still restarting, or cannot be placed
            self.last_error[w] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
            self.ping_at[w] = time.monotonic() + PING_INTERVAL_S
            return
        self.sched.worker_up(w)
        self.ever_up = True

    def _check(self, now: float) -> None:
        for w, at in list(self.ping_at.items()):
            if at <= now:
                del self.ping_at[w]
                self._ping(w)
        if any(self.sched.up):
            self.none_up_since = now
        else:
            self.last_done = now  # the stall clock runs only while some worker is up
        if now - self.none_up_since > self.ex.no_worker_timeout_s:
            if not self.ever_up and hasattr(self.ex, "waiting_for_workers"):  # none has ever started
                raise RenderStalled(self.ex.waiting_for_workers(now - self.none_up_since))
            why = "; ".join(f"worker-{w}: {m}" for w, m in sorted(self.last_error.items())[:3]) or "not started"
            raise RenderStalled(
                f"no live Ray worker for {now - self.none_up_since:.0f} s ({len(self.actors)} asked for; {why}): "
                "the cluster has no room to start or restart them; add nodes or pass fewer --workers, then "
                "re-run with --resume (finished tiles are recorded)"
            )
        if now - self.last_done > self.ex.stall_timeout_s:
            running = sorted(self.pending.values())
            where = f", e.g. {self.keys[running[0]]} on worker-{self.sched.worker[running[0]]}" if running else ""
            raise RenderStalled(
                f"no task finished in {now - self.last_done:.0f} s ({len(running)} running{where}; "
                f"{sum(self.sched.up)}/{len(self.actors)} workers up, {self.sched.left} task(s) left): a worker "
                "hangs or the cluster lost its resources; re-run with --resume (finished tiles are recorded) "
                "or raise OURGAN_STALL_TIMEOUT_S"
            )
