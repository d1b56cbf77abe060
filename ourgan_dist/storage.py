"""Storage access over fsspec: a URL to its filesystem and its Zarr store, and retries of the
transient errors object storage gives (connection drops, timeouts, 5xx)."""

from __future__ import annotations

import logging
import os
import random
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
            log.warning("storage error on %s (%s: %s); retry %d/%d in %.2f s", what, type(e).__name__, e,
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
