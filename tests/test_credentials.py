"""Credentials never travel to the Ray workers: what workers receive is an allow-list (endpoint,
region, anon, use_ssl, ...), so secrets under any name (a key, a secret, a token, SSECustomerKey,
headers.Authorization, passwd, auth, pkey), a URL's user:password@ part and an FSSPEC_S3 JSON
object in the driver's environment never reach them. On a real local Ray instance, neither the
arguments every actor was created with (its creation spec, as the cluster stores it) nor the
cluster's actor table contain them, nor `ourgan-dist inspect` of the result. Non-secret settings
(an endpoint, a region) still reach the workers."""

from __future__ import annotations

import glob
import os
import pickle

import pytest

from ourgan_dist.engine.executors.ray import RayExecutor, _TileActor
from ourgan_dist.engine.executors.worker_access import FORWARDED_ENV, for_worker_options, for_workers, storage_environment
from ourgan_dist.engine.tile import RenderJob

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


def canary_options(c: str) -> dict:
    """Storage options that hold the canary ``c`` under every kind of name a deny-list misses."""
    return {
        "key": "AKIA-" + c,
        "secret": c,
        "token": "session-" + c,
        "SSECustomerKey": c,
        "passwd": c,
        "password": c,
        "auth": c,
        "pkey": c,
        "headers": {"Authorization": "Bearer " + c},
        "s3_additional_kwargs": {"SSECustomerKey": c, "SSECustomerAlgorithm": "AES256"},
        "client_kwargs": {
            "aws_secret_access_key": c,
            "endpoint_url": f"http://user:{c}@127.0.0.1:9000",
            "region_name": "eu-north-1",
        },
        "config_kwargs": {"proxies": {"https": f"http://u:{c}@proxy:3128"}, "s3": {"addressing_style": "path"}},
        "anon": False,
        "endpoint_url": f"https://admin:{c}@minio.local:9000",
        "use_ssl": True,
    }


def canary_environment(c: str) -> dict:
    return {
        "AWS_ACCESS_KEY_ID": "AKIA-" + c,
        "AWS_SECRET_ACCESS_KEY": c,
        "AWS_SESSION_TOKEN": c,
        "FSSPEC_S3": '{"key": "k-%s", "secret": "%s", "endpoint_url": "http://127.0.0.1:9"}' % (c, c),
        "FSSPEC_S3_SECRET": c,
        "FSSPEC_S3_PASSWD": c,
        "FSSPEC_GCS_TOKEN": c,
        "AZURE_STORAGE_CONNECTION_STRING": c,
        "AWS_ENDPOINT_URL": f"http://u:{c}@127.0.0.1:9",
        "AWS_REGION": "eu-north-1",
        "FSSPEC_S3_ENDPOINT_URL": "http://127.0.0.1:9",
        "OURGAN_X": c,
        "PKEY": c,
    }


def test_workers_receive_only_the_allowed_options_and_variables():
    import cloudpickle

    job = RenderJob(
        model=f"s3://user:{SECRET}@bucket/model",
        store=f"s3://{SECRET}@bucket/r.zarr",
        seed=0,
        storage_options=canary_options(SECRET),
        model_storage_options=canary_options(SECRET),
    )
    w = for_workers(job)
    env = storage_environment(canary_environment(SECRET))
    assert SECRET.encode() not in cloudpickle.dumps((w, env))  # what the executor passes to Actor.remote
    assert (w.model, w.store) == ("s3://bucket/model", "s3://bucket/r.zarr")
    assert (
        w.storage_options
        == w.model_storage_options
        == {
            "anon": False,
            "endpoint_url": "https://minio.local:9000",
            "use_ssl": True,
            "client_kwargs": {"endpoint_url": "http://127.0.0.1:9000", "region_name": "eu-north-1"},
            "config_kwargs": {"s3": {"addressing_style": "path"}},
        }
    )
    assert env == {
        "FSSPEC_S3": '{"endpoint_url": "http://127.0.0.1:9"}',
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
        "AWS_REGION": "eu-north-1",
        "FSSPEC_S3_ENDPOINT_URL": "http://127.0.0.1:9",
    }
    assert for_worker_options({"anon": {"nested": SECRET}, "endpoint_url": ["x"], "region_name": None}) == {
        "region_name": None
    }  # a value of the wrong shape is left out


def test_no_credentials_in_errors_or_the_store(tiny_model, tmp_path):
    import dataclasses

    from click.testing import CliRunner

    from ourgan_dist.cli import main
    from ourgan_dist.engine.render import RenderRequest, prepare, render_info

    r = CliRunner().invoke(main, ["inspect", f"s3://user:{SECRET}@127.0.0.1:1/nowhere"])
    assert r.exit_code != 0 and SECRET not in r.output
    r = CliRunner().invoke(
        main, ["render", f"file://user:{SECRET}@{tmp_path}/none", "--out", str(tmp_path / "o"), "--size", "64x48"]
    )
    assert r.exit_code == 2 and SECRET not in r.output, r.output
    r = CliRunner().invoke(
        main, ["--debug", "render", f"file://user:{SECRET}@{tmp_path}/none", "--out", str(tmp_path / "o"), "--size", "64x48"]
    )
    assert r.exit_code == 2 and "Traceback" in r.output and SECRET not in r.output, r.output  # --debug: masked too
    p = prepare(RenderRequest(model=tiny_model, out=str(tmp_path / "r.zarr"), size="64x48", tile=32, chunk=16))
    p.request = dataclasses.replace(p.request, model=f"s3://user:{SECRET}@bucket/model")
    assert render_info(p)["model"] == "s3://bucket/model"  # what the store records and inspect shows
    # a signed URL's credentials in its query are not recorded either, nor logged
    signed = f"https://b.example/model?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AK%2F1&X-Amz-Signature={SECRET}"
    p.request = dataclasses.replace(p.request, model=signed)
    recorded = render_info(p)["model"]
    assert SECRET not in recorded and "AK%2F1" not in recorded and "X-Amz-Algorithm=AWS4-HMAC-SHA256" in recorded
    from ourgan_dist.store.storage import redact

    assert redact(f"403 on {signed}") == f"403 on {recorded}"
    from ourgan_dist.cli import _redact

    assert SECRET not in _redact(f"cannot read {signed}")  # the command line's error line too
    assert (
        redact(f"GET https://acct.blob.example/c/m.pt?sv=2020&sig={SECRET}&se=1")
        == "GET https://acct.blob.example/c/m.pt?sv=2020&sig=***&se=1"
    )


@pytest.mark.parametrize("given, debug", [("option", False), ("environment", False), ("option", True)])
def test_an_error_that_quotes_a_storage_options_secret_is_printed_masked(given, debug, monkeypatch):
    """A storage library may quote an option's value in its error (botocore: "Invalid type for
    parameter SSECustomerKey, value: ..."): every value workers would not get is masked in the
    printed line, however the options were given, and in the traceback ``--debug`` prints; the
    endpoint, which workers get, is not."""
    import json

    from click.testing import CliRunner

    import ourgan_dist.outputs.inspect as inspect_module
    from ourgan_dist.cli import main

    key = f"{SECRET}-{given}"
    options = {"endpoint_url": "http://127.0.0.1:9", "client_kwargs": {"aws_secret_access_key": key}}

    def quoting(target, storage_options=None):
        quoted = storage_options["client_kwargs"]["aws_secret_access_key"]
        raise OSError(f"Invalid value {quoted} at {storage_options['endpoint_url']}")

    monkeypatch.setattr(inspect_module, "describe", quoting)
    args = ["--debug"] * debug + ["inspect", "s3://bucket/r.zarr"]
    if given == "option":
        args += ["--storage-options", json.dumps(options)]
    else:
        monkeypatch.setenv("OURGAN_STORAGE_OPTIONS", json.dumps(options))
    r = CliRunner().invoke(main, args)
    assert r.exit_code != 0 and "Invalid value *** at http://127.0.0.1:9" in r.output and SECRET not in r.output, r.output
    assert ("Traceback (most recent call last)" in r.output) == debug and ("in quoting" in r.output) == debug, r.output


def test_no_credentials_in_what_a_successful_run_prints(tiny_model, tmp_path):
    """A store URL carrying user:password@ works (memory:// keeps it in its path), and nothing
    printed or served on success shows the password: render's summary and export line, a dry
    run's note, inspect, and the viewer's page summary."""
    import json

    from click.testing import CliRunner

    from ourgan_dist.cli import main
    from ourgan_dist.store.canvas import Canvas
    from ourgan_dist.view.server import render_summary

    out = f"memory://user:{SECRET}@/r.zarr"
    runner = CliRunner()
    r = runner.invoke(main, ["render", tiny_model, "--out", out, "--size", "64x48", "--tile", "32", "--quiet"])
    assert r.exit_code == 0 and "-> memory://" in r.output and SECRET not in r.output, r.output
    r = runner.invoke(main, ["render", tiny_model, "--out", out, "--size", "64x48", "--tile", "32", "--dry-run"])
    assert r.exit_code == 0 and "note: a real run would be refused" in r.output and SECRET not in r.output, r.output
    for args in (["inspect", out], ["inspect", out, "--json"]):
        r = runner.invoke(main, args)
        assert r.exit_code == 0 and ("render store" in r.output or '"kind": "render"' in r.output), r.output
        assert SECRET not in r.output, r.output
    assert SECRET not in json.dumps(render_summary(Canvas(out)))


def test_the_command_line_ray_records_holds_no_credentials():
    from ourgan_dist.engine.executors.ray_cluster import redacted_command_line

    argv = ["ourgan-dist", "render", f"s3://u:{SECRET}@b/m", "--storage-options", f'{{"secret": "{SECRET}"}}', "--out"]
    argv += ["r.zarr", f"--storage-options={{'key': '{SECRET}'}}", "--storage-options", "@storage.json"]
    line = redacted_command_line(argv)
    assert SECRET not in line
    assert line == (
        "ourgan-dist render s3://***@b/m --storage-options *** --out r.zarr --storage-options=*** --storage-options @storage.json"
    )


def test_a_password_holding_an_at_sign_is_hidden_whole():
    from ourgan_dist.cli import _redact
    from ourgan_dist.store.storage import redact, strip_userinfo

    url = f"s3://user:p@{SECRET}@bucket/r.zarr"
    assert strip_userinfo(url) == "s3://bucket/r.zarr"
    assert redact(f"cannot open {url} or s3://other@b2/x") == "cannot open s3://***@bucket/r.zarr or s3://***@b2/x"
    assert SECRET not in _redact(f"no bucket user:p@{SECRET}@bucket", ["render", url])


@pytest.mark.slow  # starts Ray in a child process
def test_no_credentials_in_the_job_ray_records(tmp_path):
    """Ray records each driver's command line as its job's entrypoint, listed to anyone who can
    list the cluster's jobs: a driver joining through ``connect`` is recorded without the inline
    storage options and the URL's password given on its command line."""
    import subprocess
    import sys

    script = (
        "import ray\n"
        "from ourgan_dist.engine.executors import ray_cluster\n"
        "from ray._private.state import state\n"
        "real = ray.init\n"
        "ray.init = lambda **kw: real(**kw, _node_ip_address='127.0.0.1')\n"
        "ray_cluster.connect(None, 1)\n"
        "print('ENTRYPOINTS', [j['Entrypoint'] for j in state.job_table()])\n"
        "ray.shutdown()\n"
    )
    args = ["--storage-options", f'{{"secret": "{SECRET}"}}', "--out", f"s3://u:{SECRET}@b/r.zarr"]
    r = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    line = next(x for x in r.stdout.splitlines() if x.startswith("ENTRYPOINTS"))
    assert "--storage-options ***" in line and "s3://***@b/r.zarr" in line and SECRET not in line, line


@pytest.mark.slow  # starts a local Ray instance and two workers
def test_no_credentials_in_actor_specs_on_real_ray(ray_local, tiny_model, tmp_path, monkeypatch):
    from ourgan_dist.engine.render import RenderRequest, prepare, render

    _importable_by_workers()
    for k, v in canary_environment(SECRET).items():
        monkeypatch.setenv(k, v)
    opts = canary_options(SECRET)
    out = str(tmp_path / "r.zarr")
    p = prepare(RenderRequest(model=tiny_model, out=out, size="64x48", tile=32, chunk=16, workers=2, storage_options=opts))
    render(p, executor=RayExecutor(workers=2, actor=SpyActor))

    specs = sorted(glob.glob(str(tmp_path / "actor-args-*.pkl")))
    assert len(specs) == 2
    for path in specs:
        blob = open(path, "rb").read()
        assert SECRET.encode() not in blob
        job, name, env = pickle.loads(blob)
        assert job.storage_options["anon"] is False and env.get("AWS_REGION") == "eu-north-1"
        assert set(env) <= {*FORWARDED_ENV, "FSSPEC_S3", "FSSPEC_S3_ENDPOINT_URL"}

    from ray._private.state import state

    assert SECRET not in repr(state.actor_table(None))  # the cluster's own actor table
    from click.testing import CliRunner

    from ourgan_dist.cli import main

    r = CliRunner().invoke(main, ["inspect", out, "--json"])
    assert r.exit_code == 0 and SECRET not in r.output


def test_a_storage_options_secret_is_masked_in_retry_warnings_and_the_viewers_log(small_render, caplog, monkeypatch):
    """A storage library may quote a credential in its error (a bucket policy, a header): what the
    storage options hold beside the workers' options is masked in the retry warning, the lease's
    and the viewer's log lines too, not only in the command line's error line."""
    import http.client
    import logging

    from ourgan_dist import masking
    from ourgan_dist.commands.shared import remember_secrets
    from ourgan_dist.store import storage
    from ourgan_dist.view.server import ViewHandler, ViewServer

    monkeypatch.setattr(masking, "SECRETS", set())
    remember_secrets({"key": "AKIAEXAMPLEKEY", "secret": SECRET, "client_kwargs": {"region_name": "eu"}})
    assert "eu" not in masking.SECRETS  # too short to mask
    monkeypatch.setattr(storage, "BACKOFF", 0.0)
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) == 1:
            raise OSError(f"SignatureDoesNotMatch for key AKIAEXAMPLEKEY with secret {SECRET}")
        return "read"

    with caplog.at_level(logging.WARNING):
        assert storage.with_retries("read x", flaky) == "read"
    assert "retry 1/" in caplog.text and SECRET not in caplog.text and "AKIAEXAMPLEKEY" not in caplog.text
    caplog.clear()

    def failing(self, path):
        raise OSError(f"403 Forbidden: secret {SECRET} refused")

    monkeypatch.setattr(ViewHandler, "_route", failing)
    server = ViewServer(small_render, port=0)
    server.start_background()
    try:
        with caplog.at_level(logging.WARNING):
            conn = http.client.HTTPConnection(*server.server_address[:2], timeout=30)
            conn.request("GET", "/image.dzi")
            assert conn.getresponse().status == 500
            conn.close()
    finally:
        server.shutdown()
        server.server_close()
    assert "403 Forbidden: secret *** refused" in caplog.text and SECRET not in caplog.text
