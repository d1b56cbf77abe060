"""Small helpers shared by tests: render through the library, read a store's arrays."""

from __future__ import annotations

import contextlib

import numpy as np
import zarr

from ourgan_dist.render import RenderRequest, prepare, render


def do_render(model: str, out: str, size: str = "301x187", *, tile: int | None = 32, chunk: int = 16,
              seed: int = 0, **kw):
    req = RenderRequest(model=model, out=out, size=size, seed=seed, tile=tile, chunk=chunk, **kw)
    return render(prepare(req))


def arrays(url: str, storage_options: dict | None = None) -> dict[str, np.ndarray]:
    """Every image array of a render store (pyramid and generation levels), by path. (The
    completion records under progress/ are shaped by the tile grid, so they are left out.)"""
    g = zarr.open_group(url, mode="r", storage_options=storage_options) if "://" in url else \
        zarr.open_group(url, mode="r")
    out = {name: a[:] for name, a in g.arrays()}
    for name, a in g["generation"].arrays():
        out[f"generation/{name}"] = a[:]
    return out


def assert_same_arrays(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        assert np.array_equal(a[k], b[k]), f"array {k} differs"


@contextlib.contextmanager
def local_cluster(head_cpus: int, node_cpus: list[int]):
    """A multi-node Ray cluster on 127.0.0.1 (ray.cluster_utils) with this process's driver
    connected to it; shut down on exit."""
    import ray
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, head_node_args={"num_cpus": head_cpus, "include_dashboard": False,
                                                       "node_ip_address": "127.0.0.1"})
    for n in node_cpus:
        c.add_node(num_cpus=n, node_ip_address="127.0.0.1")
    ray.init(address=c.address, log_to_driver=False)
    try:
        yield c
    finally:
        ray.shutdown()
        c.shutdown()


def actor_pids(cluster, class_name: str) -> list[int]:
    """Process ids of the actors of class ``class_name`` running on ``cluster``'s nodes: children of
    its own raylets only, so no other Ray instance on this machine is ever touched."""
    import psutil
    from ray._private import ray_constants

    pids = []
    for node in [cluster.head_node, *cluster.worker_nodes]:
        for info in node.all_processes.get(ray_constants.PROCESS_TYPE_RAYLET, []):
            try:
                children = psutil.Process(info.process.pid).children(recursive=True)
            except psutil.NoSuchProcess:
                continue
            for child in children:
                try:
                    if any(class_name in part for part in child.cmdline()):
                        pids.append(child.pid)
                except psutil.NoSuchProcess:
                    pass
    return pids
