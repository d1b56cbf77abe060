"""The Ray executor: one actor per GPU (or per CPU worker slot), each owning a stable band of the
image across levels; levels run as dependent task waves.

Every task is submitted to its owner actor with the ObjectRefs of the tasks it reads from (the
tiles of the level below that cover its halo-expanded window) as arguments, so Ray starts it as
soon as those exist: no barrier between levels. Actors execute out of order, so a tile whose
inputs are ready never waits behind one whose inputs are not. Tasks carry keys, never pixels or
weights; actors load the model once and read and write the store themselves. In-flight work is
bounded with ``ray.wait``. Actors restart and their tasks are retried (tasks are idempotent:
whole-chunk writes plus a completion record).
"""

from __future__ import annotations

import dataclasses
import os
import socket
from typing import Callable, Sequence

from ..errors import TileError, UserError
from ..plan import PyramidKey, RenderPlan, TaskKey
from ..tile import RenderJob, TaskReport

MAX_RESTARTS = 4
MAX_TASK_RETRIES = 4


def _check_reachable(address: str, timeout: float = 3.0) -> None:
    """Fail within seconds, with one line, when a HOST:PORT or ray:// address does not answer."""
    if address == "auto":
        return
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"--address {address!r}: expected auto, HOST:PORT or ray://HOST:PORT")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as e:
        raise UserError(f"--address {address!r}: no Ray cluster answers there ({e.strerror or e}); start one with "
                        "`ray start --head` or check the address") from None


def connect(address: str | None, num_cpus: int) -> bool:
    """Join ``address`` or start the embedded local Ray. Returns True if we started it."""
    import ray

    if ray.is_initialized():
        return False
    if address is None:
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
        return True
    _check_reachable(address)
    try:
        ray.init(address=address, log_to_driver=False, configure_logging=False)
    except (ConnectionError, RuntimeError) as e:
        raise UserError(f"--address {address!r}: could not join the Ray cluster ({str(e).splitlines()[0][:160]})") \
            from None
    return True


class _TileActor:
    def __init__(self, job: RenderJob, name: str):
        from ..tile import TileWorker

        # A worker that cannot load the model or open the store reports that as its tasks' error
        # (with the key and the real cause) rather than dying and being restarted in vain.
        self.worker, self.init_error = None, None
        try:
            self.worker = TileWorker(job, name=name)
        except Exception as e:
            self.init_error = e

    def run(self, key: TaskKey, *_deps: TaskReport) -> TaskReport:  # deps only order the task
        if self.worker is None:
            raise TileError(key, self.init_error)
        return self.worker.run(key)

    def node(self) -> str:
        import ray

        return ray.get_runtime_context().get_node_id()


class RayExecutor:
    name = "ray"

    def __init__(self, workers: int = 2, address: str | None = None, device: str = "cpu",
                 cpus_per_worker: int | None = None, max_in_flight: int | None = None):
        self.workers = workers
        self.address = address
        self.device = device
        self.cpus_per_worker = cpus_per_worker
        self.max_in_flight = max_in_flight or 4 * workers
        self.actors: list = []

    def run(self, job: RenderJob, plan: RenderPlan, keys: Sequence[TaskKey],
            on_done: Callable[[TaskReport], None]) -> None:
        import ray

        if job.store.startswith("memory://"):
            raise UserError(f"--out {job.store!r}: memory:// lives inside one process; Ray workers cannot see it. "
                            "Use a path, file:// or object storage (s3://, gs://)")
        cores = os.cpu_count() or 1
        started = connect(self.address, num_cpus=max(cores, self.workers))
        cpus = self.cpus_per_worker or self._cpus_per_worker()
        gpu = self.device.startswith("cuda")
        job = dataclasses.replace(job, threads=cpus)
        Actor = ray.remote(_TileActor).options(
            num_cpus=0 if gpu else cpus, num_gpus=1 if gpu else 0, max_restarts=MAX_RESTARTS,
            max_task_retries=MAX_TASK_RETRIES, allow_out_of_order_execution=True)
        try:
            self.actors = [Actor.remote(job, f"worker-{i}") for i in range(self.workers)]
            self._run(plan, keys, on_done)
        finally:
            for a in self.actors:
                ray.kill(a)
            self.actors = []
            if started:
                ray.shutdown()

    def _cpus_per_worker(self) -> int:
        """Each worker's share of the cluster's CPUs, but no more than the smallest CPU node has,
        so that a worker whose node is lost can be restarted on any surviving node."""
        import ray

        nodes = [n for n in ray.nodes() if n.get("Alive")]
        per_node = [c for c in (int(n.get("Resources", {}).get("CPU", 0)) for n in nodes) if c > 0] or [1]
        return max(1, min(sum(per_node) // self.workers, min(per_node)))

    def _run(self, plan: RenderPlan, keys: Sequence[TaskKey], on_done: Callable[[TaskReport], None]) -> None:
        import ray

        refs: dict[TaskKey, object] = {}
        pending: dict[object, TaskKey] = {}

        def drain(block_until: int) -> None:
            while len(pending) > block_until:
                ready, _ = ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    key = pending.pop(ref)
                    on_done(self._result(ref, key))

        for key in keys:
            deps = plan.pyramid_dependencies(key) if isinstance(key, PyramidKey) else plan.dependencies(key)
            dep_refs = [refs[d] for d in deps if d in refs]  # deps not in refs were done before (resume)
            actor = self.actors[plan.owner(key, self.workers)]
            ref = actor.run.remote(key, *dep_refs)
            refs[key] = ref
            pending[ref] = key
            drain(self.max_in_flight)
        drain(0)

    @staticmethod
    def _result(ref, key: TaskKey) -> TaskReport:
        import ray
        from ray.exceptions import RayActorError, RayTaskError

        try:
            return ray.get(ref)
        except RayTaskError as e:
            original = e.cause  # the exception the worker raised, unpickled
            if isinstance(original, TileError):
                raise TileError(original.key, original.cause) from None
            raise TileError(key, original if isinstance(original, BaseException) else e) from None
        except RayActorError as e:
            raise TileError(key, RuntimeError(
                f"worker died and could not be restarted ({str(e).splitlines()[0][:200]}); "
                "finished tiles are recorded: re-run with --resume")) from None
