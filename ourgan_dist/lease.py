"""One writer per store: a lease with an expiry, renewed by a heartbeat while a render runs.

The lease lives in the attributes of the store's ``lease`` group (a Zarr group of its own, so
renewing it rewrites only that small object). A render takes the lease before writing and gives
it back at the end. A render that dies without giving it back (SIGKILL, lost node) stops
renewing it, so the lease expires ``ttl`` seconds after its last renewal (60 s by default,
``OURGAN_LEASE_TTL`` overrides) and the next ``--resume`` takes it over.

The lease also names its holder's process: host name, kernel boot id, pid namespace, pid and the
process's start time. When the holder is on this very host (same name, boot and pid namespace)
and that process no longer exists (or its pid now belongs to a younger process), the lease is
taken over at once instead of after the expiry: resuming right after a local crash does not wait.
A holder on another host is only ever presumed dead by expiry.

The lease fails closed: one that exists but cannot be read or makes no sense is an error, never
a free lease (a store whose lease cannot be read may be in use).

Object stores offer no portable compare-and-swap, so taking a lease is write-then-confirm: write
our token, wait a moment, read it back; of two renders racing for a free lease, the one whose
write landed last keeps it and the other is refused.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from typing import Any

import zarr

from .errors import StoreError

LEASE_GROUP = "lease"


def default_ttl() -> float:
    return float(os.environ.get("OURGAN_LEASE_TTL", "60"))


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _process_stat(pid: int) -> tuple[str, str] | None:
    """(state, start time in clock ticks since boot) of a process, from /proc; None if it does not
    exist or /proc cannot tell."""
    stat = _read(f"/proc/{pid}/stat")
    if not stat:
        return None
    fields = stat.rsplit(")", 1)[-1].split()  # after "pid (comm)": state is field 3, starttime field 22
    return (fields[0], fields[19]) if len(fields) > 19 else None


def _host() -> dict[str, Any]:
    """What makes a pid meaningful: the host name, the kernel boot and the pid namespace."""
    try:
        pid_ns = os.readlink("/proc/self/ns/pid")
    except OSError:
        pid_ns = None
    return {"host": socket.gethostname(), "boot_id": _read("/proc/sys/kernel/random/boot_id"), "pid_ns": pid_ns}


def this_process() -> dict[str, Any]:
    """The holder fields a lease records for the calling process."""
    stat = _process_stat(os.getpid())
    return {**_host(), "pid": os.getpid(), "pid_start": stat[1] if stat else None}


def holder_is_gone(lease: dict[str, Any]) -> bool:
    """True only if the lease's holder is certainly dead: a process on this host (same host name,
    kernel boot and pid namespace) that no longer exists, is a zombie, or whose pid now belongs
    to a process that started later. Anything else (another host, a lease without these fields,
    no /proc) is presumed alive."""
    here = _host()
    if not here["boot_id"] or not here["pid_ns"] or any(lease.get(k) != here[k] for k in here):
        return False
    pid = lease.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # it exists, owned by someone else
    stat = _process_stat(pid)
    if stat is None:
        return True  # exited between the two looks
    state, start = stat
    return state == "Z" or (lease.get("pid_start") is not None and start != lease["pid_start"])


class Lease:
    def __init__(self, canvas, ttl: float | None = None, settle: float = 0.2):
        self.canvas = canvas
        self.ttl = default_ttl() if ttl is None else ttl
        self.settle = settle
        self.token = uuid.uuid4().hex
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _group(self, mode: str):
        from .canvas import _zarr_store

        store = _zarr_store(self.canvas.url, self.canvas.storage_options)
        try:
            return zarr.open_group(store, path=LEASE_GROUP, mode=mode, zarr_format=3)
        except FileNotFoundError:
            if mode == "r":
                return None
            raise

    def holder(self) -> dict[str, Any] | None:
        """The current lease if it is held, not expired and its holder may be alive; None if the
        store has no lease, it was given back, it expired, or its holder was a process on this
        host that is gone. A lease that cannot be read raises ``StoreError`` (fail closed)."""
        from .canvas import with_retries

        try:
            g = with_retries("reading the lease", lambda: self._group("r"))
            lease = None if g is None else g.attrs.asdict().get("lease")
            if lease and not isinstance(lease.get("expires"), (int, float)):
                raise ValueError(f"its expiry is {lease.get('expires')!r}")
        except Exception as e:
            raise StoreError(
                f"store {self.canvas.url!r}: its lease cannot be read ({type(e).__name__}: {str(e)[:160]}), so another "
                "render may be using it and nothing was written; check the storage (or remove the store's lease/ "
                "folder if you know no render uses it) and run again") from None
        if not lease or lease["expires"] <= time.time():
            return None
        if holder_is_gone(lease):
            return None
        return lease

    def _write(self) -> None:
        g = self._group("a")
        g.attrs["lease"] = {"token": self.token, **this_process(), "expires": time.time() + self.ttl, "ttl": self.ttl}

    def _refuse(self, lease: dict[str, Any]) -> None:
        left = max(0, int(lease["expires"] - time.time()))
        raise StoreError(
            f"store {self.canvas.url!r} is in use by another render (host {lease.get('host')}, pid {lease.get('pid')}); "
            f"its lease expires in {left} s unless renewed. Wait for it to finish; if it crashed, --resume takes over "
            f"at once on its host, elsewhere once the lease expires ({lease.get('ttl', self.ttl):.0f} s after its last "
            "heartbeat)")

    def acquire(self) -> "Lease":
        current = self.holder()
        if current and current.get("token") != self.token:
            self._refuse(current)
        self._write()
        time.sleep(self.settle)
        current = self.holder()
        if not current or current.get("token") != self.token:
            self._refuse(current or {"expires": time.time(), "ttl": self.ttl})
        self._thread = threading.Thread(target=self._heartbeat, name="ourgan-lease", daemon=True)
        self._thread.start()
        return self

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            try:
                self._write()
            except Exception:  # a failed renewal is retried at the next beat; expiry is the backstop
                pass

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            current = self.holder()
            if current and current.get("token") == self.token:
                g = self._group("a")
                g.attrs["lease"] = {}
        except Exception:
            pass  # expiry releases it anyway

    def __enter__(self) -> "Lease":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
