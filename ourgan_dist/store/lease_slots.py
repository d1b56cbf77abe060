"""Where a store's lease object lives and how it is written: one small document (the attributes of
a Zarr v3 group, ``<store>/lease/zarr.json``) replaced by compare-and-swap. A slot reads the
document with a version and writes it only if it is absent (create) or still at the version read
(replace): on a local or mounted file system under an exclusive ``flock``, on S3 with conditional
PUTs (checked once per render to be really enforced), elsewhere unconditionally (the lease then
confirms by reading back)."""

from __future__ import annotations

import json
import os
import uuid
from typing import Any

import fsspec

from ..errors import StoreError

LEASE_GROUP = "lease"
LEASE_OBJECT = f"{LEASE_GROUP}/zarr.json"


def lease_document(lease: dict[str, Any]) -> bytes:
    """The lease object: a Zarr v3 group whose attributes hold the lease."""
    return json.dumps({"zarr_format": 3, "node_type": "group", "attributes": {"lease": lease}}).encode()


def parse_lease(data: bytes) -> dict[str, Any]:
    lease = json.loads(data).get("attributes", {}).get("lease") or {}
    if not isinstance(lease, dict):
        raise ValueError(f"the lease is {lease!r}")
    if lease and (not isinstance(lease.get("expires"), (int, float)) or isinstance(lease["expires"], bool)):
        raise ValueError(f"its expiry is {lease.get('expires')!r}")
    return lease


class Slot:
    """Where the lease object lives, and how it is written. ``read`` returns (bytes or None if
    absent, a version); ``create`` and ``replace`` return False when the condition failed (some
    other writer got there first). ``conditional``: whether the store enforces the condition
    itself (otherwise the caller confirms by reading back)."""

    conditional = False

    def __init__(self, fs, path: str):
        self.fs, self.path = fs, path

    def read(self) -> tuple[bytes | None, Any]:
        try:
            data = self.fs.cat_file(self.path)
        except FileNotFoundError:
            return None, None
        return data, data

    def create(self, data: bytes) -> bool:
        if self.fs.exists(self.path):
            return False
        self.fs.pipe_file(self.path, data)
        return True

    def replace(self, data: bytes, version: Any) -> bool:
        if self.read()[1] != version:
            return False
        self.fs.pipe_file(self.path, data)
        return True


class _LocalSlot(Slot):
    """A local or mounted file system: an exclusive ``flock`` on ``lease/.lock`` serialises the
    writers' read-compare-replace; readers need no lock (the replace is an atomic rename)."""

    conditional = True

    def _locked(self, fn):
        import fcntl

        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        fd = os.open(os.path.join(os.path.dirname(self.path), ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            return fn()
        finally:
            os.close(fd)  # releases the lock

    def read(self) -> tuple[bytes | None, Any]:
        try:
            with open(self.path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return None, None
        return data, data

    def _put(self, data: bytes) -> None:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        tmp = f"{self.path}.{uuid.uuid4().hex}.tmp"
        with open(tmp, "wb") as f:  # no fsync: it can stall for tens of seconds on a busy disk, and the
            f.write(data)  # rename is atomic for every process that reads the lease (power loss aside)
        os.replace(tmp, self.path)

    def create(self, data: bytes) -> bool:
        return self._locked(lambda: self.read()[0] is None and (self._put(data) or True))

    def replace(self, data: bytes, version: Any) -> bool:
        return self._locked(lambda: self.read()[1] == version and (self._put(data) or True))


class _S3Slot(Slot):
    """S3: conditional PUTs. ``If-None-Match: *`` creates only if absent, ``If-Match: <ETag>``
    replaces only the version that was read; the store refuses the other writer (HTTP 412)."""

    conditional = True

    def _bucket_key(self) -> tuple[str, str]:
        bucket, key, _ = self.fs.split_path(self.path)
        return bucket, key

    def read(self) -> tuple[bytes | None, Any]:
        from fsspec.asyn import sync

        bucket, key = self._bucket_key()

        async def get():
            resp = await self.fs._call_s3("get_object", Bucket=bucket, Key=key)
            body = resp["Body"]
            try:
                return await body.read(), resp["ETag"]
            finally:
                body.close()

        try:
            return sync(self.fs.loop, get)
        except FileNotFoundError:
            return None, None

    def _put(self, data: bytes, **condition) -> bool:
        bucket, key = self._bucket_key()
        try:
            self.fs.call_s3("put_object", Bucket=bucket, Key=key, Body=data, **condition)
        except OSError:
            # 412 (the condition failed) surfaces as an OSError like any other failure: tell them
            # apart by looking, so a lost race is never mistaken for a transient error or back
            now, version = self.read()
            if now == data:  # ours landed after all (a retried request)
                return True
            if condition.get("IfMatch") and version != condition["IfMatch"] or condition.get("IfNoneMatch") and now is not None:
                return False
            raise
        finally:
            self.fs.invalidate_cache(self.path)
        return True

    def create(self, data: bytes) -> bool:
        return self._put(data, IfNoneMatch="*")

    def replace(self, data: bytes, version: Any) -> bool:
        return self._put(data, IfMatch=version)

    def verify(self, url: str) -> None:
        """Check that the endpoint really refuses a conflicting conditional PUT (some S3-compatible
        stores accept ``If-None-Match`` and ignore it): create a scratch object beside the lease
        with ``If-None-Match: *``, try it again, and expect the refusal (HTTP 412). Fails closed
        (``StoreError``) when the second PUT is accepted. The scratch object is deleted."""
        bucket, key = self._bucket_key()
        scratch = f"{key.rsplit('/', 1)[0]}/.conditional-write-check-{uuid.uuid4().hex}"
        try:
            self.fs.call_s3("put_object", Bucket=bucket, Key=scratch, Body=b"1", IfNoneMatch="*")
            try:
                self.fs.call_s3("put_object", Bucket=bucket, Key=scratch, Body=b"2", IfNoneMatch="*")
            except Exception as e:  # noqa: BLE001 - told apart below
                if _precondition_failed(e):
                    return
                raise
        except StoreError:
            raise
        except Exception as e:  # noqa: BLE001 - any failure here means the lease cannot be relied on
            raise StoreError(
                f"store {url!r}: cannot check that the S3 endpoint refuses conflicting conditional writes "
                f"({type(e).__name__}: {str(e)[:160]}); nothing was written; check the storage and "
                "run again"
            ) from None
        finally:
            try:
                self.fs.call_s3("delete_object", Bucket=bucket, Key=scratch)
            except Exception:  # noqa: BLE001 - a leftover scratch object in lease/ is harmless
                pass
        raise StoreError(
            f"store {url!r}: the S3 endpoint accepted a PUT with If-None-Match: * over an existing object, so it "
            "ignores conditional writes and the lease could not keep two renders from writing one store; use an "
            "endpoint that implements them (AWS S3, or an S3-compatible store that refuses with HTTP 412), or a "
            "local or mounted --out"
        )


def _precondition_failed(e: BaseException) -> bool:
    """Whether an S3 error is the refusal of a conditional write (HTTP 412, or 409 for a
    concurrent conditional write), as s3fs raises it (FileExistsError from botocore's ClientError)."""
    for err in (e, e.__cause__, e.__context__):
        response = getattr(err, "response", None)
        if isinstance(response, dict):
            code = response.get("Error", {}).get("Code")
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in ("PreconditionFailed", "ConditionalRequestConflict") or status in (409, 412):
                return True
    return False


def lease_slot(url: str, storage_options: dict | None) -> Slot:
    fs, root = fsspec.url_to_fs(url, **(storage_options or {}))
    path = f"{root.rstrip('/')}/{LEASE_OBJECT}"
    protocols = {fs.protocol} if isinstance(fs.protocol, str) else set(fs.protocol)
    if protocols & {"file", "local"}:
        return _LocalSlot(fs, path)
    if protocols & {"s3", "s3a"}:
        return _S3Slot(fs, path)
    return Slot(fs, path)
