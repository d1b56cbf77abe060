"""One writer per store: a lease with an expiry, renewed by a heartbeat while a render runs, that
fails closed.

The lease is one small object, ``<store>/lease/zarr.json`` (the attributes of a Zarr group of its
own, so any Zarr reader shows it). A render takes the lease *before* it creates, overwrites or
resumes the store and gives it back at the end. A render that dies without giving it back
(SIGKILL, lost node) stops renewing it, so it expires ``ttl`` seconds after its last renewal
(60 s by default, ``OURGAN_LEASE_TTL`` overrides) and the next ``--resume`` takes it over.

The lease also names its holder's process: host name, kernel boot id, pid namespace, pid and the
process's start time. When the holder is on this very host (same name, boot and pid namespace)
and that process no longer exists (or its pid now belongs to a younger process), the lease is
taken over at once instead of after the expiry: resuming right after a local crash does not wait.
A holder on another host is only ever presumed dead by expiry.

Fails closed, everywhere:

- A lease that exists but cannot be read or makes no sense is an error, never a free lease (a
  store whose lease cannot be read may be in use), so ``--overwrite`` never deletes a live render
  after a storage glitch.
- A lease whose expiry is not a finite number, or lies more than two TTLs ahead, was written by
  no render (a holder renews to ``now + ttl``): it is refused, naming the lease folder to delete,
  instead of holding the store for ever.
- Every write of the lease is conditional on what was read, where the storage can do that
  (``lease_slots.py``):
  S3 (and S3-compatible stores that implement it) with conditional PUTs (``If-None-Match: *`` to
  create, ``If-Match: <ETag>`` to replace); a local or mounted file system with an exclusive
  ``flock`` around read-compare-replace (the replace itself an atomic rename). On S3, once per
  render, a scratch object shows that the endpoint really refuses a conflicting conditional PUT;
  an endpoint that ignores the condition is refused. Other fsspec
  stores get write-then-confirm: write, wait ``settle``, read back our token.
- Each renewal first reads the lease and renews only if it still carries our token. Another
  token, or renewals failing until the lease could expire before the next beat, marks the lease
  lost: ``Lease.check`` then raises ``LeaseLost`` and the render stops (finished tasks recorded,
  so ``--resume`` continues once the store is free).
- Workers fence their writes (``LeaseFence``): before a task writes, the worker confirms that the
  lease still carries the render's token and has not expired, re-reading it at most every
  ``ttl / 6`` seconds and never trusting a read past the lease's own expiry, so a worker of a
  render that lost its lease stops writing within seconds even if its driver is unreachable.
  (Object stores offer no fencing of ordinary writes, so a task already past its check may still
  finish its write; the new holder only ever takes over an *expired* lease, or one whose holder
  process is gone, which bounds that.)
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
import uuid
from typing import Any

from ..errors import StoreError, UserError
from .lease_slots import LEASE_GROUP, Slot, lease_document, lease_slot, parse_lease

log = logging.getLogger(__name__)


class LeaseLost(StoreError):
    """This render no longer holds its store's lease: another render took it, or it could not be
    renewed in time. The render stops; finished tasks are recorded for ``--resume``."""


MAX_TTL = 86400.0  # a lease TTL longer than a day is a mistake (OURGAN_LEASE_TTL)


def default_ttl() -> float:
    text = os.environ.get("OURGAN_LEASE_TTL", "").strip()
    if not text:
        return 60.0
    try:
        ttl = float(text)
    except ValueError:
        ttl = float("nan")
    if not 1 <= ttl <= MAX_TTL:  # NaN included
        raise StoreError(
            f"OURGAN_LEASE_TTL={text!r}: expected a number of seconds from 1 to {MAX_TTL:.0f}, e.g. OURGAN_LEASE_TTL=60"
        )
    return ttl


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


def _unreadable(url: str, e: BaseException) -> StoreError:
    return StoreError(
        f"store {url!r}: its lease cannot be read ({type(e).__name__}: {str(e)[:160]}), so another render may be "
        "using it and nothing was written; check the storage (or remove the store's lease/ folder if you know no "
        "render uses it) and run again"
    )


def lease_folder(url: str) -> str:
    return f"{url.rstrip('/')}/{LEASE_GROUP}/"


def check_expiry(lease: dict[str, Any], url: str, ttl: float | None = None, now: float | None = None) -> None:
    """Refuse a lease no render could have written: an expiry that is not a finite number, or
    more than two TTLs ahead (a holder renews to ``now + ttl``; the second TTL allows for clocks
    that disagree). Such a lease (a hand-edited or corrupted ``expires: 1e308``) would hold the
    store for ever; it needs a person to delete it."""
    if not lease:
        return
    now = time.time() if now is None else now
    recorded = lease.get("ttl")
    ttls = [default_ttl() if ttl is None else ttl]
    if isinstance(recorded, (int, float)) and 0 < recorded <= MAX_TTL:
        ttls.append(float(recorded))
    expires = lease["expires"]
    if math.isfinite(expires) and expires <= now + 2 * max(ttls):
        return
    ahead = (
        "never" if not math.isfinite(expires) else (f"in {expires - now:.3g} s" if expires - now < 1e9 else "in more than 30 years")
    )
    raise StoreError(
        f"store {url!r}: its lease expires {ahead}, further ahead than any render sets it (2 x its "
        f"{max(ttls):.0f} s TTL), so it would hold the store for ever; if no render uses this store, delete the "
        f"lease folder {lease_folder(url)} and run again"
    )


def read_lease(slot: Slot, url: str, retry: bool = True) -> tuple[dict[str, Any], Any]:
    """(the lease, {} if none or given back; its version). Anything unreadable raises
    ``StoreError``: fail closed; so does an expiry no render could have set (``check_expiry``)."""
    from .storage import with_retries

    try:
        data, version = with_retries("reading the lease", slot.read) if retry else slot.read()
        lease = {} if data is None else parse_lease(data)
    except UserError:  # a malformed setting (OURGAN_STORAGE_RETRIES=0), not the lease
        raise
    except Exception as e:
        raise _unreadable(url, e) from None
    check_expiry(lease, url)
    return lease, version


def live(lease: dict[str, Any], now: float | None = None) -> bool:
    """Held, not expired, and its holder may be alive."""
    now = time.time() if now is None else now
    return bool(lease) and lease["expires"] > now and not holder_is_gone(lease)


class Lease:
    """The driver's lease on a store: ``Lease(url_or_canvas, storage_options)``; ``acquire``
    (or ``with``) takes it and starts the heartbeat, ``check`` raises ``LeaseLost`` once it is
    lost, ``release`` gives it back if it is still ours."""

    def __init__(self, target, storage_options: dict | None = None, ttl: float | None = None, settle: float = 0.2):
        if isinstance(target, str):
            self.url, opts = target, storage_options
        else:  # a Canvas
            self.url, opts = target.url, target.storage_options if storage_options is None else storage_options
        self.storage_options = dict(opts or {})
        self.slot = lease_slot(self.url, self.storage_options)
        self.ttl = default_ttl() if ttl is None else ttl
        self.settle = settle
        self.token = uuid.uuid4().hex
        self.lost: LeaseLost | None = None
        self.valid_until = 0.0  # the expiry of our last successful write
        self._version: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def holder(self) -> dict[str, Any] | None:
        """The current lease if it is held, not expired and its holder may be alive; None if the
        store has no lease, it was given back, it expired, or its holder was a process on this
        host that is gone. A lease that cannot be read raises ``StoreError`` (fail closed)."""
        lease, _ = read_lease(self.slot, self.url)
        return lease if live(lease) else None

    def refuse_if_held(self) -> None:
        """Raise ``StoreError`` naming the holder if another render holds the store's lease now
        (reading only). A lease that cannot be read raises too: fail closed."""
        holder = self.holder()
        if holder and holder.get("token") != self.token:
            self._refuse(holder)

    def _new(self) -> tuple[bytes, float]:
        expires = time.time() + self.ttl
        return lease_document({"token": self.token, **this_process(), "expires": expires, "ttl": self.ttl}), expires

    def _refuse(self, lease: dict[str, Any]) -> None:
        left = max(0, int(lease["expires"] - time.time()))
        raise StoreError(
            f"store {self.url!r} is in use by another render (host {lease.get('host')}, pid {lease.get('pid')}); "
            f"its lease expires in {left} s unless renewed. Wait for it to finish; if it crashed, --resume takes over "
            f"at once on its host, elsewhere once the lease expires ({lease.get('ttl', self.ttl):.0f} s after its last "
            "heartbeat)"
        )

    def _settled(self) -> tuple[dict[str, Any], Any]:
        """Write-then-confirm, for stores without conditional writes: read back after ``settle``."""
        if not self.slot.conditional:
            time.sleep(self.settle)
        return read_lease(self.slot, self.url)

    def acquire(self) -> "Lease":
        current, version = read_lease(self.slot, self.url)
        verify = getattr(self.slot, "verify", None)
        if verify is not None:  # once per render: the conditional writes below are what keep renders apart
            verify(self.url)
        if live(current) and current.get("token") != self.token:
            self._refuse(current)
        data, expires = self._new()
        try:
            won = self.slot.create(data) if version is None else self.slot.replace(data, version)
        except Exception as e:
            raise StoreError(
                f"store {self.url!r}: cannot write there, not even its lease ({type(e).__name__}: "
                f"{str(e)[:160]}); nothing was written; choose a writable --out or check the "
                "storage"
            ) from None
        current, version = self._settled()
        if not won or current.get("token") != self.token:
            self._refuse(current if live(current) else {"expires": time.time(), "ttl": self.ttl})
        self._version, self.valid_until = version, expires
        self._thread = threading.Thread(target=self._heartbeat, name="ourgan-lease", daemon=True)
        self._thread.start()
        return self

    def _taken(self, lease: dict[str, Any]) -> LeaseLost:
        who = f"host {lease.get('host')}, pid {lease.get('pid')}" if lease else "nobody: it was removed"
        return LeaseLost(
            f"store {self.url!r}: this render lost its lease (it now names {who}), so it stopped; finished tasks "
            "are recorded: once the other render is done (or its lease expired), run the same command with --resume"
        )

    def renew(self) -> None:
        """One heartbeat: read the lease, and renew it only if it still carries our token, with a
        write conditional on the version just read. Raises ``LeaseLost`` if another token is
        there (or none); storage errors propagate (the heartbeat retries them until it cannot)."""
        current, version = read_lease(self.slot, self.url, retry=False)
        if current.get("token") != self.token:
            raise self._taken(current)
        data, expires = self._new()
        if not self.slot.replace(data, version):
            current, _ = read_lease(self.slot, self.url, retry=False)
            if current.get("token") != self.token:
                raise self._taken(current)
            raise OSError("the lease changed while it was renewed")
        if not self.slot.conditional:
            current, version = self._settled()
            if current.get("token") != self.token:
                raise self._taken(current)
        self._version, self.valid_until = version, expires

    def _heartbeat(self) -> None:
        interval = self.ttl / 3
        while not self._stop.wait(interval):
            try:
                self.renew()
            except LeaseLost as e:
                self.lost = e
                return
            except Exception as e:
                from .storage import redact  # the error may quote a URL's user:password@

                if time.time() + interval >= self.valid_until:  # it may expire before the next beat
                    self.lost = LeaseLost(
                        f"store {self.url!r}: this render could not renew its lease for {self.ttl:.0f} s "
                        f"({type(e).__name__}: {redact(str(e))[:160]}), so it stopped before another render could take it "
                        "over; finished tasks are recorded: check the storage and run the same command with --resume"
                    )
                    return
                log.warning("lease renewal failed (%s: %s); retrying in %.0f s", type(e).__name__, redact(str(e)), interval)

    def check(self) -> None:
        """Raise ``LeaseLost`` if the lease was lost (cheap: no I/O)."""
        if self.lost is None and self._thread is not None and time.time() >= self.valid_until:
            self.lost = LeaseLost(
                f"store {self.url!r}: this render's lease expired before it could be renewed, so "
                "it stopped; finished tasks are recorded: run the same command with --resume"
            )
        if self.lost is not None:
            raise self.lost

    def release(self) -> None:
        """Stop the heartbeat and give the lease back, if it is still ours (never another's)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.lost is not None:
            return
        try:
            current, version = read_lease(self.slot, self.url, retry=False)
            if current.get("token") == self.token:
                self.slot.replace(lease_document({}), version)
        except Exception:
            pass  # expiry releases it anyway

    def __enter__(self) -> "Lease":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


class LeaseFence:
    """A worker's check, before it writes, that the render it works for still holds the store's
    lease (the driver passes its token). Reads the lease at most every ``ttl / 6`` seconds and
    never trusts a read past ``expires - ttl / 3`` (the holder renews every ``ttl / 3``), so a
    render that lost its lease, or whose driver stopped renewing, stops writing within seconds.
    A token of "" disables the fence (a store written without a lease, e.g. by tests' helpers)."""

    def __init__(self, url: str, storage_options: dict | None, token: str):
        self.url, self.token = url, token
        self.slot = lease_slot(url, storage_options) if token else None
        self.valid_until = 0.0

    def check(self) -> None:
        if not self.token:
            return
        now = time.time()
        if now < self.valid_until:
            return
        lease, _ = read_lease(self.slot, self.url)
        if lease.get("token") != self.token:
            who = f"host {lease.get('host')}, pid {lease.get('pid')}" if lease else "nobody"
            raise LeaseLost(
                f"store {self.url!r}: the render's lease now names {who}; this worker stopped writing. "
                "Finished tasks are recorded: run the same command with --resume"
            )
        if lease["expires"] <= now:
            raise LeaseLost(
                f"store {self.url!r}: the render's lease expired (its driver stopped renewing it); this "
                "worker stopped writing. Finished tasks are recorded: run the same command with --resume"
            )
        ttl = float(lease.get("ttl") or 60)
        self.valid_until = min(lease["expires"] - ttl / 3, now + ttl / 6)
