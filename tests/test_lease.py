"""The store's lease: a holder that crashed on this host is taken over at once (a pid that now
belongs to another process does not fool it), a holder elsewhere only by expiry, and a lease
that cannot be read is never taken for a free one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from ourgan_dist.store.canvas import Canvas
from ourgan_dist.errors import StoreError
from ourgan_dist.store.lease import Lease, this_process
from ourgan_dist.store.lease_slots import lease_document as _document
from synthetic import write_synthetic_store

HOLD = (
    "import sys, time\n"
    "from ourgan_dist.store.canvas import Canvas\n"
    "from ourgan_dist.store.lease import Lease\n"
    "Lease(Canvas(sys.argv[1]), ttl=600, settle=0.01).acquire()\n"
    "print('held', flush=True)\n"
    "time.sleep(600)\n"
)


@pytest.fixture
def store(tmp_path):
    url = str(tmp_path / "s.zarr")
    write_synthetic_store(url, 16, 16)
    return url


def _state(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


def test_lease_of_a_sigkilled_local_render_is_taken_over_at_once(store):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, store], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(StoreError, match="in use by another render"):
            Lease(Canvas(store), ttl=600, settle=0.01).acquire()
        proc.send_signal(signal.SIGKILL)
        t0 = time.time()
        while _state(proc.pid) not in ("Z", None):  # dead but not yet reaped by its parent (us)
            assert time.time() - t0 < 10
            time.sleep(0.01)
        Lease(Canvas(store), ttl=600, settle=0.01).acquire().release()  # the 600 s lease did not hold
        proc.wait(timeout=10)  # reaped: the pid is gone altogether
        lease = Lease(Canvas(store), ttl=600, settle=0.01).acquire()
        assert lease.holder()["pid"] == os.getpid()
        lease.release()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _plant(url: str, **fields) -> None:
    slot = Lease(url).slot
    slot._put(_document({"token": "other", **this_process(), "expires": time.time() + 600, "ttl": 600, **fields}))


def test_a_live_holder_or_one_on_another_host_is_never_taken_over(store):
    _plant(store)  # this very process: alive
    assert Lease(Canvas(store)).holder() is not None
    _plant(store, pid_start="1")  # the pid now belongs to a younger process: the holder is gone
    assert Lease(Canvas(store)).holder() is None
    _plant(store, host="elsewhere", pid=2**22 + 12345)  # a pid no process here has, but on another host
    assert Lease(Canvas(store)).holder() is not None
    _plant(store, boot_id="another-boot", pid=2**22 + 12345)  # before a reboot: pids mean nothing now
    assert Lease(Canvas(store)).holder() is not None
    _plant(store, pid=2**22 + 12345)  # this host, no such process
    assert Lease(Canvas(store)).holder() is None


def test_an_unreadable_lease_is_an_error_not_a_free_lease(store):
    os.makedirs(os.path.join(store, "lease"), exist_ok=True)
    with open(os.path.join(store, "lease", "zarr.json"), "w") as f:
        f.write('{"attributes": {"lease": {"token": "x", "exp')  # cut mid-write
    with pytest.raises(StoreError, match="lease cannot be read"):
        Lease(Canvas(store), settle=0.01).acquire()
    with open(os.path.join(store, "lease", "zarr.json"), "w") as f:
        f.write('{"attributes": {"lease": {"token": "x", "expires": "soon"}}, "zarr_format": 3, "node_type": "group"}')
    with pytest.raises(StoreError, match="lease cannot be read"):
        Lease(Canvas(store), settle=0.01).acquire()


def test_renewal_finds_another_token_stops_and_never_overwrites_it(store):
    from ourgan_dist.store.lease import LeaseLost

    lease = Lease(store, ttl=600, settle=0.01).acquire()
    try:
        lease.renew()  # ours: renewed
        _plant(store)  # another render's token now (a takeover, or someone removed and re-took it)
        with pytest.raises(LeaseLost, match="lost its lease"):
            lease.renew()
    finally:
        lease.release()
    assert Lease(store).holder()["token"] == "other"  # neither renewal nor release touched it


def test_heartbeat_marks_the_lease_lost_when_it_is_taken_or_cannot_be_renewed(store):
    from ourgan_dist.store.lease import LeaseLost

    lease = Lease(store, ttl=0.9, settle=0.01).acquire()
    _plant(store)
    t0 = time.time()
    while lease.lost is None:
        assert time.time() - t0 < 5
        time.sleep(0.05)
    with pytest.raises(LeaseLost, match="lost its lease"):
        lease.check()
    lease.release()
    assert Lease(store).holder()["token"] == "other"

    Lease(store).slot._put(_document({}))  # given back
    lease = Lease(store, ttl=0.9, settle=0.01).acquire()

    def broken(*a):
        raise OSError("injected: storage unreachable")

    lease.slot.replace = broken  # every renewal fails: lost before the lease could expire
    t0 = time.time()
    while lease.lost is None:
        assert time.time() - t0 < 5
        time.sleep(0.05)
    assert time.time() < lease.valid_until  # declared lost while it was still valid: nobody else had it yet
    with pytest.raises(LeaseLost, match="could not renew"):
        lease.check()


def test_conditional_create_and_replace_on_a_local_store(store):
    slot = Lease(store).slot
    assert slot.conditional
    assert slot.create(b"{}") or slot.read()[0] is not None
    assert not slot.create(_document({"token": "late"}))  # exists: refused
    data, version = slot.read()
    assert slot.replace(_document({"token": "a", "expires": 1.0}), version)
    assert not slot.replace(_document({"token": "b", "expires": 1.0}), version)  # stale version: refused
    assert b'"a"' in slot.read()[0]


def test_a_worker_fence_refuses_writes_once_the_lease_names_another_render(store):
    from ourgan_dist.store.lease import LeaseFence, LeaseLost

    lease = Lease(store, ttl=600, settle=0.01).acquire()
    try:
        fence = LeaseFence(store, None, lease.token)
        fence.check()
        fence.valid_until = 0  # as after ttl/6 seconds
        _plant(store)
        with pytest.raises(LeaseLost, match="stopped writing"):
            fence.check()
        with pytest.raises(LeaseLost):
            LeaseFence(store, None, "not-the-token").check()
    finally:
        lease.release()


@pytest.mark.slow
def test_a_stolen_lease_stops_the_render_and_the_store_resumes_to_the_same_bytes(tiny_model, tmp_path, monkeypatch):
    """Another render takes the store mid-render: this one stops with LeaseLost (workers stop
    writing, the driver submits nothing more), the store stays incomplete with its finished tasks
    recorded, and once it is free again --resume finishes it to the same bytes."""
    from helpers import arrays, assert_same_arrays, do_render
    from ourgan_dist.store.lease import LeaseLost
    from ourgan_dist.engine.render import RenderRequest, prepare, render

    size = "160x120"
    ref = str(tmp_path / "ref.zarr")
    do_render(tiny_model, ref, size, tile=0)
    out = str(tmp_path / "stolen.zarr")
    monkeypatch.setenv("OURGAN_LEASE_TTL", "1.5")  # heartbeat every 0.5 s, workers re-check every 0.25 s
    seen = []

    def steal(rep, done, total):
        seen.append(rep.key)
        if done == 3:
            _plant(out)
        if done > 3:
            time.sleep(0.2)  # a render slow enough to be caught mid-way

    with pytest.raises(LeaseLost, match="lease"):
        render(prepare(RenderRequest(model=tiny_model, out=out, size=size, tile=32, chunk=16)), on_progress=steal)
    canvas = Canvas(out)
    assert not canvas.complete and 3 <= len(canvas.done()) < len(seen) + 1
    assert Lease(out).holder()["token"] == "other"  # the thief's lease was left alone
    with pytest.raises(StoreError, match="in use by another render"):
        do_render(tiny_model, out, size, tile=32, resume=True)
    Lease(out).slot._put(_document({}))  # the other render gives it back
    s = do_render(tiny_model, out, size, tile=32, resume=True)
    assert s.tasks_skipped >= 3 and Canvas(out).complete
    assert_same_arrays(arrays(out), arrays(ref))
