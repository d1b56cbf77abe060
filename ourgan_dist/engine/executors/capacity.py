"""What a Ray cluster offers a render: the nodes alive now, and whether an autoscaler may add more.

``read_offer`` asks the connected cluster; ``size_workers`` is pure arithmetic over its answer and
decides, before anything is written, how many render actors of what shape to start, and whether
some of them are to wait for nodes the autoscaler has yet to start (``Sizing.wait``). A cluster
without an autoscaler must have room for every worker now; one with an autoscaler is refused at
once only when its node types are known (autoscaler v2 reports them) and cannot reach the count.

How the autoscaler is recognised: Ray's autoscaler v2 stores its cluster config (node types,
their resources and maximum counts) in the GCS; the v1 monitor, which runs on every head,
publishes a status report whose node types are configured names (``head``, ``gpu_a10g_x1``) when
it autoscales and anonymous ``node_<id>`` mirrors of the alive nodes when it does not (a cluster
started by hand with ``ray start``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from ...errors import UserError

READONLY_PREFIX = "node_"  # Ray's name for a node type mirrored by a monitor that does not autoscale


@dataclass(frozen=True)
class NodeType:
    name: str
    resources: dict[str, float]
    max_count: int  # nodes of this type the autoscaler may run


@dataclass(frozen=True)
class Offer:
    """``nodes``: the resources of each alive node; ``autoscaling``: an autoscaler may add nodes;
    ``node_types``: the ones it may add, when it says (empty: not known)."""

    nodes: tuple[dict[str, float], ...]
    autoscaling: bool = False
    node_types: tuple[NodeType, ...] = ()

    def describe(self) -> str:
        cpus = [int(r.get("CPU", 0)) for r in self.nodes]
        gpus = int(sum(r.get("GPU", 0) for r in self.nodes))
        text = f"{len(self.nodes)} node(s) alive with {cpus} CPUs and {gpus} GPU(s)"
        if self.node_types:
            types = ", ".join(f"{t.name} (up to {t.max_count} x {_shape(t.resources)})" for t in self.node_types)
            return f"{text}; its autoscaler may add {types}"
        return text + ("; it has an autoscaler" if self.autoscaling else "; no autoscaler adds nodes")


@dataclass(frozen=True)
class Sizing:
    """Render actors to start: ``workers`` of ``bundle`` each (``cpus`` threads each, on GPU or
    not); ``wait``: the cluster has no room for all of them yet and its autoscaler is asked."""

    workers: int
    cpus: int
    gpu: bool
    bundle: dict[str, float] = field(default_factory=dict)
    wait: bool = False

    @property
    def bundles(self) -> list[dict[str, float]]:
        return [dict(self.bundle) for _ in range(self.workers)]

    def describe(self) -> str:
        return f"{self.workers} worker(s) of {_shape(self.bundle)}"


def _shape(resources: dict[str, float]) -> str:
    return (
        "{"
        + ", ".join(
            f"{k}: {v:g}" for k, v in sorted(resources.items()) if k in ("CPU", "GPU", "memory") or not k.startswith("node")
        )
        + "}"
    )


def size_workers(offer: Offer, workers: int | None, device: str, cpus_per_worker: int | None = None) -> Sizing:
    """How many workers of what shape (``workers=None``: one per GPU, or one per node with CPUs,
    of the alive nodes). Raises ``UserError`` naming what was asked, what the cluster offers, and
    what to do, when they can never all be placed."""
    if device.startswith("cuda"):
        return _size_gpu(offer, workers)
    return _size_cpu(offer, workers, cpus_per_worker)


def _size_gpu(offer: Offer, workers: int | None) -> Sizing:
    have = int(sum(r.get("GPU", 0) for r in offer.nodes))
    n = workers or have
    if n < 1:
        if offer.autoscaling:
            raise UserError(
                f"--device cuda: the Ray cluster has no GPU yet ({offer.describe()}); pass --workers N "
                "(the number of GPUs to use) and its autoscaler starts GPU nodes for them"
            )
        raise UserError(
            f"--device cuda: the Ray cluster has no GPU ({offer.describe()}); add GPU nodes to it, or pass --device cpu"
        )
    per_node = [int(r.get("CPU", 0)) for r in offer.nodes if r.get("GPU", 0) > 0]
    per_node += [int(t.resources.get("CPU", 0) // t.resources["GPU"]) for t in offer.node_types if t.resources.get("GPU", 0) > 0]
    cpus = max(1, min(per_node)) if per_node else 1  # threads per worker: a GPU node's CPUs per GPU
    sizing = Sizing(n, cpus, True, {"GPU": 1}, wait=n > have)
    if n <= have:
        return sizing
    if offer.autoscaling:
        most = have + int(sum(t.max_count * t.resources.get("GPU", 0) for t in offer.node_types))
        if not offer.node_types or n <= most:
            return sizing
        raise UserError(
            f"--workers {n} --device cuda: {n} GPU worker(s) asked for, the Ray cluster has {have} GPU(s) "
            f"and its autoscaler can reach {most} ({offer.describe()}); pass --workers {most} or fewer, "
            "or raise its GPU node types' max_workers"
        )
    fewer = f"pass --workers {have} or fewer, " if have else ""
    raise UserError(
        f"--workers {n} --device cuda: {n} GPU worker(s) asked for, the Ray cluster has {have} GPU(s) and "
        f"no autoscaler to add more ({offer.describe()}); {fewer}add GPU nodes, or pass --device cpu"
    )


def _size_cpu(offer: Offer, workers: int | None, cpus_per_worker: int | None) -> Sizing:
    per_node = [c for c in (int(r.get("CPU", 0)) for r in offer.nodes) if c > 0]
    types = [t for t in offer.node_types if t.resources.get("CPU", 0) >= 1]
    n = workers or len(per_node)
    if n < 1:
        raise UserError(
            f"--workers: the Ray cluster has no node with CPUs yet ({offer.describe()}); pass "
            "--workers N and its autoscaler starts nodes for them"
            if offer.autoscaling
            else f"--workers: the Ray cluster has no node with CPUs ({offer.describe()}); add nodes to it"
        )
    # each worker's share of the CPUs, but no more than the smallest node has, so that a worker
    # whose node is lost can be restarted on any surviving node (or any node the autoscaler adds)
    smallest = min(per_node + [int(t.resources["CPU"]) for t in types], default=1)
    cpus = cpus_per_worker or max(1, min(sum(per_node) // n, smallest) if per_node else smallest)
    fits = sum(c // cpus for c in per_node)
    sizing = Sizing(n, cpus, False, {"CPU": cpus}, wait=n > fits)
    if n <= fits:
        return sizing
    if offer.autoscaling:
        most = fits + sum(t.max_count * int(t.resources["CPU"] // cpus) for t in types)
        if not offer.node_types or n <= most:
            return sizing
        raise UserError(
            f"--workers {n}: {n} worker(s) of {cpus} CPU(s) asked for, the Ray cluster has room for "
            f"{fits} and its autoscaler can reach {most} ({offer.describe()}); pass --workers {most} or "
            "fewer, or raise its node types' max_workers"
        )
    raise UserError(
        f"--workers {n}: the Ray cluster has room for {fits} worker(s) of {cpus} CPU(s) (nodes with "
        f"{per_node} CPUs) and no autoscaler to add more; pass --workers {max(1, fits)} or fewer, or add "
        "nodes"
    )


# ---- asking the connected cluster -------------------------------------------------------------
def read_offer() -> Offer:
    """The connected cluster's offer: its alive nodes, and its autoscaler if it has one."""
    import ray

    nodes = tuple(dict(n.get("Resources", {})) for n in ray.nodes() if n.get("Alive"))
    types = _v2_node_types()
    if types is not None:
        return Offer(nodes, True, types)
    return Offer(nodes, _v1_autoscales(_kv_get(b"__autoscaling_status")))


def _kv_get(key: bytes, namespace: bytes | None = None) -> bytes | None:
    try:
        from ray.experimental.internal_kv import internal_kv_get_gcs_client

        return internal_kv_get_gcs_client().internal_kv_get(key, namespace)
    except Exception:  # noqa: BLE001 - Ray internals moved, or the GCS did not answer: treated as no autoscaler
        return None


def _v2_node_types() -> tuple[NodeType, ...] | None:
    """The node types autoscaler v2 may start (None: no v2 autoscaler has reported a config)."""
    try:
        import ray._raylet as raylet
        from ray.core.generated import autoscaler_pb2

        data = _kv_get(raylet.GCS_AUTOSCALER_CLUSTER_CONFIG_KEY.encode(), raylet.GCS_AUTOSCALER_STATE_NAMESPACE.encode())
        if not data:
            return None
        config = autoscaler_pb2.ClusterConfig()
        config.ParseFromString(data)
    except Exception:  # noqa: BLE001 - Ray internals moved, or an unreadable config: fall back to v1's report
        return None
    return parse_node_groups(config.node_group_configs)


def parse_node_groups(groups) -> tuple[NodeType, ...]:
    return tuple(
        NodeType(g.name, {k: float(v) for k, v in g.resources.items()}, int(g.max_count)) for g in groups if g.max_count > 0
    )


def _v1_autoscales(status: bytes | str | None) -> bool:
    """Whether the v1 monitor's status report names configured node types (an autoscaler), not
    only ``node_<id>`` mirrors of the alive nodes. No report (not written yet, or none): False."""
    if not status:
        return False
    try:
        report = json.loads(status).get("autoscaler_report") or {}
    except (ValueError, AttributeError):
        return False
    names = set(report.get("active_nodes") or {}) | set(report.get("idle_nodes") or {})
    names |= set(report.get("pending_launches") or {}) | set((report.get("node_type_mapping") or {}).values())
    return any(not name.startswith(READONLY_PREFIX) for name in names)


def request(bundles: list[dict[str, float]]) -> None:
    """Ask the autoscaler for room for ``bundles`` at once (past its upscaling speed); ``[]``
    withdraws the request, so that idle nodes go again after their idle timeout."""
    from ray.autoscaler.sdk import request_resources

    request_resources(bundles=bundles)
