"""Leases that no render could have written, and endpoints that cannot hold a lease, fail closed
with one line: an expiry beyond two TTLs ahead (`expires: 1e308`, or not a number at all) names
the lease folder to delete instead of blocking the store for ever with a 300-digit wait; an S3
endpoint that accepts a conflicting conditional PUT (moto on 127.0.0.1 behind a proxy that drops
If-None-Match) is refused before the lease is relied on."""

from __future__ import annotations

import json
import time

import fsspec
import pytest
from click.testing import CliRunner

from ourgan_dist.cli import main
from ourgan_dist.errors import StoreError
from ourgan_dist.store.lease import Lease
from s3proxy import FaultProxy


def run(*args, env=None):
    r = CliRunner().invoke(main, [str(a) for a in args], env=env)
    return r.exit_code, r.output


def plant_lease(out, **lease):
    (out / "lease").mkdir(parents=True)
    body = {
        "zarr_format": 3,
        "node_type": "group",
        "attributes": {"lease": {"token": "t" * 32, "host": "elsewhere", "pid": 1, "ttl": 60, **lease}},
    }
    (out / "lease" / "zarr.json").write_text(json.dumps(body))


@pytest.mark.parametrize("expires", [1e308, float("inf"), float("nan"), "now+1e6"])
def test_a_lease_no_render_could_write_is_refused_naming_its_folder(tiny_model, tmp_path, expires):
    out = tmp_path / "r.zarr"
    plant_lease(out, expires=time.time() + 1e6 if expires == "now+1e6" else expires)
    code, text = run("render", tiny_model, "--out", out, "--size", "64x48", "--chunk", "16", "--quiet")
    assert code == 2, text
    line = text.strip().splitlines()[-1]
    assert line.startswith("Error: ") and f"{out}/lease/" in line and "delete" in line, line
    assert len(line) < 400 and "Traceback" not in text
    assert sorted(p.name for p in out.iterdir()) == ["lease"]  # nothing else was written


def test_a_lease_within_two_ttls_is_a_live_holder(tiny_model, tmp_path):
    out = tmp_path / "r.zarr"
    plant_lease(out, expires=time.time() + 100)  # ttl 60: renewed a moment ago on a clock 40 s ahead
    code, text = run("render", tiny_model, "--out", out, "--size", "64x48", "--chunk", "16", "--quiet")
    assert code == 2 and "in use by another render" in text, text
    plant_lease(tmp_path / "s.zarr", expires=time.time() + 500, ttl=300)  # a holder with a longer TTL
    assert Lease(str(tmp_path / "s.zarr"), ttl=60).holder()["ttl"] == 300


@pytest.fixture(scope="module")
def bucket(s3_server):
    _, opts = s3_server
    fsspec.filesystem("s3", **opts).mkdir("conditional")
    return "conditional"


def test_an_endpoint_that_ignores_conditional_writes_is_refused(s3_server, bucket):
    endpoint, opts = s3_server
    url = f"s3://{bucket}/r.zarr"
    with Lease(url, dict(opts, skip_instance_cache=True)) as lease:  # moto refuses a conflicting PUT: usable
        assert lease.holder()["token"] == lease.token
    proxy = FaultProxy(endpoint)
    proxy.drop_headers = {"if-none-match", "if-match"}
    try:
        with pytest.raises(StoreError, match="ignores conditional writes") as e:
            Lease(f"s3://{bucket}/s.zarr", dict(opts, endpoint_url=proxy.url, skip_instance_cache=True)).acquire()
        assert "\n" not in str(e.value)
    finally:
        proxy.close()
    fs = fsspec.filesystem("s3", **dict(opts, skip_instance_cache=True))
    assert not fs.find(f"{bucket}/s.zarr")  # refused before the lease was written; the scratch object deleted
    assert [p.rsplit("/", 1)[-1] for p in fs.find(f"{bucket}/r.zarr")] == ["zarr.json"]  # only the lease


def test_malformed_lease_ttl_is_one_line(tiny_model, tmp_path):
    for bad in ("abc", "0", "-5", "nan", "1e9"):
        code, text = run(
            "render", tiny_model, "--out", tmp_path / "r.zarr", "--size", "64x48", "--chunk", "16", env={"OURGAN_LEASE_TTL": bad}
        )
        assert code == 2 and f"OURGAN_LEASE_TTL={bad!r}" in text and "Traceback" not in text, text
        assert not (tmp_path / "r.zarr").exists()
