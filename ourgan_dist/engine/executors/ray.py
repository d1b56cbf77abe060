"""The Ray executor: one actor per GPU (or per CPU worker slot), each preferring a stable band of
the image across levels; levels run as dependent task waves.

``RayExecutor`` sizes the workers against what the cluster offers and may add (``capacity.py``),
checks that a worker can reach the model and the store (``worker_access.py``), starts one actor
per worker and hands the render to the driver's loop (``Dispatch``, ``dispatch.py``: dependent
waves, work stealing, retries, deadlines). Actors restart without limit (``max_restarts=-1``) but
Ray retries no task itself; the driver does. Tasks carry keys, never pixels or weights; actors
load the model once and read and write the store themselves, and receive no credentials
(``worker_access.py``). Joining the cluster is ``ray_cluster.py``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Callable, Sequence

from ...errors import TileError, UserError
from ...planning.plan import RenderPlan, TaskKey
from ...store.storage import strip_userinfo
from ..tile import RenderJob, TaskReport
from . import capacity
from .capacity import Sizing
from .dispatch import Dispatch
from .ray_cluster import connect
from .schedule import wavefront_order
from .worker_access import access_check_task, for_worker_options, for_workers, refuse_access, storage_environment

__all__ = ["RayExecutor", "wavefront_order"]

log = logging.getLogger(__name__)

MAX_RESTARTS = -1  # a worker is restarted whenever the cluster has room; tasks are bounded below
IN_FLIGHT_PER_WORKER = 4
PREFETCH_PER_WORKER = 2  # of those, submitted while still waiting for their inputs
STALL_TIMEOUT_S = 1800.0  # no task finished for this long (OURGAN_STALL_TIMEOUT_S overrides)
NO_WORKER_TIMEOUT_S = 600.0  # no live worker for this long (OURGAN_NO_WORKER_TIMEOUT_S overrides)
ACCESS_CHECK_TIMEOUT_S = 120.0  # a worker's access check; past it (no node yet) the render goes on


def _seconds(name: str, default: float) -> float:
    """A deadline from the environment: 1 s to 30 days; anything else refused in one line."""
    from ...store.storage import env_number

    return env_number(name, default, 1, 30 * 86400)


class _TileActor:
    def __init__(self, job: RenderJob, name: str, env: dict[str, str]):
        # glibc's allocator is left as it is here: bounding it (allocator.py) kept a worker's peak
        # flat from 2K to 16K (x1.05 against x1.10) but made the demo's tasks 50% slower
        os.environ.update(env)
        self.job, self.name = job, name
        self.worker, self.init_error = None, None
        self._start()  # now, so the model is loaded by the time the first inputs exist

    def _start(self) -> None:
        """Load the model and open the store. A failure is kept, not raised: the actor stays
        up, reports it as its tasks' error (with the key) and tries again on the next task, so
        one storage hiccup while reading the checkpoint costs a retry, not the worker."""
        from ..tile import TileWorker

        try:
            self.worker, self.init_error = TileWorker(self.job, name=self.name), None
        except Exception as e:
            self.init_error = e

    def run(self, key: TaskKey, *_after: TaskReport) -> TaskReport:  # the refs only order the task
        if self.worker is None:
            self._start()
        if self.worker is None:
            raise TileError(key, self.init_error)
        return self.worker.run(key)

    def ping(self) -> str:
        return self.name

    def peak_rss(self) -> int:
        """This worker process's peak resident memory so far, in bytes."""
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


class RayExecutor:
    """``workers=None``: one actor per GPU of the cluster (``device="cuda"``), else one per node
    with CPUs, each using that many CPUs (the smallest node's count). The count is checked
    (``check_capacity``, ``capacity.py``) before the render writes anything; on a cluster with an
    autoscaler, workers without room yet are asked of it and take tasks as their nodes come up. ``actor`` is the worker
    class (tests pass stand-ins); the timeouts bound how long a render that cannot progress waits."""

    name = "ray"

    def __init__(
        self,
        workers: int | None = 2,
        address: str | None = None,
        device: str = "cpu",
        cpus_per_worker: int | None = None,
        in_flight_per_worker: int = IN_FLIGHT_PER_WORKER,
        prefetch_per_worker: int = PREFETCH_PER_WORKER,
        stall_timeout_s: float | None = None,
        no_worker_timeout_s: float | None = None,
        actor: type = _TileActor,
    ):
        self.workers = workers
        self.address = address
        self.device = device
        self.cpus_per_worker = cpus_per_worker
        self.in_flight_per_worker = in_flight_per_worker
        self.prefetch_per_worker = min(prefetch_per_worker, in_flight_per_worker - 1)
        self.stall_timeout_s = stall_timeout_s or _seconds("OURGAN_STALL_TIMEOUT_S", STALL_TIMEOUT_S)
        self.no_worker_timeout_s = no_worker_timeout_s or _seconds("OURGAN_NO_WORKER_TIMEOUT_S", NO_WORKER_TIMEOUT_S)
        self.actor = actor
        self.actors: list = []
        self.started: bool | None = None  # None: not connected by this executor; True: it started Ray
        self.offer: capacity.Offer | None = None
        self.sizing: Sizing | None = None
        self.requested = False  # an autoscaler request is out
        self.worker_peak_rss: list[int] = []  # bytes, per live worker, after a successful run

    def run(self, job: RenderJob, plan: RenderPlan, keys: Sequence[TaskKey], on_done: Callable[[TaskReport], None]) -> None:
        import ray

        for what, url in (("--out", job.store), ("MODEL", job.model)):
            if url.startswith("memory://"):
                raise UserError(
                    f"{what} {url!r}: memory:// lives inside one process and Ray workers cannot see "
                    "it; use a path on a shared file system, file:// or object storage (s3://, gs://)"
                )
        try:
            s = self.check_capacity()
            job = for_workers(dataclasses.replace(job, threads=s.cpus))  # no credentials in actor specs
            Actor = ray.remote(self.actor).options(
                num_cpus=0 if s.gpu else s.cpus,
                num_gpus=1 if s.gpu else 0,
                max_restarts=MAX_RESTARTS,
                max_task_retries=0,
                allow_out_of_order_execution=True,
            )
            if s.wait:  # room for every worker at once, past the autoscaler's upscaling speed
                log.info("asking the autoscaler for %s (%s)", s.describe(), self.offer.describe())
                capacity.request(s.bundles)
                self.requested = True
            env = storage_environment()
            # actors the cluster has no room for yet wait for their node; each takes tasks once it answers
            self.actors = [Actor.remote(job, f"worker-{i}", env) for i in range(s.workers)]
            up = Dispatch(self, plan, keys, on_done).run()
            self.worker_peak_rss = self._peak_rss([a for a, u in zip(self.actors, up) if u])
        finally:
            for a in self.actors:
                ray.kill(a)
            self.actors = []
            self.close()

    @staticmethod
    def _peak_rss(actors: list) -> list[int]:
        """Each live worker's peak memory, for benchmarks; a diagnostic, so a worker lost after
        the last task does not fail a finished render."""
        import ray

        try:
            return ray.get([a.peak_rss.remote() for a in actors], timeout=60)
        except (ray.exceptions.RayError, TimeoutError):
            return []

    def check_capacity(self) -> Sizing:
        """Connect (once) and size the workers against what the cluster offers now and what its
        autoscaler may add; raises ``UserError`` when they can never all be placed. ``render``
        calls this before it takes the lease or writes anything."""
        if self.sizing is None:
            if self.started is None:
                self.started = connect(self.address, num_cpus=max(os.cpu_count() or 1, self.workers or 1))
            self.offer = capacity.read_offer()
            self.sizing = capacity.size_workers(self.offer, self.workers, self.device, self.cpus_per_worker)
        return self.sizing

    def check_access(self, model: str, model_options: dict, store: str, store_options: dict) -> None:
        """Before the lease or the store exist: from one worker slot of the cluster (same
        resources as a worker, so on a worker's kind of node), check that a worker can read the
        model and write at ``store`` with what workers receive (allowed options, URLs without
        user:password@, the forwarded variables, the node's own credentials). Raises a one-line
        ``UserError`` when it cannot; goes on (with a warning) when no slot answers in time (an
        autoscaler still starting nodes)."""
        import ray

        s = self.check_capacity()
        task = ray.remote(access_check_task).options(num_cpus=0 if s.gpu else s.cpus, num_gpus=1 if s.gpu else 0, max_retries=0)
        ref = task.remote(
            strip_userinfo(model),
            for_worker_options(model_options),
            strip_userinfo(store),
            for_worker_options(store_options),
            storage_environment(),
        )
        wait = min(ACCESS_CHECK_TIMEOUT_S, self.no_worker_timeout_s)  # never longer than the render waits for workers
        try:
            node, problem = ray.get(ref, timeout=wait)
        except ray.exceptions.GetTimeoutError:
            ray.cancel(ref, force=True)
            log.warning(
                "no Ray worker slot answered the storage access check in %.0f s (nodes still starting?); rendering without it", wait
            )
            return
        if problem:
            raise refuse_access(problem, node)

    def close(self) -> None:
        """Withdraw the autoscaler request and leave a Ray that this executor started."""
        import ray

        if self.requested:
            self.requested = False
            try:
                capacity.request([])
            except Exception as e:  # noqa: BLE001 - the render's outcome stands; idle nodes then stay longer
                log.warning("could not withdraw the autoscaler request (%s: %s)", type(e).__name__, e)
        if self.started:
            ray.shutdown()
        self.started, self.sizing = None, None

    def _resources(self) -> tuple[int, int, bool]:
        """(workers, CPUs per worker, on GPU), checked against what the cluster has and may add."""
        s = self.check_capacity()
        return s.workers, s.cpus, s.gpu

    def waiting_for_workers(self, seconds: float) -> str:
        """Why no worker has started yet: what was asked, what the cluster offers now."""
        s = self.sizing
        asked = s.describe() if s else f"{len(self.actors)} worker(s)"
        try:
            offer = capacity.read_offer().describe()
        except Exception as e:  # noqa: BLE001 - the error is about the workers; the cluster's answer is a detail
            offer = f"the cluster did not say what it offers ({type(e).__name__})"
        auto = (
            (" and its autoscaler started none for them (see `ray status` for its node types, max_workers and launch failures)")
            if s and s.wait
            else ""
        )
        return (
            f"no live Ray worker for {seconds:.0f} s: none of the {asked} asked for has started (the cluster "
            f"has {offer}{auto}); pass fewer or smaller --workers, add nodes, or raise OURGAN_NO_WORKER_TIMEOUT_S "
            "for slow node starts, then re-run with --resume (nothing is lost)"
        )
