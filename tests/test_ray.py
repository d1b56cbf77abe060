"""The Ray executor on a two-node cluster on this machine, rendering into S3 (moto on
127.0.0.1): equal to the local untiled render bit for bit, levels as dependent waves (shown from
the recorded task times), dask reads the bucket, credentials reach the workers but are never
stored or printed, and the CLI joins the cluster with --address (or fails fast when it cannot)."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time

import fsspec
import numpy as np
import pytest

from helpers import arrays, assert_same_arrays, do_render, local_cluster

SIZE, CHUNK = "300x200", 16


@pytest.fixture(scope="module")
def cluster(s3_server):  # s3_server first: its test credentials are in every node's environment
    with local_cluster(1, [1]) as c:
        yield c


@pytest.fixture(scope="module")
def bucket(s3_server):
    endpoint, opts = s3_server
    fsspec.filesystem("s3", **opts).mkdir("renders")
    return opts


@pytest.fixture(scope="module")
def s3_model(tiny_model, bucket):
    fsspec.filesystem("s3", **bucket).put(tiny_model + "/", "renders/model/", recursive=True)
    return "s3://renders/model"


@pytest.fixture(scope="module")
def reference(tiny_model, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("ref") / "ref.zarr")
    do_render(tiny_model, out, SIZE, tile=0, chunk=CHUNK)  # local executor, each level untiled
    return arrays(out)


def ray_render(model, url, opts, tile, workers):
    from ourgan_dist.engine.executors.ray import RayExecutor
    from ourgan_dist.engine.render import RenderRequest, prepare, render

    p = prepare(
        RenderRequest(
            model=model,
            out=url,
            size=SIZE,
            tile=tile,
            chunk=CHUNK,
            workers=workers,
            storage_options=opts,
            model_storage_options=opts,
        )
    )
    return render(p, executor=RayExecutor(workers=workers))  # the Ray executor even for one worker


def assert_dependent_waves(summary):
    """Every task started after the tasks it reads from ended, and at each stage boundary (level l
    to l+1, the final level to the viewing pyramid) with enough work before it to overlap, some
    task of the later stage started before the earlier stage's last task ended: no barrier. (A
    level of a few tiles may end all at once when the workers share it evenly.)"""
    plan = summary.plan
    ends = {r.key: r.end for r in summary.reports}
    for r in summary.reports:
        assert all(ends[d] <= r.start for d in plan.task_dependencies(r.key)), f"{r.key} started before a task it reads from ended"
    stage = {r.key: (r.key.level if hasattr(r.key, "level") else plan.final_level + r.key.scale) for r in summary.reports}
    checked = 0
    for s in range(1, max(stage.values())):
        before = [r for r in summary.reports if stage[r.key] == s]
        if len(before) < 16:
            continue
        last_end = max(r.end for r in before)
        early = [r for r in summary.reports if stage[r.key] == s + 1 and r.start < last_end]
        assert early, f"no task of stage {s + 1} started before stage {s} finished"
        checked += 1
    assert checked, "no stage large enough to show the overlap"


# one case in the default suite (two workers: both nodes, the worker set and the overlap of
# levels); one worker and the smaller tile run with the slow tests
@pytest.mark.parametrize(
    "workers, tile", [(2, 48), *(pytest.param(w, t, marks=pytest.mark.slow) for w, t in ((1, 32), (1, 48), (2, 32)))]
)
def test_cluster_render_into_s3_equals_local_untiled(cluster, bucket, s3_model, reference, workers, tile):
    url = f"s3://renders/r-{workers}-{tile}.zarr"
    s = ray_render(s3_model, url, bucket, tile, workers)
    assert s.tasks_run == s.plan.n_tiles + len(list(s.plan.all_pyramid_tasks())) == len(s.reports)
    assert_same_arrays(arrays(url, bucket), reference)
    assert {r.worker for r in s.reports} == {f"worker-{i}" for i in range(workers)}
    assert_dependent_waves(s)


def test_worker_count_and_size_come_from_the_cluster(cluster):
    from ourgan_dist.errors import UserError
    from ourgan_dist.engine.executors.ray import RayExecutor

    assert RayExecutor(workers=None)._resources() == (2, 1, False)  # one per node, that node's CPUs
    assert RayExecutor(workers=2)._resources() == (2, 1, False)
    with pytest.raises(UserError, match="room for 2 worker"):
        RayExecutor(workers=3)._resources()
    with pytest.raises(UserError, match=r"has no GPU \(2 node\(s\) alive.*add GPU nodes to it, or pass --device cpu"):
        RayExecutor(workers=None, device="cuda")._resources()


def test_a_cluster_without_room_refuses_before_the_lease_or_the_store(cluster, tiny_model, tmp_path):
    """No autoscaler here: asking for more workers than fit is refused at once, and nothing is
    left behind, so the next try (with fewer workers) does not find an output that "already exists"."""
    from ourgan_dist.errors import UserError
    from ourgan_dist.engine.executors.ray import RayExecutor
    from ourgan_dist.engine.render import RenderRequest, prepare, render

    out = tmp_path / "refused.zarr"
    for workers, device in ((3, "cpu"), (2, "cuda")):
        p = prepare(RenderRequest(model=tiny_model, out=str(out), size=SIZE, tile=48, chunk=CHUNK, workers=workers))
        with pytest.raises(UserError, match="no autoscaler to add more"):
            render(p, executor=RayExecutor(workers=workers, device=device))
        assert not out.exists() and not list(tmp_path.iterdir())  # no store, no lease file


@pytest.mark.slow  # a Ray start-up or retried actor inits: tens of seconds; CI runs it
def test_cli_joins_the_cluster_with_environment_credentials_and_dask_reads_the_bucket(
    cluster, s3_server, bucket, s3_model, reference, tmp_path
):
    """The CLI in another process joins with --address; the endpoint comes from the driver's
    environment only (the nodes were started without it), the keys from --storage-options.
    Neither is printed or stored; the progress bar counts tasks and shows MP/s and an ETA."""
    import dask.array as da

    import ourgan_dist

    endpoint, _ = s3_server
    secret = "sEcReT-7f3a9c"
    env = dict(__import__("os").environ, AWS_ENDPOINT_URL=endpoint)
    url = "s3://renders/cli.zarr"
    cmd = [
        sys.executable,
        "-m",
        "ourgan_dist.cli",
        "render",
        s3_model,
        "--out",
        url,
        "--size",
        SIZE,
        "--tile",
        "48",
        "--chunk",
        str(CHUNK),
        "--address",
        cluster.address,
        "--storage-options",
        json.dumps({"key": "AKIA-" + secret, "secret": secret}),
    ]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr[-2000:]
    out = run.stdout + run.stderr
    assert secret not in out and "testing" not in out
    plan_tasks = re.findall(r"(\d+)/(\d+) \[\d\d:\d\d<\d\d:\d\d", run.stderr)  # tqdm: done/total [elapsed<eta
    assert plan_tasks and plan_tasks[-1][0] == plan_tasks[-1][1] and "MP/s" in run.stderr

    opts = dict(bucket)
    arr = ourgan_dist.open_result(url, opts)
    assert isinstance(arr, da.Array) and arr.shape == (3, 200, 300)
    assert np.array_equal(arr.compute(), reference["0"])
    plain = da.from_zarr(url, component="0", storage_options=opts)  # no ourgan-dist needed to read it
    assert np.array_equal(plain[:, 50:150, 100:250].compute(), reference["0"][:, 50:150, 100:250])
    xr = ourgan_dist.open_result(url, opts, xarray=True)
    assert xr.dims == ("y", "x", "c") and xr.shape == (200, 300, 3)

    fs = fsspec.filesystem("s3", **opts)
    metadata = [fs.cat(p).decode() for p in fs.find("renders/cli.zarr") if p.endswith("zarr.json")]
    assert len(metadata) > 10
    for text in metadata:
        assert secret not in text and "testing" not in text and "127.0.0.1" not in text and "endpoint" not in text
    assert json.loads(fs.cat("renders/cli.zarr/zarr.json"))["attributes"]["ourgan_dist"]["complete"] is True


def test_unreachable_address_fails_in_seconds_with_one_line(tiny_model, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    t0 = time.monotonic()
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "ourgan_dist.cli",
            "render",
            tiny_model,
            "--out",
            str(tmp_path / "r.zarr"),
            "--size",
            SIZE,
            "--address",
            f"127.0.0.1:{port}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2 and time.monotonic() - t0 < 30
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: --address") and "ray start --head" in lines[0]
    assert not (tmp_path / "r.zarr").exists()  # checked before anything is written


def test_a_port_that_answers_but_is_no_ray_head_is_refused_quickly():
    from ourgan_dist.errors import UserError
    from ourgan_dist.engine.executors.ray_cluster import check_address

    with socket.socket() as silent:  # accepts connections, never speaks
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        t0 = time.monotonic()
        with pytest.raises(UserError, match="no Ray head answers"):
            check_address(f"127.0.0.1:{silent.getsockname()[1]}", timeout=2)
        assert time.monotonic() - t0 < 10
    with pytest.raises(UserError, match="expected auto, HOST:PORT"):
        check_address("no-port-here")


@pytest.mark.slow  # a Ray start-up or retried actor inits: tens of seconds; CI runs it
def test_worker_error_is_reraised_with_its_tile_key(cluster, tiny_model, tmp_path):
    import shutil

    from ourgan_dist.errors import CheckpointError, TileError
    from ourgan_dist.engine.render import RenderRequest, prepare, render

    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    p = prepare(RenderRequest(model=str(model), out=str(tmp_path / "err.zarr"), size=SIZE, tile=32, chunk=CHUNK, workers=2))
    (model / "model.pt").write_bytes(b"truncated")  # the workers will find a corrupt checkpoint
    with pytest.raises(TileError) as err:
        render(p)
    assert str(err.value.key).startswith("L0/")
    assert isinstance(err.value.cause, CheckpointError) and "not a readable checkpoint" in str(err.value)


def test_memory_store_is_refused_with_ray(cluster, tiny_model):
    from ourgan_dist.errors import UserError

    with pytest.raises(UserError, match="memory://"):
        do_render(tiny_model, "memory://x/r.zarr", SIZE, tile=32, chunk=CHUNK, workers=2)


def test_wavefront_order_puts_each_task_right_after_what_it_reads(tiny_model):
    from ourgan_dist.engine.executors.ray import wavefront_order
    from ourgan_dist.models import checkpoint
    from ourgan_dist.planning.plan import RenderPlan
    from ourgan_dist.engine.render import task_order

    cfg = checkpoint.load(tiny_model).config
    for size, tile in (((300, 200), 32), ((523, 211), 16), ((37 * 8, 53 * 8), 48)):
        plan = RenderPlan.create(*size, base=cfg.base, sr=cfg.sr, tile=tile, chunk=CHUNK)
        keys = task_order(plan)
        order = wavefront_order(plan, keys)
        assert len(order) == len(keys) == len(set(order))
        pos = {k: i for i, k in enumerate(order)}
        for k in order:
            deps = plan.pyramid_dependencies(k) if hasattr(k, "scale") else plan.dependencies(k)
            assert all(pos[d] < pos[k] for d in deps)
        # a final-level tile comes before the last tile of the level below: a wavefront, not levels
        last_below = max(pos[k] for k in plan.tiles(plan.final_level - 1))
        assert min(pos[k] for k in plan.tiles(plan.final_level)) < last_below


def test_base_image_does_not_depend_on_the_workers_thread_count(cpu_model):
    """Ray workers run with their share of the cores (1 thread here), the untiled reference with
    all of them: the base generator must give the same bits either way (its bilinear resizes
    between scales round differently per thread count unless made invariant)."""
    import torch

    from ourgan_dist.models import checkpoint

    model = checkpoint.load(cpu_model)
    before = torch.get_num_threads()
    images = []
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            with torch.inference_mode():
                images.append(model.base.generate(86, 128, seed=5))
    finally:
        torch.set_num_threads(before)
    assert torch.equal(images[0], images[1]) and torch.equal(images[0], images[2])


@pytest.mark.slow  # a Ray start-up or retried actor inits: tens of seconds; CI runs it
def test_embedded_ray_starts_its_own_instance_beside_a_running_cluster(cluster, tiny_model, reference, tmp_path):
    """`--workers N` without --address starts a fresh local Ray even while a cluster runs on this
    machine (ray.init would otherwise try to join it and refuse num_cpus)."""
    out = tmp_path / "own.zarr"
    env = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_MODE"}  # as a user's shell has it
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "ourgan_dist.cli",
            "render",
            tiny_model,
            "--out",
            str(out),
            "--size",
            SIZE,
            "--tile",
            "32",
            "--chunk",
            "16",
            "--workers",
            "2",
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert r.returncode == 0, r.stderr
    assert "Token authentication" not in r.stderr  # Ray's start-up notice is not shown on every render
    assert_same_arrays(arrays(str(out)), reference)
