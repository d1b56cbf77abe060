"""Which task runs where, and when: the task graph of a render and the state of its workers.

Pure bookkeeping, no Ray: the Ray executor drives a ``Schedule`` (submit what ``assign`` returns,
report completions and failures) and tests and benchmarks drive it directly. Every operation
costs O(dependencies + log tasks), never a scan of all tasks or all workers' queues, so the
driver's cost per task stays flat from a thousand tasks to a gigapixel's tens of thousands.

A task is *ready* once every task it reads from is at least submitted: the executor then passes
their ObjectRefs as arguments and Ray starts the task the moment they exist (dependent waves, no
barrier between levels). Ready tasks whose inputs are all done are *runnable*. A worker takes,
in wavefront order: its own runnable tasks; then runnable tasks of any other owner (an idle
worker steals, so a straggler or a lost worker does not set the pace); then, up to ``prefetch``
at a time, its own ready tasks still waiting for inputs (they hide the driver's round trip, but
only a few, so that a slow neighbour cannot fill every slot). A worker holds at most ``slots``
tasks, of which at most ``slots - prefetch`` runnable ones (one running, the rest queued), and a
worker left with nothing it can run takes back a runnable task queued behind another worker's
current one, or failing that, one that has run far longer than tasks usually take (a straggler
on the critical path). The executor cancels the old copy if it has not started; tasks are
idempotent, so one that runs on does no harm, and its result is ignored.
"""

from __future__ import annotations

from collections import deque
from heapq import heappop, heappush
from math import inf
from statistics import median
from typing import Sequence

from ...planning.plan import RenderPlan, TaskKey

WAITING, READY, RUNNING, DONE = range(4)
SLOW_FACTOR, SLOW_MIN_S = 3.0, 0.5  # a task has run far too long after max(3 x the median, 0.5 s)


class TaskGraph:
    """The tasks to run (``keys``, relabelled 0..n-1 in wavefront order) and who reads whom, from
    the plan's index arithmetic. A dependency outside ``keys`` is done already (resume)."""

    def __init__(self, plan: RenderPlan, keys: Sequence[TaskKey]):
        index = {k: i for i, k in enumerate(keys)}
        deps = [[index[d] for d in plan.task_dependencies(k) if d in index] for k in keys]
        order = _wavefront(deps)
        position = [0] * len(keys)
        for p, i in enumerate(order):
            position[i] = p
        self.keys: list[TaskKey] = [keys[i] for i in order]
        self.deps: list[list[int]] = [[position[d] for d in deps[i]] for i in order]
        self.dependents: list[list[int]] = [[] for _ in order]
        for i, ds in enumerate(self.deps):
            for d in ds:
                self.dependents[d].append(i)

    def __len__(self) -> int:
        return len(self.keys)


def _wavefront(deps: list[list[int]]) -> list[int]:
    """A topological order of tasks 0..n-1 (given in dependency order) in which every task comes
    right after the last of the tasks it reads from: level l+1 and the viewing pyramid follow
    level l down the image like a wavefront instead of waiting for whole levels. O(tasks + edges)."""
    waiting = [len(ds) for ds in deps]
    dependents: list[list[int]] = [[] for _ in deps]
    for i, ds in enumerate(deps):
        for d in ds:
            dependents[d].append(i)  # in key order
    order: list[int] = []
    for root in range(len(deps)):
        if waiting[root]:
            continue  # placed, or to be placed, right after its last dependency
        waiting[root] = -1
        stack = [root]
        while stack:
            placed = stack.pop()
            order.append(placed)
            ready = []
            for k in dependents[placed]:
                waiting[k] -= 1
                if not waiting[k]:
                    waiting[k] = -1
                    ready.append(k)
            stack.extend(reversed(ready))  # the first ready dependent goes next
    if len(order) != len(deps):
        raise ValueError(
            f"internal: {len(deps) - len(order)} task(s) depend on tasks after them; keys were not in dependency order"
        )
    return order


def wavefront_order(plan: RenderPlan, keys: Sequence[TaskKey]) -> list[TaskKey]:
    """``keys`` (in dependency order) in the wavefront order the scheduler prefers."""
    return TaskGraph(plan, keys).keys


class Schedule:
    """The state of every task (waiting, ready, running, done) and every worker (up or down, its
    tasks in flight). ``owners[i]`` is task i's preferred worker (locality, not a binding)."""

    def __init__(self, graph: TaskGraph, owners: Sequence[int], workers: int, slots: int, prefetch: int):
        n = len(graph)
        self.graph, self.owners, self.slots, self.prefetch = graph, list(owners), slots, prefetch
        self.depth = max(1, slots - prefetch)  # runnable tasks a worker may hold
        self.state = bytearray(n)  # WAITING
        self.unsubmitted = [len(ds) for ds in graph.deps]  # inputs neither running nor done
        self.undone = list(self.unsubmitted)  # inputs not done
        self.worker = [-1] * n  # where a running task runs
        self.prefetched = bytearray(n)  # running, still waiting for an input
        self.up = [False] * workers
        self.running: list[set[int]] = [set() for _ in range(workers)]
        self.waits = [0] * workers  # running tasks still waiting for an input, per worker
        self.free: set[int] = set()  # up workers with a free slot
        self.crowded: set[int] = set()  # workers with a runnable task queued behind another
        self.seq = [0] * n  # submission order
        self.submitted = 0
        self.since = [inf] * n  # when a running task could start running (its inputs done)
        self.oldest: list[tuple[float, int]] = []  # heap of (since, task); entries may be stale
        self.took: deque[float] = deque(maxlen=64)  # recent times from ``since`` to done
        self.taken = bytearray(n)  # taken back once for running too long: not again
        self.ghosts = [0] * workers  # 1: still busy with a task taken back from it, until it finishes one
        self.wake_at = inf  # when a worker left idle by the last ``assign`` could take back a slow task
        self.own_runnable: list[list[int]] = [[] for _ in range(workers)]  # heaps; entries may be stale
        self.own_waiting: list[list[int]] = [[] for _ in range(workers)]
        self.runnable: list[int] = []  # every runnable task, for thieves
        self.ready = 0  # tasks in state READY
        self.left = n  # tasks not done
        for i in range(n):
            if not self.unsubmitted[i]:
                self._ready(i)

    @property
    def finished(self) -> bool:
        return self.left == 0

    # ---- workers ------------------------------------------------------------------------
    def worker_up(self, w: int) -> None:
        self.up[w] = True
        self._update(w)

    def worker_lost(self, w: int) -> tuple[list[int], list[int]]:
        """Worker ``w`` is down: (its tasks that were running, every task requeued because of it:
        those, and tasks on other workers that were submitted with their now stale ObjectRefs)."""
        self.up[w] = False
        self.ghosts[w] = 0
        self.free.discard(w)
        lost = sorted(self.running[w])
        return lost, [k for i in lost for k in self.requeue(i)]

    # ---- tasks --------------------------------------------------------------------------
    def assign(self, now: float = 0.0) -> tuple[list[tuple[int, int]], list[int]]:
        """(task, worker) pairs to submit now, each task's inputs already submitted or done, and the
        running tasks withdrawn from their workers to make that so (their refs are stale). ``now``:
        seconds on any steady clock (tasks are taken back for running too long only with one)."""
        out: list[tuple[int, int]] = []
        withdrawn: list[int] = []
        self.wake_at = inf
        for w in list(self.free) if self.ready else ():  # locality first: a worker's own tasks
            while self.ready and self._has_room(w):
                i = self._pop(self.own_runnable[w])
                if i < 0:
                    break
                out.append((i, w))
                self._start(i, w, now)
        for w in list(self.free) if self.ready else ():  # then steal runnable work, then prefetch own
            while self.ready and len(self.running[w]) < self.slots:
                i = self._pop(self.runnable) if self._has_room(w) else -1
                if i < 0 and self.waits[w] < self.prefetch:
                    i = self._pop(self.own_waiting[w])
                if i < 0:
                    break
                out.append((i, w))
                self._start(i, w, now)
        for w in list(self.free):  # nothing it can run: take back work
            if self._runnable_in_flight(w):
                continue
            i = self._take_back(now)
            if i < 0:
                break
            withdrawn += self.requeue(i)  # READY again, with whatever was submitted with its ref
            out.append((i, w))
            self._start(i, w, now)
        if withdrawn:  # what was assigned above and withdrawn again waits for its next turn
            out = [(i, w) for i, w in out if self.state[i] == RUNNING and self.worker[i] == w]
        return out, withdrawn

    def complete(self, i: int, now: float = 0.0) -> None:
        if self.since[i] < now:
            self.took.append(now - self.since[i])
        self.ghosts[self.worker[i]] = 0  # it runs one task at a time: what it had taken back is over
        self._stop(i)
        self.state[i] = DONE
        self.left -= 1
        for j in self.graph.dependents[i]:
            self.undone[j] -= 1
            if self.undone[j]:
                continue
            if self.state[j] == READY:  # now runnable
                heappush(self.own_runnable[self.owners[j]], j)
                heappush(self.runnable, j)
            elif self.prefetched[j]:  # its worker can run it now
                self.prefetched[j] = 0
                self.waits[self.worker[j]] -= 1
                self._update(self.worker[j])
                self._started_running(j, now)

    def requeue(self, i: int) -> list[int]:
        """Running task ``i`` is to run again (failed, or its worker was lost); so is every running
        task that was submitted with its ObjectRef. Returns all of them."""
        out, stack = [], [i]
        while stack:
            k = stack.pop()
            if self.state[k] != RUNNING:
                continue
            self._stop(k)
            self.state[k] = WAITING
            out.append(k)
            for j in self.graph.dependents[k]:
                self.unsubmitted[j] += 1
                if self.state[j] == READY:
                    self.state[j] = WAITING
                    self.ready -= 1
                elif self.state[j] == RUNNING:
                    stack.append(j)
            if not self.unsubmitted[k]:
                self._ready(k)
        return out

    def inputs_in_flight(self, i: int) -> list[int]:
        return [d for d in self.graph.deps[i] if self.state[d] == RUNNING]

    # ---- internals ----------------------------------------------------------------------
    def _ready(self, i: int) -> None:
        self.state[i] = READY
        self.ready += 1
        if self.undone[i]:
            heappush(self.own_waiting[self.owners[i]], i)
        else:
            heappush(self.own_runnable[self.owners[i]], i)
            heappush(self.runnable, i)

    def _pop(self, heap: list[int]) -> int:
        while heap:
            i = heappop(heap)
            if self.state[i] == READY:  # else a stale entry: taken from another heap, or requeued
                return i
        return -1

    def _start(self, i: int, w: int, now: float) -> None:
        self.state[i] = RUNNING
        self.ready -= 1
        self.worker[i] = w
        self.running[w].add(i)
        self.submitted += 1
        self.seq[i] = self.submitted
        if self.undone[i]:
            self.prefetched[i] = 1
            self.waits[w] += 1
        else:
            self._started_running(i, now)
        self._update(w)
        for j in self.graph.dependents[i]:
            self.unsubmitted[j] -= 1
            if not self.unsubmitted[j] and self.state[j] == WAITING:
                self._ready(j)

    def _started_running(self, i: int, now: float) -> None:
        self.since[i] = now
        heappush(self.oldest, (now, i))

    def _take_back(self, now: float) -> int:
        """A runnable task queued behind another on the busiest worker; else the task that has run
        longest, if far longer than tasks usually take; else -1."""
        if self.crowded:
            v = max(self.crowded, key=self._runnable_in_flight)
            return max((k for k in self.running[v] if not self.prefetched[k]), key=self.seq.__getitem__)
        typical = median(self.took) if self.took else inf  # a median: stragglers do not move it
        while self.oldest:
            since, i = self.oldest[0]
            slow_at = since + max(SLOW_FACTOR * typical, SLOW_MIN_S)
            if self.state[i] != RUNNING or self.since[i] != since or self.prefetched[i] or self.taken[i]:
                heappop(self.oldest)  # stale
            elif now >= slow_at:
                heappop(self.oldest)
                self.taken[i] = 1
                self.ghosts[self.worker[i]] = 1
                return i
            else:
                self.wake_at = slow_at
                break
        return -1

    def _stop(self, i: int) -> None:
        self.since[i] = inf
        w = self.worker[i]
        self.running[w].discard(i)
        if self.prefetched[i]:
            self.prefetched[i] = 0
            self.waits[w] -= 1
        self.worker[i] = -1
        self._update(w)

    def _runnable_in_flight(self, w: int) -> int:
        return len(self.running[w]) - self.waits[w] + self.ghosts[w]

    def _has_room(self, w: int) -> bool:  # for a runnable task
        return len(self.running[w]) < self.slots and self._runnable_in_flight(w) < self.depth

    def _update(self, w: int) -> None:
        if self.up[w] and len(self.running[w]) < self.slots:
            self.free.add(w)
        else:
            self.free.discard(w)
        if self._runnable_in_flight(w) >= 2:
            self.crowded.add(w)
        else:
            self.crowded.discard(w)
