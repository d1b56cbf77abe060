"""Credentials never travel to the Ray workers: on a real local Ray instance, after a render whose
storage options and driver environment hold a key, a secret and a session token, neither the
arguments every actor was created with (its creation spec, as the cluster stores it) nor the
cluster's actor table contain them. Non-secret settings (an endpoint, a region) still do."""

from __future__ import annotations

import glob
import os
import pickle

import pytest

from ourgan_dist.executors.ray import RayExecutor, _TileActor, is_secret, without_secrets

SECRET = "sEcReT-c0ffee-91"


class SpyActor(_TileActor):
    """The real worker, which first saves the arguments it was created with (what the cluster
    keeps in the actor's creation spec) next to the store."""

    def __init__(self, job, name, env):
        import cloudpickle

        with open(os.path.join(os.path.dirname(job.store), f"actor-args-{name}.pkl"), "wb") as f:
            f.write(cloudpickle.dumps((job, name, env)))
        super().__init__(job, name, env)


def _importable_by_workers():
    """Ray workers do not have tests/ on their path: ship this module's classes by value."""
    import sys

    from ray import cloudpickle  # Ray's own copy pickles the actor classes

    cloudpickle.register_pickle_by_value(sys.modules[__name__])


def test_secret_option_names():
    assert all(is_secret(k) for k in ("key", "secret", "token", "session_token", "AWS_ACCESS_KEY_ID",
                                       "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "FSSPEC_S3_SECRET",
                                       "AZURE_STORAGE_CONNECTION_STRING", "account_key", "sas_token", "password"))
    assert not any(is_secret(k) for k in ("endpoint_url", "anon", "region_name", "AWS_ENDPOINT_URL", "AWS_REGION",
                                          "FSSPEC_S3_ENDPOINT_URL", "client_kwargs", "requester_pays"))
    opts = {"endpoint_url": "http://e", "key": "k", "client_kwargs": {"region_name": "r", "aws_secret_access_key": "s"}}
    assert without_secrets(opts) == {"endpoint_url": "http://e", "client_kwargs": {"region_name": "r"}}


@pytest.mark.slow  # starts a local Ray instance and two workers
def test_no_credentials_in_actor_specs_on_real_ray(ray_local, tiny_model, tmp_path, monkeypatch):
    from ourgan_dist.render import RenderRequest, prepare, render

    _importable_by_workers()
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "env-" + SECRET)
    monkeypatch.setenv("AWS_SESSION_TOKEN", "token-" + SECRET)
    monkeypatch.setenv("AWS_REGION", "eu-north-1")
    opts = {"key": "AKIA-" + SECRET, "secret": SECRET, "token": "session-" + SECRET, "anon": False}
    out = str(tmp_path / "r.zarr")
    p = prepare(RenderRequest(model=tiny_model, out=out, size="64x48", tile=32, chunk=16, workers=2,
                              storage_options=opts))
    render(p, executor=RayExecutor(workers=2, actor=SpyActor))

    specs = sorted(glob.glob(str(tmp_path / "actor-args-*.pkl")))
    assert len(specs) == 2
    for path in specs:
        blob = open(path, "rb").read()
        assert SECRET.encode() not in blob
        job, name, env = pickle.loads(blob)
        assert job.storage_options == {"anon": False} and env.get("AWS_REGION") == "eu-north-1"
        assert not any(is_secret(k) for k in env)

    from ray._private.state import state

    assert SECRET not in repr(state.actor_table(None))  # the cluster's own actor table
