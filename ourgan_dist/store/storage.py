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

from ..masking import mask

log = logging.getLogger(__name__)
R = TypeVar("R")

# None: from the environment when first needed (OURGAN_STORAGE_RETRIES, OURGAN_STORAGE_BACKOFF), a
# malformed value refused in one line then; a number set here (tests) overrides the environment
RETRIES: int | None = None  # attempts per storage operation, 1 to 100 (default 6)
BACKOFF: float | None = None  # first wait in seconds, doubled each retry (+ jitter), 0 to 60 (default 0.2)


def env_number(name: str, default: float, lowest: float, highest: float, whole: bool = False) -> float:
    """A number from environment variable ``name`` (``default`` when unset or empty), refused as a
    one-line ``UserError`` when it is not a number from ``lowest`` to ``highest``."""
    from ..errors import UserError

    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = int(text) if whole else float(text)
    except ValueError:
        value = None
    if value is None or not lowest <= value <= highest:  # NaN fails the comparison too
        kind = "a whole number" if whole else "a number"
        raise UserError(f"{name}={text!r}: expected {kind} from {lowest:g} to {highest:g}, e.g. {name}={default:g}")
    return value


def retries() -> int:
    return RETRIES if RETRIES is not None else int(env_number("OURGAN_STORAGE_RETRIES", 6, 1, 100, whole=True))


def backoff() -> float:
    return BACKOFF if BACKOFF is not None else env_number("OURGAN_STORAGE_BACKOFF", 0.2, 0, 60)


def check_settings() -> None:
    """Refuse malformed storage settings in the environment up front, in one line: later they
    would surface deep inside a read (an image decoder's callback, a worker)."""
    retries()
    backoff()


def transient(e: BaseException) -> bool:
    """Errors worth retrying (a storage call, or a task that failed with one): connection drops,
    timeouts, 5xx surfaced as OSError. Not: missing objects, permissions, bad arguments, bugs."""
    if isinstance(e, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)):
        return False
    return isinstance(e, (OSError, ConnectionError, TimeoutError))


def with_retries(what: str, fn: Callable[[], R]) -> R:
    """Run a storage operation, retrying transient errors with exponential backoff and jitter.
    Every write is a whole-chunk write, so repeating one is harmless (I4)."""
    attempts, first_wait = max(1, retries()), backoff()
    for attempt in range(attempts):
        try:
            return fn()
        except Exception as e:
            if not transient(e) or attempt == attempts - 1:
                raise
            wait = first_wait * 2**attempt * (1 + random.random() / 2)
            log.warning(
                "storage error on %s (%s: %s); retry %d/%d in %.2f s",
                what,
                type(e).__name__,
                redact(str(e)),
                attempt + 1,
                attempts - 1,
                wait,
            )
            time.sleep(wait)
    raise AssertionError("unreachable")  # the last attempt returns or raises


def url_to_fs(url: str, storage_options: dict | None):
    """(fsspec filesystem, root path without a trailing slash) of a store URL."""
    fs, root = fsspec.url_to_fs(url, **(storage_options or {}))
    return fs, root.rstrip("/")


def zarr_store(url: str, storage_options: dict | None):
    """The Zarr store of a URL: a ``LocalStore`` for local paths and ``file://``, else an ``FsspecStore``."""
    if "://" not in url or url.startswith("file://"):
        path = url[len("file://") :] if url.startswith("file://") else url
        return zarr.storage.LocalStore(path)
    return zarr.storage.FsspecStore.from_url(url, storage_options=storage_options or {})


# scheme://user:password@host/...: the user:password@ part of a URL (its "userinfo")
_USERINFO = re.compile(r"\b([a-zA-Z][a-zA-Z0-9+.-]*://)[^/?#\s'\"]*@")  # to the authority's last @: a password may hold one


# a signed URL's credentials in its query (S3's X-Amz-Signature and -Credential, a session token,
# Azure's sig, a bearer token): names whose values are masked in what is logged or recorded
_SIGNED_QUERY = re.compile(
    r"([?&](?:X-Amz-(?:Signature|Credential|Security-Token)|X-Goog-(?:Signature|Credential)|Signature|sig|"
    r"AWSAccessKeyId|token|access_token|api[_-]?key|password)=)[^&#\s'\"]+",
    re.IGNORECASE,
)


def strip_userinfo(url: str) -> str:
    """``url`` without a ``user:password@`` part (s3://user:pass@bucket/x -> s3://bucket/x): what
    workers, stores and logs may be given."""
    return _USERINFO.sub(r"\1", url) if isinstance(url, str) else url


def redact(text: str) -> str:
    """``text`` (an error message, a log line, a URL to record) with every URL's ``user:password@``
    replaced by ``***@``, a signed URL's credentials in its query by ``***``, and the secret
    values of this process's storage options masked (``masking``)."""
    return mask(_SIGNED_QUERY.sub(r"\1***", _USERINFO.sub(r"\1***@", text)))
