"""The Ray executor on a two-node cluster on this machine, rendering into S3 (moto on
127.0.0.1): equal to the local untiled render bit for bit, levels as dependent waves, dask reads
the bucket, credentials never stored."""

from __future__ import annotations

import json

import fsspec
import numpy as np
import pytest

from helpers import assert_same_arrays, do_render

SIZE = "523x211"


@pytest.fixture(scope="module")
def cluster():
    import ray
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False,
                                                       "node_ip_address": "127.0.0.1"})
    c.add_node(num_cpus=1, node_ip_address="127.0.0.1")
    ray.init(address=c.address, log_to_driver=False)
    try:
        yield c
    finally:
        ray.shutdown()
        c.shutdown()


@pytest.fixture(scope="module")
def bucket(s3_server):
    endpoint, opts = s3_server
    fs = fsspec.filesystem("s3", **opts)
    fs.mkdir("renders")
    return opts


@pytest.fixture(scope="module")
def s3_model(tiny_model, bucket):
    fs = fsspec.filesystem("s3", **bucket)
    fs.put(tiny_model + "/", "renders/model/", recursive=True)
    return "s3://renders/model"


@pytest.fixture(scope="module")
def reference(tiny_model, tmp_path_factory):
    from helpers import arrays

    out = str(tmp_path_factory.mktemp("ref") / "ref.zarr")
    do_render(tiny_model, out, SIZE, tile=0)
    return arrays(out)


def s3_arrays(url, opts):
    import zarr

    g = zarr.open_group(url, mode="r", storage_options=opts)
    out = {name: a[:] for name, a in g.arrays()}
    for name, a in g["generation"].arrays():
        out[f"generation/{name}"] = a[:]
    return out


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("tile", [32, 48])
def test_cluster_render_into_s3_equals_local_untiled(cluster, bucket, s3_model, reference, workers, tile):
    url = f"s3://renders/r-{workers}-{tile}.zarr"
    s = do_render(s3_model, url, SIZE, tile=tile, workers=workers, storage_options=bucket,
                  model_storage_options=bucket)
    assert s.tasks_run == s.plan.n_tiles + len(list(s.plan.all_pyramid_tasks()))
    assert_same_arrays(s3_arrays(url, bucket), reference)
    if workers == 2:
        assert {r.worker for r in s.reports} == {"worker-0", "worker-1"}


def test_levels_are_dependent_waves_not_barriers(cluster, bucket, s3_model):
    url = "s3://renders/waves.zarr"
    s = do_render(s3_model, url, SIZE, tile=16, workers=2, storage_options=bucket, model_storage_options=bucket)
    by_level = {}
    for r in s.reports:
        if hasattr(r.key, "level"):
            by_level.setdefault(r.key.level, []).append(r)
    overlapped = []
    for level in range(1, s.plan.final_level):
        last_end = max(r.end for r in by_level[level])
        early = [r for r in by_level[level + 1] if r.start < last_end]
        overlapped.append(len(early))
        # and every task started only after the tasks it reads from had finished
        ends = {r.key: r.end for r in s.reports}
        for r in by_level[level + 1]:
            for d in s.plan.dependencies(r.key):
                assert ends[d] <= r.start
    assert any(n > 0 for n in overlapped), "no level-(l+1) tile started before level l finished"


def test_dask_reads_the_bucket_and_no_credentials_are_stored(cluster, bucket, s3_model, reference):
    import dask.array as da

    import ourgan_dist

    url = "s3://renders/read.zarr"
    do_render(s3_model, url, SIZE, tile=48, workers=2, storage_options=bucket, model_storage_options=bucket)
    arr = ourgan_dist.open_result(url, bucket)
    assert isinstance(arr, da.Array) and arr.shape == (3, 211, 523)
    assert np.array_equal(arr.compute(), reference["0"])
    plain = da.from_zarr(url, component="0", storage_options=bucket)
    assert np.array_equal(plain[:, 100:150, 200:300].compute(), reference["0"][:, 100:150, 200:300])
    fs = fsspec.filesystem("s3", **bucket)
    meta = fs.cat("renders/read.zarr/zarr.json").decode()
    assert "testing" not in meta and "endpoint" not in meta and "127.0.0.1" not in meta
    assert json.loads(meta)["attributes"]["ourgan_dist"]["complete"] is True


def test_worker_error_is_reraised_with_its_tile_key(cluster, tiny_model, tmp_path):
    import shutil

    from ourgan_dist.errors import CheckpointError, TileError
    from ourgan_dist.render import RenderRequest, prepare, render

    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    p = prepare(RenderRequest(model=str(model), out=str(tmp_path / "err.zarr"), size=SIZE, tile=32, chunk=16,
                              workers=2))
    (model / "model.pt").write_bytes(b"truncated")  # the workers will find a corrupt checkpoint
    with pytest.raises(TileError) as err:
        render(p)
    assert str(err.value.key).startswith("L0/")
    assert isinstance(err.value.cause, CheckpointError) and "not a readable checkpoint" in str(err.value)


def test_memory_store_is_refused_with_ray(cluster, tiny_model):
    from ourgan_dist.errors import UserError

    with pytest.raises(UserError, match="memory://"):
        do_render(tiny_model, "memory://x/r.zarr", SIZE, tile=32, workers=2)
