"""Storage access over fsspec: a URL to its filesystem and its Zarr store, and retries of the
transient errors object storage gives (connection drops, timeouts, 5xx)."""

from __future__ import annotations

import logging
import os
import random
import re
import time
from typing import Callable, TypeVar

import fsspec
import zarr

log = logging.getLogger(__name__)
R = TypeVar("R")

RETRIES = int(os.environ.get("OURGAN_STORAGE_RETRIES", "6"))  # attempts per storage operation
BACKOFF = float(os.environ.get("OURGAN_STORAGE_BACKOFF", "0.2"))  # first wait, doubled each retry (+ jitter)


def _transient(e: BaseException) -> bool:
    """Errors worth retrying: connection drops, timeouts, 5xx surfaced as OSError. Not: missing
    objects, permissions, bad arguments."""
    if isinstance(e, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)):
        return False
    return isinstance(e, (OSError, ConnectionError, TimeoutError))


def with_retries(what: str, fn: Callable[[], R]) -> R:
    """Run a storage operation, retrying transient errors with exponential backoff and jitter.
    Every write is a whole-chunk write, so repeating one is harmless (I4)."""
    for attempt in range(RETRIES):
        try:
            return fn()
        except Exception as e:
            if not _transient(e) or attempt == RETRIES - 1:
                raise
            wait = BACKOFF * 2**attempt * (1 + random.random() / 2)
            log.warning("storage error on %s (%s: %s); retry %d/%d in %.2f s", what, type(e).__name__, redact(str(e)),
                        attempt + 1, RETRIES - 1, wait)
            time.sleep(wait)
    raise AssertionError("unreachable")


def url_to_fs(url: str, storage_options: dict | None):
    """(fsspec filesystem, root path without a trailing slash) of a store URL."""
    fs, root = fsspec.url_to_fs(url, **(storage_options or {}))
    return fs, root.rstrip("/")


def zarr_store(url: str, storage_options: dict | None):
    """The Zarr store of a URL: a ``LocalStore`` for local paths and ``file://``, else an ``FsspecStore``."""
    if "://" not in url or url.startswith("file://"):
        path = url[len("file://"):] if url.startswith("file://") else url
        return zarr.storage.LocalStore(path)
    return zarr.storage.FsspecStore.from_url(url, storage_options=storage_options or {})


# scheme://user:password@host/...: the user:password@ part of a URL (its "userinfo")
_USERINFO = re.compile(r"\b([a-zA-Z][a-zA-Z0-9+.-]*://)[^/?#@\s'\"]*@")


def strip_userinfo(url: str) -> str:
    """``url`` without a ``user:password@`` part (s3://user:pass@bucket/x -> s3://bucket/x): what
    workers, stores and logs may be given."""
    return _USERINFO.sub(r"\1", url) if isinstance(url, str) else url


def redact(text: str) -> str:
    """``text`` (an error message, a log line) with every URL's ``user:password@`` replaced by ``***@``."""
    return _USERINFO.sub(r"\1***@", text)

