"""Before a Ray render takes the lease or creates the store, one worker slot checks that a worker
can read the model and write at --out with what workers receive (no --storage-options
credentials); a render whose workers have no credentials of their own stops with one line that
says so and how to give the nodes theirs, and leaves nothing behind (no skeleton store). Against
moto's S3 server on 127.0.0.1: the check function in this process, and a real local Ray instance
whose processes were started without any AWS credentials."""

from __future__ import annotations

import os

import fsspec
import pytest

from helpers import environ
from ourgan_dist.errors import UserError
from ourgan_dist.engine.executors.worker_access import access_problem, refuse_access

BUCKET = "access"
NO_CREDENTIALS = {
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/credentials",
    "AWS_CONFIG_FILE": "/nonexistent/config",
    "AWS_EC2_METADATA_DISABLED": "true",
}


@pytest.fixture(scope="module")
def s3_model(s3_server, tiny_model):
    _, opts = s3_server
    fs = fsspec.filesystem("s3", **opts)
    fs.mkdir(BUCKET)
    fs.put(tiny_model + "/", f"{BUCKET}/model/", recursive=True)
    return f"s3://{BUCKET}/model"


@pytest.fixture
def no_aws_credentials(monkeypatch):
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(k, raising=False)
    for k, v in NO_CREDENTIALS.items():
        monkeypatch.setenv(k, v)


def test_the_check_finds_missing_credentials_and_writes_nothing(s3_server, s3_model, no_aws_credentials, tmp_path):
    endpoint, opts = s3_server
    store = f"s3://{BUCKET}/r.zarr"
    bare = {"endpoint_url": endpoint, "skip_instance_cache": True}
    what, credentials = access_problem(s3_model, bare, store, bare)
    assert "cannot read MODEL" in what and "NoCredentialsError" in what and credentials
    line = str(refuse_access((what, credentials), "127.0.0.1"))
    assert "--storage-options credentials are not sent to Ray workers" in line and "ray start" in line
    assert "\n" not in line and "nothing was written" in line
    full = dict(opts, skip_instance_cache=True)
    assert access_problem(s3_model, full, store, full) is None  # with credentials: reads and writes
    assert not fsspec.filesystem("s3", **full).find(f"{BUCKET}/r.zarr")  # its scratch object deleted
    # on a file system: a write in the nearest existing folder, creating none
    assert access_problem(s3_model, full, str(tmp_path / "new" / "r.zarr"), {}) is None
    assert not (tmp_path / "new").exists() and not list(tmp_path.iterdir())
    if os.geteuid() != 0:
        (tmp_path / "ro").mkdir(mode=0o500)
        what, credentials = access_problem(s3_model, full, str(tmp_path / "ro" / "r.zarr"), {})
        assert "cannot write at --out" in what and credentials  # PermissionError


@pytest.fixture(scope="module")
def ray_without_credentials(s3_server):
    """A local Ray whose processes never saw an AWS key (s3_server put the test keys into this
    process's environment: they are taken out while Ray starts)."""
    import ray

    gone = {k: os.environ.pop(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY") if k in os.environ}
    try:
        with environ(NO_CREDENTIALS):
            ray.init(
                num_cpus=2,
                include_dashboard=False,
                address="local",
                _node_ip_address="127.0.0.1",
                log_to_driver=False,
                configure_logging=False,
            )
    finally:
        os.environ.update(gone)
    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.mark.slow  # starts a local Ray instance of its own
def test_a_ray_render_whose_workers_lack_credentials_stops_before_writing(ray_without_credentials, s3_server, s3_model):
    from ourgan_dist.engine.executors.ray import RayExecutor
    from ourgan_dist.engine.render import RenderRequest, prepare, render

    _, opts = s3_server
    url = f"s3://{BUCKET}/ray.zarr"
    p = prepare(
        RenderRequest(
            model=s3_model, out=url, size="64x48", tile=32, chunk=16, workers=1, storage_options=opts, model_storage_options=opts
        )
    )  # the driver can read it
    with pytest.raises(UserError) as e:
        render(p, executor=RayExecutor(workers=1))
    line = str(e.value)
    assert "cannot read MODEL" in line and "NoCredentialsError" in line and "\n" not in line
    assert "--storage-options credentials are not sent to Ray workers" in line
    assert not fsspec.filesystem("s3", **opts).find(f"{BUCKET}/ray.zarr")  # no lease, no skeleton store
