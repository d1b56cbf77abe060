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

from ourgan_dist.canvas import Canvas
from ourgan_dist.errors import StoreError
from ourgan_dist.lease import Lease, _document, this_process
from ourgan_dist.synthetic import write_synthetic_store

HOLD = ("import sys, time\n"
        "from ourgan_dist.canvas import Canvas\n"
        "from ourgan_dist.lease import Lease\n"
        "Lease(Canvas(sys.argv[1]), ttl=600, settle=0.01).acquire()\n"
        "print('held', flush=True)\n"
        "time.sleep(600)\n")


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
