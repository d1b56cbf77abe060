"""The Ray executor: one actor per GPU (or per CPU worker slot), each preferring a stable band of
the image across levels; levels run as dependent task waves.

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

import dataclasses
import logging
import os
import re
import socket
import time
from typing import Callable, Sequence

from ...errors import TileError, UserError
from ...planning.plan import RenderPlan, TaskKey
from ...store.storage import strip_userinfo, transient
from ..tile import RenderJob, TaskReport
from . import capacity
from .capacity import Sizing
from .schedule import Schedule, TaskGraph, wavefront_order

__all__ = [
    "RayExecutor",
    "RenderStalled",
    "check_address",
    "cluster_workers",
    "connect",
    "quiet_embedded_ray_auth",
    "wavefront_order",
]

log = logging.getLogger(__name__)

MAX_RESTARTS = -1  # a worker is restarted whenever the cluster has room; tasks are bounded below
TASK_RETRIES = 3  # re-runs of a task after transient errors
WORKER_LOSSES = 8  # times a task may be lost with its worker before the render gives up
IN_FLIGHT_PER_WORKER = 4
PREFETCH_PER_WORKER = 2  # of those, submitted while still waiting for their inputs
POLL_S = 1.0  # the longest the driver waits before checking pings and deadlines
PING_INTERVAL_S = 2.0  # between pings of a lost worker
STALL_TIMEOUT_S = 1800.0  # no task finished for this long (OURGAN_STALL_TIMEOUT_S overrides)
NO_WORKER_TIMEOUT_S = 600.0  # no live worker for this long (OURGAN_NO_WORKER_TIMEOUT_S overrides)
CONNECT_TIMEOUT_S = 5.0
# Credentials never travel to the workers: they would sit in the cluster's actor specs (shown by
# `ray list actors --detail` and the dashboard), expire mid-render when they are session tokens,
# and override the nodes' own roles. Workers get theirs from their node: its environment (set
# where `ray start` runs, or a Kubernetes Secret mapped into the pod) or its role (an instance
# profile, IRSA, workload identity). What workers do receive is an allow-list (docs/safety.md):
# a name not on it is left out, whatever it is called (SSECustomerKey, headers, passwd, ...).
# Storage options workers may receive; a nested dict lists what may pass inside that option.
WORKER_OPTIONS: dict = {
    "anon": None,
    "endpoint_url": None,
    "use_ssl": None,
    "region_name": None,
    "requester_pays": None,
    "client_kwargs": {"endpoint_url": None, "region_name": None},
    "config_kwargs": {
        "connect_timeout": None,
        "read_timeout": None,
        "signature_version": None,
        "retries": {"max_attempts": None, "total_max_attempts": None, "mode": None},
        "s3": {"addressing_style": None},
    },
}
# Environment variables workers may receive from the driver, besides FSSPEC_<PROTOCOL>_<OPTION>
# for a top-level option above and FSSPEC_<PROTOCOL> (a JSON object: passed filtered the same way).
FORWARDED_ENV = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION")
_FSSPEC_ENV = re.compile(r"FSSPEC_([A-Z0-9]+)(?:_(.+))?")


def _seconds(name: str, default: float) -> float:
    """A deadline from the environment: 1 s to 30 days; anything else refused in one line."""
    from ...store.storage import env_number

    return env_number(name, default, 1, 30 * 86400)


def _scalar(value):
    """A value workers may receive: a plain scalar (URLs without their user:password@ part); None
    for anything else (a dict where none is expected, a list, an object)."""
    if isinstance(value, str):
        return strip_userinfo(value)
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return None


def for_worker_options(options: dict, allowed: dict | None = None) -> dict:
    """Storage options as workers may receive them: only the names of ``WORKER_OPTIONS``, at
    their depth, with plain values; everything else (a key, a secret, a token, a header, an
    encryption key, a password under any name) is left out."""
    allowed = WORKER_OPTIONS if allowed is None else allowed
    out = {}
    for k, v in (options or {}).items():
        if k not in allowed:
            continue
        if isinstance(allowed[k], dict):
            if isinstance(v, dict) and (sub := for_worker_options(v, allowed[k])):
                out[k] = sub
        elif (value := _scalar(v)) is not None or v is None:
            out[k] = value
    return out


def storage_environment(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The driver's object-storage environment variables that workers receive too: an endpoint
    (without user:password@), a region, fsspec's allowed per-protocol options; never a key,
    secret or token, and an ``FSSPEC_S3='{...}'`` object only filtered like storage options."""
    import json

    env = {}
    for k, v in (os.environ if environ is None else environ).items():
        if k in FORWARDED_ENV:
            env[k] = strip_userinfo(v)
        elif m := _FSSPEC_ENV.fullmatch(k):
            option = m.group(2)
            if option is None:  # FSSPEC_S3='{"endpoint_url": ..., "key": ...}'
                try:
                    value = json.loads(v)
                except ValueError:
                    continue
                if isinstance(value, dict) and (kept := for_worker_options(value)):
                    env[k] = json.dumps(kept)
            elif option.lower() in WORKER_OPTIONS and not isinstance(WORKER_OPTIONS[option.lower()], dict):
                env[k] = strip_userinfo(v)
    return env


def for_workers(job: RenderJob) -> RenderJob:
    """The job as actors receive it: allowed storage options only, URLs without user:password@."""
    return dataclasses.replace(
        job,
        model=strip_userinfo(job.model),
        store=strip_userinfo(job.store),
        storage_options=for_worker_options(job.storage_options),
        model_storage_options=for_worker_options(job.model_storage_options),
    )


ACCESS_CHECK_TIMEOUT_S = 120.0  # a worker's access check; past it (no node yet) the render goes on
# errors that mean the worker has no credentials, or not the right ones
_CREDENTIAL_ERRORS = (
    "NoCredentialsError",
    "PartialCredentialsError",
    "CredentialRetrievalError",
    "DefaultCredentialsError",
    "PermissionError",
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "Forbidden",
    "RefreshError",
)


def access_problem(model: str, model_options: dict, store: str, store_options: dict) -> tuple[str, bool] | None:
    """Run where a worker runs: can this process read the model's weights and write at the store's
    location, with these options and its own credentials? None if so, else (what failed, whether
    for want of credentials). Writes
    only a scratch object it deletes: under ``store`` on object storage (which has no folders),
    in the nearest existing folder at or above it on a file system (creating no folder)."""
    import tempfile
    import uuid

    import fsspec

    weights = model if model.endswith(".pt") else model.rstrip("/") + "/model.pt"
    try:
        with fsspec.open(weights, "rb", **model_options) as f:
            f.read(1)
    except Exception as e:  # noqa: BLE001 - reported to the driver as the reason
        return f"cannot read MODEL {model!r} ({_error_line(e)})", _credentials(e)
    try:
        fs, root = fsspec.url_to_fs(store, **store_options)
        protocols = {fs.protocol} if isinstance(fs.protocol, str) else set(fs.protocol)
        if protocols & {"file", "local"}:
            folder = root.rstrip("/") or "/"
            while not os.path.isdir(folder) and os.path.dirname(folder) != folder:
                folder = os.path.dirname(folder)
            with tempfile.NamedTemporaryFile(dir=folder, prefix=".ourgan-write-check-"):
                pass
        else:
            scratch = f"{root.rstrip('/')}/.ourgan-write-check-{uuid.uuid4().hex}"
            fs.pipe_file(scratch, b"")
            fs.rm_file(scratch)
    except Exception as e:  # noqa: BLE001 - reported to the driver as the reason
        return f"cannot write at --out {store!r} ({_error_line(e)})", _credentials(e)
    return None


def _error_line(e: BaseException) -> str:
    return f"{type(e).__name__}: {' '.join(str(e).split())[:200]}"


def _credentials(e: BaseException) -> bool:
    """Whether an error says the credentials are missing or not good enough."""
    names = {type(x).__name__ for x in (e, e.__cause__, e.__context__) if x is not None}
    return bool(names & set(_CREDENTIAL_ERRORS)) or any(w in str(e) for w in ("credentials", "AccessDenied", "Forbidden"))


def _access_check_task(
    model: str, model_options: dict, store: str, store_options: dict, env: dict[str, str]
) -> tuple[str, tuple[str, bool] | None]:
    """The Ray task: (this node's address, ``access_problem``) with the forwarded variables set
    for the call, as the actors would have them."""
    import ray

    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        return ray.util.get_node_ip_address(), access_problem(model, model_options, store, store_options)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def refuse_access(problem: tuple[str, bool], node: str) -> UserError:
    """The one line a render that its workers cannot serve stops with, before it writes anything."""
    what, credentials = problem
    if credentials:
        how = (
            "--storage-options credentials are not sent to Ray workers: give the nodes their own, in the "
            "environment where `ray start` runs (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, a mounted "
            "credentials file, a Kubernetes Secret) or through their role (an instance profile, IRSA, workload "
            "identity)"
        )
    else:
        how = (
            "every Ray node must reach the model and --out themselves: use object storage (s3://, gs://) or a "
            "file system all nodes mount at the same path, with credentials on the nodes (--storage-options "
            "credentials are not sent to workers)"
        )
    return UserError(f"a Ray worker (node {node}) {what}; {how}; nothing was written")


def _refuse_address(address: str, why: str) -> UserError:
    return UserError(
        f"--address {address!r}: {why}; start a cluster with `ray start --head` and pass the address "
        "it prints (HOST:PORT, ray://HOST:10001 or auto on a cluster node)"
    )


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
                gcs_service_pb2.GetClusterIdRequest(), timeout=timeout
            )
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
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
        return True
    check_address(address)
    try:
        ray.init(address=address, log_to_driver=False, configure_logging=False)
    except (ConnectionError, RuntimeError) as e:
        raise _refuse_address(address, f"could not join ({str(e).splitlines()[0][:160]})") from None
    return True


def cluster_workers(address: str, device: str) -> int | None:
    """How many workers a render at ``address`` would start when --workers is not given: one per
    GPU, or one per node with CPUs (as ``RayExecutor`` does); None if the cluster cannot be asked.
    Asks over the driver's connection (``render.prepare`` joins --address once for the render);
    only a caller without one joins here, and leaves again."""
    try:
        import ray

        started = connect(address, num_cpus=1)
        try:
            nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
        finally:
            if started:
                ray.shutdown()
    except Exception:  # noqa: BLE001 - only a sizing hint; the executor reports real connection errors
        return None
    if device.startswith("cuda"):
        return int(sum(r.get("GPU", 0) for r in nodes)) or None
    return sum(1 for r in nodes if r.get("CPU", 0) > 0) or None


class _RayAuthNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "Token authentication is enabled for this Ray cluster" not in record.getMessage()


def quiet_embedded_ray_auth() -> None:
    """A new local Ray (>= 2.5x) turns on token authentication when ``RAY_AUTH_MODE`` is unset and
    logs a notice saying so at every start. The CLI hides that one notice (a log filter; the mode,
    the environment and Ray's cached config are left exactly as Ray sets them: changing the
    variable behind Ray's back leaves its cached config disagreeing with clusters started later)."""
    logger = logging.getLogger("ray._private.authentication.authentication_token_setup")
    if not any(isinstance(f, _RayAuthNotice) for f in logger.filters):
        logger.addFilter(_RayAuthNotice())


class RenderStalled(RuntimeError):
    """A render that cannot progress: no live worker, or no task finished for too long. Finished
    tasks are recorded, so a re-run with --resume continues."""


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
        task = ray.remote(_access_check_task).options(num_cpus=0 if s.gpu else s.cpus, num_gpus=1 if s.gpu else 0, max_retries=0)
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


class Dispatch:
    """One render's loop: submit what the schedule assigns, collect results with ``ray.wait`` over
    in-flight refs only, requeue what failed or was lost, ping lost workers, enforce deadlines.
    ``api`` stands in for the ``ray`` module (wait, get, cancel, exceptions) in benchmarks."""

    def __init__(self, ex: RayExecutor, plan: RenderPlan, keys: Sequence[TaskKey], on_done: Callable[[TaskReport], None], api=None):
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
