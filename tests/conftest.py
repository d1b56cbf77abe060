"""Shared fixtures: small photos made here, tiny seeded models, a moto S3 server (one per test
session) and a local Ray instance on 127.0.0.1 (one per test module)."""

from __future__ import annotations

import os

import numpy as np
import pytest
from helpers import environ, free_port

# keep every Ray process and driver on loopback (see DESIGN.md, "Running the real parts in tests")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")


def make_photo(path, width=53, height=37, seed=0):
    """A small synthetic 'landscape': sky gradient above, textured ground below."""
    import pyvips

    rng = np.random.default_rng(seed)
    y = np.linspace(0, 1, height)[:, None, None]
    sky = np.array([90, 140, 230]) * (1 - y) + np.array([200, 220, 250]) * y
    ground = np.array([70, 120, 40]) + rng.normal(0, 25, (height, width, 3))
    img = np.where(y < 0.45, sky + rng.normal(0, 4, (height, width, 3)), ground)
    arr = np.clip(img, 0, 255).astype(np.uint8)
    pyvips.Image.new_from_array(arr).write_to_file(str(path))
    return str(path)


@pytest.fixture(scope="session")
def photo(tmp_path_factory):
    return make_photo(tmp_path_factory.mktemp("photo") / "photo.png", 53, 37)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, photo):
    """An untrained, seeded model of the tiny preset (what renderer tests need)."""
    from ourgan_dist.train import train_model

    out = tmp_path_factory.mktemp("model") / "tiny"
    train_model(photo, str(out), preset="tiny", iterations=0, seed=1, device="cpu", progress=False)
    return str(out)


@pytest.fixture(scope="session")
def cpu_model(tmp_path_factory):
    """An untrained, seeded model of the cpu preset's architecture, from a 106x74 photo (kept at
    half its width, 53x37: the cpu preset's coarsest scale needs 24 rows)."""
    from ourgan_dist.train import train_model

    photo = make_photo(tmp_path_factory.mktemp("photo") / "photo.png", 106, 74)
    out = tmp_path_factory.mktemp("model") / "cpu"
    train_model(photo, str(out), preset="cpu", iterations=0, seed=2, device="cpu", progress=False)
    return str(out)


@pytest.fixture(scope="session")
def small_render(tiny_model, tmp_path_factory):
    """A complete render of the tiny model, 300x200 at tile 32 and chunk 16 (a 6-level pyramid),
    shared by the tests that only read it (exports, the viewer)."""
    from ourgan_dist.engine.render import RenderRequest, prepare, render

    out = str(tmp_path_factory.mktemp("render") / "render.zarr")
    render(prepare(RenderRequest(model=tiny_model, out=out, size="300x200", chunk=16, tile=32)))
    return out


@pytest.fixture(scope="session")
def s3_server():
    """A real HTTP S3 endpoint (moto) on 127.0.0.1; yields (endpoint_url, storage_options). One
    per session: each module that uses it makes its own bucket."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no per-request access log
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    keys = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    options = {"endpoint_url": endpoint, "key": "testing", "secret": "testing"}
    try:
        with environ(keys):
            yield endpoint, options
    finally:
        server.stop()


@pytest.fixture(scope="module")
def ray_local():
    """One local Ray instance per test module, on 127.0.0.1, 2 CPUs, no dashboard."""
    import ray

    ray.init(
        num_cpus=2,
        include_dashboard=False,
        address="local",
        _node_ip_address="127.0.0.1",
        log_to_driver=False,
        configure_logging=False,
    )
    try:
        yield ray
    finally:
        ray.shutdown()


# A fresh-clone CI run (2026-12-06) had the pytest process segfault in interpreter teardown after
# all 418 tests had passed and reported; 188-208 s runs before and after did not. The crash is in
# a native background thread at finalisation (Ray, zarr's event loop, libvips and torch all keep
# some), not in a test, so the session ends without that teardown: the exit status is the tests'.
_EXIT_STATUS: list[int] = []


def pytest_sessionfinish(session, exitstatus):
    _EXIT_STATUS.append(int(exitstatus))


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    if _EXIT_STATUS:
        import sys

        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_EXIT_STATUS[-1])
