"""The Ray executor: one actor per GPU (or per CPU worker slot), each owning a stable band of the
image across levels; levels run as dependent task waves.

Every task goes to its owner actor (``plan.owner``) with the ObjectRefs of the not-yet-finished
tasks it reads from (the tiles of the level below that cover its halo-expanded window) as
arguments, so Ray starts it as soon as those exist: no barrier between levels. Each owner has its
own queue in dependency order and its own bound on in-flight tasks, so every worker is busy from
the start and a worker that finishes its band of level l goes straight on to its band of level
l+1. Actors execute out of order, so a tile whose inputs are ready never waits behind one whose
inputs are not. Tasks carry keys, never pixels or weights; actors load the model once and read
and write the store themselves. Actors restart and their tasks are retried (tasks are idempotent:
whole-chunk writes plus a completion record).
"""

from __future__ import annotations

import dataclasses
import os
import socket
from collections import deque
from typing import Callable, Sequence

from ..errors import TileError, UserError
from ..plan import PyramidKey, RenderPlan, TaskKey
from ..tile import RenderJob, TaskReport

MAX_RESTARTS = 4
MAX_TASK_RETRIES = 4
IN_FLIGHT_PER_WORKER = 6
CONNECT_TIMEOUT_S = 5.0
# Object-storage settings a driver may have in its environment that workers on other nodes need
# too. They travel as actor arguments (like --storage-options), never as a runtime_env, which
# the Ray dashboard would show, and never into the store.
FORWARDED_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL",
                 "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION", "AZURE_STORAGE_CONNECTION_STRING",
                 "AZURE_STORAGE_ACCOUNT_NAME", "AZURE_STORAGE_ACCOUNT_KEY")
FORWARDED_PREFIXES = ("FSSPEC_",)  # fsspec's per-protocol defaults, e.g. FSSPEC_S3_ENDPOINT_URL


def storage_environment() -> dict[str, str]:
    """The driver's object-storage environment variables that workers should see too."""
    return {k: v for k, v in os.environ.items() if k in FORWARDED_ENV or k.startswith(FORWARDED_PREFIXES)}


def _refuse_address(address: str, why: str) -> UserError:
    return UserError(f"--address {address!r}: {why}; start a cluster with `ray start --head` and pass the address "
                     "it prints (HOST:PORT, ray://HOST:10001 or auto on a cluster node)")


def _probe_gcs(address: str, hostport: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Ask the Ray head at HOST:PORT for its cluster id, once, with a deadline: a port that
    answers but is not a Ray head would otherwise keep ``ray.init`` retrying for minutes."""
    try:
        import grpc
        from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc
    except ImportError:  # pragma: no cover - Ray internals moved; ray.init's own retries remain
        return
    with grpc.insecure_channel(hostport) as channel:
        try:
            gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel).GetClusterId(
                gcs_service_pb2.GetClusterIdRequest(), timeout=timeout)
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.UNAUTHENTICATED:
                return  # a Ray head with token authentication answered; ray.init presents the token
            raise _refuse_address(address, f"no Ray head answers at {hostport} ({e.code().name})") from None


def check_address(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Fail within seconds, with one line, when an address does not lead to a Ray cluster."""
    target = address
    if address == "auto":
        from ray._private.utils import read_ray_address

        target = os.environ.get("RAY_ADDRESS") or read_ray_address()
        if not target:
            raise _refuse_address(address, "no Ray cluster is running on this machine")
    client = target.startswith("ray://")
    hostport = target.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"--address {address!r}: expected auto, HOST:PORT or ray://HOST:PORT")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as e:
        raise _refuse_address(address, f"nothing answers at {hostport} ({e.strerror or e})") from None
    if not client:
        _probe_gcs(address, hostport, timeout)


def connect(address: str | None, num_cpus: int) -> bool:
    """Join ``address`` or start the embedded local Ray. Returns True if this call started Ray."""
    import ray

    if ray.is_initialized():
        return False
    if address is None:
        # address="local": always a fresh embedded instance, even if a cluster runs on this machine
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
        return True
    check_address(address)
    try:
        ray.init(address=address, log_to_driver=False, configure_logging=False)
    except (ConnectionError, RuntimeError) as e:
        raise _refuse_address(address, f"could not join ({str(e).splitlines()[0][:160]})") from None
    return True


def _deps(plan: RenderPlan, key: TaskKey) -> list[TaskKey]:
    return plan.pyramid_dependencies(key) if isinstance(key, PyramidKey) else plan.dependencies(key)


def wavefront_order(plan: RenderPlan, keys: Sequence[TaskKey]) -> list[TaskKey]:
    """``keys`` (in dependency order) reordered so that every task comes right after the last of
    the tasks it reads from: level l+1 and the viewing pyramid follow level l down the image
    like a wavefront instead of waiting for whole levels. Pure: a function of the plan alone."""
    todo = set(keys)
    waiting: dict[TaskKey, int] = {}
    dependents: dict[TaskKey, list[TaskKey]] = {k: [] for k in keys}
    for key in keys:
        needs = [d for d in _deps(plan, key) if d in todo]
        waiting[key] = len(needs)
        for d in needs:
            dependents[d].append(key)  # in key order
    order: list[TaskKey] = []
    for key in keys:
        if waiting[key]:
            continue  # placed, or to be placed, right after its last dependency
        stack = [key]
        while stack:
            placed = stack.pop()
            order.append(placed)
            waiting[placed] = -1  # placed
            ready = []
            for k in dependents[placed]:
                waiting[k] -= 1
                if not waiting[k]:
                    ready.append(k)
            stack.extend(reversed(ready))  # the first ready dependent goes next
    return order


class _TileActor:
    def __init__(self, job: RenderJob, name: str, env: dict[str, str]):
        from ..tile import TileWorker

        os.environ.update(env)
        # A worker that cannot load the model or open the store reports that as its tasks' error
        # (with the key and the real cause) rather than dying and being restarted in vain.
        self.worker, self.init_error = None, None
        try:
            self.worker = TileWorker(job, name=name)
        except Exception as e:
            self.init_error = e

    def run(self, key: TaskKey, *_after: TaskReport) -> TaskReport:  # the refs only order the task
        if self.worker is None:
            raise TileError(key, self.init_error)
        return self.worker.run(key)

    def peak_rss(self) -> int:
        """This worker process's peak resident memory so far, in bytes."""
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


class RayExecutor:
    """``workers=None``: one actor per GPU of the cluster (``device="cuda"``), else one per node
    with CPUs, each using that many CPUs (the smallest node's count)."""

    name = "ray"

    def __init__(self, workers: int | None = 2, address: str | None = None, device: str = "cpu",
                 cpus_per_worker: int | None = None, in_flight_per_worker: int = IN_FLIGHT_PER_WORKER):
        self.workers = workers
        self.address = address
        self.device = device
        self.cpus_per_worker = cpus_per_worker
        self.in_flight_per_worker = in_flight_per_worker
        self.actors: list = []
        self.worker_peak_rss: list[int] = []  # bytes, per worker, after a successful run

    def run(self, job: RenderJob, plan: RenderPlan, keys: Sequence[TaskKey],
            on_done: Callable[[TaskReport], None]) -> None:
        import ray

        for what, url in (("--out", job.store), ("MODEL", job.model)):
            if url.startswith("memory://"):
                raise UserError(f"{what} {url!r}: memory:// lives inside one process and Ray workers cannot see "
                                "it; use a path on a shared file system, file:// or object storage (s3://, gs://)")
        started = connect(self.address, num_cpus=max(os.cpu_count() or 1, self.workers or 1))
        try:
            workers, cpus, gpu = self._resources()
            job = dataclasses.replace(job, threads=cpus)
            Actor = ray.remote(_TileActor).options(
                num_cpus=0 if gpu else cpus, num_gpus=1 if gpu else 0, max_restarts=MAX_RESTARTS,
                max_task_retries=MAX_TASK_RETRIES, allow_out_of_order_execution=True)
            env = storage_environment()
            self.actors = [Actor.remote(job, f"worker-{i}", env) for i in range(workers)]
            self._run(plan, keys, on_done)
            self.worker_peak_rss = self._peak_rss()
        finally:
            for a in self.actors:
                ray.kill(a)
            self.actors = []
            if started:
                ray.shutdown()

    def _peak_rss(self) -> list[int]:
        """Each worker's peak memory, for benchmarks; a diagnostic, so a worker lost after the
        last task does not fail a finished render."""
        import ray

        try:
            return ray.get([a.peak_rss.remote() for a in self.actors], timeout=60)
        except (ray.exceptions.RayError, TimeoutError):
            return []

    def _resources(self) -> tuple[int, int, bool]:
        """(workers, CPUs per worker, on GPU), checked against what the cluster has, so that a
        render never waits forever for actors that cannot be placed."""
        import ray

        gpu = self.device.startswith("cuda")
        nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
        per_node = [c for c in (int(r.get("CPU", 0)) for r in nodes) if c > 0] or [1]
        if gpu:
            have = int(sum(r.get("GPU", 0) for r in nodes))
            workers = self.workers or have
            if workers < 1 or workers > have:
                raise UserError(f"--device cuda: {workers or 1} GPU worker(s) asked for, the Ray cluster has {have} "
                                f"GPU(s); pass --workers {max(1, have)} or fewer, or --device cpu")
            return workers, max(1, min(sum(per_node) // workers, min(per_node))), True
        workers = self.workers or len(per_node)
        # each worker's share of the CPUs, but no more than the smallest node has, so that a
        # worker whose node is lost can be restarted on any surviving node
        cpus = self.cpus_per_worker or max(1, min(sum(per_node) // workers, min(per_node)))
        fits = sum(c // cpus for c in per_node)
        if workers > fits:
            raise UserError(f"--workers {workers}: the Ray cluster has room for {fits} worker(s) of {cpus} CPU(s) "
                            f"(nodes with {per_node} CPUs); pass --workers {fits} or fewer")
        return workers, cpus, False

    def _run(self, plan: RenderPlan, keys: Sequence[TaskKey], on_done: Callable[[TaskReport], None]) -> None:
        """Submit each owner's tasks in order, at most ``in_flight_per_worker`` at a time, a task
        only once every task it reads from is submitted (its ObjectRef is then an argument) or
        done (then it is left out)."""
        import ray

        todo = set(keys)
        queues: list[deque[TaskKey]] = [deque() for _ in self.actors]
        for key in wavefront_order(plan, keys):
            queues[plan.owner(key, len(self.actors))].append(key)
        refs: dict[TaskKey, object] = {}  # submitted, not yet done
        pending: dict[object, tuple[TaskKey, int]] = {}
        busy = [0] * len(self.actors)

        def submit_ready() -> None:
            for w, queue in enumerate(queues):
                while queue and busy[w] < self.in_flight_per_worker:
                    needs = [d for d in _deps(plan, queue[0]) if d in todo]  # not in todo: done before (resume)
                    if any(d not in refs for d in needs):  # not submitted yet: by another owner, later
                        break
                    key = queue.popleft()
                    ref = self.actors[w].run.remote(key, *(refs[d] for d in needs))
                    refs[key], pending[ref] = ref, (key, w)
                    busy[w] += 1

        submit_ready()
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                key, w = pending.pop(ref)
                report = self._result(ref, key)
                todo.discard(key)  # done: its dependents no longer need its ref
                del refs[key]
                busy[w] -= 1
                on_done(report)
            submit_ready()
        left = sum(map(len, queues))
        if left:  # pragma: no cover - keys not in dependency order
            raise RuntimeError(f"internal: {left} task(s) could never be submitted; keys were not in dependency order")

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
