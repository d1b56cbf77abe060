"""The lease on S3 (moto's real HTTP endpoint on 127.0.0.1): conditional PUTs make exactly one of
two racing renders the holder, and a lease that cannot be read (HTTP errors injected by a
loopback proxy in front of moto) fails closed: --overwrite never deletes a render that may be
live, and a holder whose renewals keep failing stops before its lease could expire."""

from __future__ import annotations

import re
import threading
import time

import fsspec
import pytest

from helpers import do_render
from ourgan_dist.store import storage as storage_mod
from ourgan_dist.errors import StoreError
from ourgan_dist.store.lease import Lease, LeaseLost
from ourgan_dist.store.lease_slots import _S3Slot
from s3proxy import FaultProxy
from synthetic import write_synthetic_store


@pytest.fixture(scope="module")
def proxy(s3_server):
    endpoint, opts = s3_server
    fsspec.filesystem("s3", **opts).mkdir("leases")
    p = FaultProxy(endpoint)
    yield p
    p.close()


@pytest.fixture
def opts(proxy, s3_server, monkeypatch):
    """Storage options through the proxy, with few retries (s3fs's own and ours) so that an
    injected fault shows in seconds."""
    import s3fs

    monkeypatch.setattr(s3fs.S3FileSystem, "retries", 1)
    monkeypatch.setattr(storage_mod, "RETRIES", 2)
    monkeypatch.setattr(storage_mod, "BACKOFF", 0.01)
    proxy.fail = lambda method, path: False
    _, o = s3_server
    return dict(
        o, endpoint_url=proxy.url, skip_instance_cache=True, config_kwargs={"retries": {"max_attempts": 1, "mode": "standard"}}
    )  # and botocore's


def test_s3_lease_writes_are_conditional_and_one_of_two_racers_wins(opts):
    url = "s3://leases/race.zarr"
    slot = Lease(url, opts).slot
    assert isinstance(slot, _S3Slot) and slot.conditional
    assert slot.create(b'{"attributes": {}}')
    assert not slot.create(b'{"attributes": {"x": 1}}')  # If-None-Match: * on an existing object: 412
    _, etag = slot.read()
    assert slot.replace(b'{"attributes": {"lease": {}}}', etag)
    assert not slot.replace(b'{"attributes": {"x": 2}}', etag)  # If-Match on a stale ETag: 412
    assert slot.read()[0] == b'{"attributes": {"lease": {}}}'
    slot.fs.rm(slot.path)

    racers = [Lease(url, opts, ttl=600, settle=0) for _ in range(4)]
    results = [None] * 4

    def take(i):
        try:
            racers[i].acquire()
            results[i] = "held"
        except StoreError as e:
            results[i] = str(e)

    threads = [threading.Thread(target=take, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert results.count("held") == 1, results
        assert all("in use by another render" in r for r in results if r != "held")
        winner = racers[results.index("held")]
        assert Lease(url, opts).holder()["token"] == winner.token
    finally:
        for r in racers:
            r.release()


@pytest.mark.slow  # ~80 s on the loaded 2-core machine: s3fs through the fault proxy
def test_unreadable_s3_lease_fails_closed_and_overwrite_never_deletes_a_live_render(tiny_model, opts, proxy, s3_server):
    url = "s3://leases/live.zarr"
    write_synthetic_store(url, 64, 48, chunk=16, storage_options=s3_server[1], fill=False)  # a render's store
    holder = Lease(url, opts, ttl=600, settle=0).acquire()  # a live render holds it
    try:
        proxy.fail = lambda method, path: "/lease/" in path and method in ("GET", "HEAD")
        for status in (503, 403):
            proxy.status = status
            with pytest.raises(StoreError, match="lease cannot be read"):
                Lease(url, opts).holder()
            with pytest.raises(StoreError, match="lease cannot be read"):
                do_render(tiny_model, url, "64x48", tile=32, storage_options=opts, overwrite=True)
        proxy.fail = lambda method, path: False
        fs = fsspec.filesystem("s3", **opts)
        assert fs.exists("leases/live.zarr/zarr.json") and fs.exists("leases/live.zarr/0/zarr.json")
        with pytest.raises(StoreError, match="in use by another render"):  # readable again: refused as in use
            do_render(tiny_model, url, "64x48", tile=32, storage_options=opts, overwrite=True)
    finally:
        proxy.fail = lambda method, path: False
        holder.release()


def test_s3_holder_whose_renewals_fail_stops_before_its_lease_expires(opts, proxy):
    url = "s3://leases/renew.zarr"
    lease = Lease(url, opts, ttl=1.5, settle=0).acquire()
    proxy.fail = lambda method, path: "/lease/" in path  # the storage is unreachable for the lease
    t0 = time.time()
    while True:  # what the driver and the workers consult before each submit and write
        try:
            lease.check()
        except LeaseLost as e:
            lost = e
            break
        assert time.time() - t0 < 10
        time.sleep(0.05)
    proxy.fail = lambda method, path: False
    # stopped by the time it could no longer be sure: the heartbeat gives up when the lease could
    # expire before its next beat, and check() itself refuses once the lease has expired
    assert time.time() < lease.valid_until + 0.5
    assert re.search("could not renew|expired before it could be renewed", str(lost))
    lease.release()
