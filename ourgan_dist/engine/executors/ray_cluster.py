"""Joining a Ray cluster: the address checked within seconds (one line when nothing, or no Ray
head, answers there), the connection shared by a render, the worker count a cluster offers, and
the embedded Ray's authentication notice kept quiet, and the command line the cluster records
for the job kept free of credentials."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
import sys

from ...errors import UserError

CONNECT_TIMEOUT_S = 5.0


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


SECRET_OPTIONS = ("--storage-options",)  # options whose inline value may hold credentials (@FILE names a file)


def redacted_command_line(argv: list[str]) -> str:
    """The command line ``argv`` as Ray records it for a job (its "entrypoint", shown to anyone
    who can list the cluster's jobs), without credentials: an inline ``--storage-options`` JSON
    becomes ``***`` (``@FILE`` is kept: it names a file) and every URL loses its user:password@."""
    from ...store.storage import redact

    out, hide_next = [], False
    for arg in argv:
        name, eq, value = arg.partition("=")
        if hide_next:
            arg = arg if arg.startswith("@") else "***"
        elif eq and name in SECRET_OPTIONS and not value.startswith("@"):
            arg = f"{name}=***"
        hide_next = arg in SECRET_OPTIONS
        out.append(redact(arg))
    return subprocess.list2cmdline(out)


@contextlib.contextmanager
def _recorded_command_line():
    """While Ray registers this driver's job, the command line it records is the redacted one."""
    import ray._private.utils as ray_utils

    if not hasattr(ray_utils, "get_entrypoint_name"):  # pragma: no cover - Ray moved it; see test_credentials
        yield
        return
    own = ray_utils.get_entrypoint_name
    ray_utils.get_entrypoint_name = lambda: redacted_command_line(list(getattr(sys, "orig_argv", sys.argv)))
    try:
        yield
    finally:
        ray_utils.get_entrypoint_name = own


def connect(address: str | None, num_cpus: int) -> bool:
    """Join ``address`` or start the embedded local Ray. Returns True if this call started Ray."""
    import ray

    if ray.is_initialized():
        return False
    if address is None:
        # address="local": always a fresh embedded instance, even if a cluster runs on this machine
        with _recorded_command_line():
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
        return True
    check_address(address)
    try:
        with _recorded_command_line():
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
