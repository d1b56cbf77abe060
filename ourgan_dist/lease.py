"""One writer per store: a lease with an expiry, renewed by a heartbeat while a render runs.

The lease lives in the attributes of the store's ``lease`` group (a Zarr group of its own, so
renewing it rewrites only that small object). A render takes the lease before writing and gives
it back at the end. A render that dies without giving it back (SIGKILL, lost node) stops
renewing it, so the lease expires ``ttl`` seconds after its last renewal (60 s by default,
``OURGAN_LEASE_TTL`` overrides) and the next ``--resume`` takes it over.

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
        """The current lease if it is held and not expired."""
        try:
            g = self._group("r")
        except Exception:
            return None
        if g is None:
            return None
        lease = g.attrs.asdict().get("lease")
        if not lease or lease.get("expires", 0) <= time.time():
            return None
        return lease

    def _write(self) -> None:
        g = self._group("a")
        g.attrs["lease"] = {"token": self.token, "host": socket.gethostname(), "pid": os.getpid(),
                            "expires": time.time() + self.ttl, "ttl": self.ttl}

    def _refuse(self, lease: dict[str, Any]) -> None:
        left = max(0, int(lease["expires"] - time.time()))
        raise StoreError(
            f"store {self.canvas.url!r} is in use by another render (host {lease.get('host')}, pid {lease.get('pid')}); "
            f"its lease expires in {left} s unless renewed. Wait for it to finish; if it crashed, run again with "
            f"--resume after the lease expires ({lease.get('ttl', self.ttl):.0f} s after its last heartbeat)")

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
