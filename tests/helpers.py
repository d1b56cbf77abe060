"""Small helpers shared by tests: render through the library, read a store's arrays."""

from __future__ import annotations

import contextlib
import os

import numpy as np
import zarr

from ourgan_dist.engine.render import RenderRequest, prepare, render


@contextlib.contextmanager
def environ(values: dict[str, str]):
    """Set environment variables for the block, then put back what was there (or nothing)."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def do_render(model: str, out: str, size: str = "301x187", *, tile: int | None = 32, chunk: int = 16, seed: int = 0, **kw):
    req = RenderRequest(model=model, out=out, size=size, seed=seed, tile=tile, chunk=chunk, **kw)
    return render(prepare(req))


def arrays(url: str, storage_options: dict | None = None) -> dict[str, np.ndarray]:
    """Every image array of a render store (pyramid and generation levels), by path. (The
    completion records under progress/ are shaped by the tile grid, so they are left out.)"""
    g = zarr.open_group(url, mode="r", storage_options=storage_options) if "://" in url else zarr.open_group(url, mode="r")
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

    c = Cluster(
        initialize_head=True, head_node_args={"num_cpus": head_cpus, "include_dashboard": False, "node_ip_address": "127.0.0.1"}
    )
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


def free_ports(n: int) -> list[int]:
    """``n`` distinct free ports on 127.0.0.1: every socket stays bound until all are drawn, so the
    system cannot hand the same port out twice (one Ray head's components need ports of their own)."""
    import socket

    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


def free_port() -> int:
    return free_ports(1)[0]


def fake_autoscaler_config(gcs_port: int, node_types: dict) -> dict:
    """A cluster config for Ray's fake multi-node provider: worker node types as given (each
    ``{"resources": ..., "min_workers": ..., "max_workers": ...}``), a head that runs no tasks,
    idle workers removed after 6 s."""
    types = {name: {"node_config": {}, **t} for name, t in node_types.items()}
    types["ray.head.default"] = {"resources": {}, "node_config": {}, "max_workers": 0}
    return {
        "cluster_name": "ourgan-test",
        "max_workers": sum(t["max_workers"] for t in node_types.values()),
        "upscaling_speed": 1.0,
        "idle_timeout_minutes": 0.1,
        "provider": {
            "type": "fake_multinode",
            "use_node_id_as_ip": True,
            "disable_node_updaters": True,
            "disable_launch_config_check": True,
            "gcs_address": f"127.0.0.1:{gcs_port}",
        },
        "available_node_types": types,
        "head_node_type": "ray.head.default",
        "auth": {},
        "docker": {},
        **{
            k: []
            for k in (
                "initialization_commands",
                "setup_commands",
                "head_setup_commands",
                "worker_setup_commands",
                "head_start_ray_commands",
                "worker_start_ray_commands",
                "cluster_synced_files",
                "rsync_exclude",
                "rsync_filter",
            )
        },
        "file_mounts": {},
        "file_mounts_sync_continuously": False,
    }


@contextlib.contextmanager
def autoscaling_cluster(tmp_dir, node_types: dict):
    """A head on 127.0.0.1 (no CPUs: it runs no tasks) whose real autoscaler starts and stops
    worker nodes of ``node_types`` on this machine (Ray's fake multi-node provider), with this
    process's driver connected once the autoscaler has reported. Yields the head's GCS address.
    Only this cluster's processes are stopped on exit (never `ray stop`, which stops every Ray
    on the machine)."""
    import json
    import os
    import time

    import psutil
    import ray
    from ray._private import ray_constants
    from ray.autoscaler._private.fake_multi_node.node_provider import FAKE_HEAD_NODE_ID
    from ray.cluster_utils import Cluster

    from ourgan_dist.engine.executors.capacity import _kv_get, _v1_autoscales

    port, dashboard_port = free_ports(2)
    config = os.path.join(str(tmp_dir), "autoscaler.json")
    with open(config, "w") as f:
        json.dump(fake_autoscaler_config(port, node_types), f)
    env = {"RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1"}  # read by the head's monitor
    with environ(env):
        c = None
        try:
            c = Cluster(
                initialize_head=True,
                head_node_args={
                    "num_cpus": 0,
                    "include_dashboard": False,
                    "dashboard_port": dashboard_port,
                    "node_ip_address": "127.0.0.1",
                    "gcs_server_port": port,
                    "autoscaling_config": config,
                    "env_vars": {"RAY_OVERRIDE_NODE_ID_FOR_TESTING": FAKE_HEAD_NODE_ID},
                },
            )  # the id the provider expects
            ray.init(address=c.address, log_to_driver=False)
            deadline = time.monotonic() + 120
            while not _v1_autoscales(_kv_get(b"__autoscaling_status")) and time.monotonic() < deadline:
                time.sleep(0.5)
            yield c.address
        finally:
            ray.shutdown()
            if c is not None:  # the worker nodes are the monitor's children: stop them, then the head
                for info in c.head_node.all_processes.get(ray_constants.PROCESS_TYPE_MONITOR, []):
                    try:
                        monitor = psutil.Process(info.process.pid)
                        nodes = monitor.children(recursive=True)
                        monitor.kill()
                    except psutil.NoSuchProcess:
                        nodes = []
                    for p in nodes:
                        try:
                            p.kill()
                        except psutil.NoSuchProcess:
                            pass
                c.shutdown()


def tiny_gan_config():
    """The tiny preset with the paper's kind of base generator (HP-VAE-GAN + y channel) at tiny
    sizes: what the GAN's own tests train and render."""
    import dataclasses

    from ourgan_dist.config import PRESETS, BaseConfig

    return dataclasses.replace(
        PRESETS["tiny"],
        base=BaseConfig(
            base_width=32, coarsest_width=12, n_scales=3, channels=8, convs_per_stage=3, vae_scales=1, latent_channels=4
        ),
    )


def untrained(cfg, seed: int = 1):
    """An untrained model of ``cfg`` that renders: a patch base is given a small synthetic photo
    (its whole training), a GAN base draws from its random weights."""
    import torch

    from ourgan_dist.models import checkpoint

    model = checkpoint.build(cfg, seed=seed)
    if cfg.base.kind == "patches":
        g = torch.Generator().manual_seed(seed)
        rows = torch.linspace(-1, 1, 24).view(1, 1, 24, 1)
        photo = (
            torch.cat([-rows, 0.3 * rows, rows], dim=1).expand(1, 3, 24, 36) + 0.2 * torch.randn(1, 3, 24, 36, generator=g)
        ).clamp(-1, 1)
        checkpoint.keep_photo(model, photo)
    return model
