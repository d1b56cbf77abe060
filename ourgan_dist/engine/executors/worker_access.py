"""What Ray workers receive from the driver, and the check that they can work with it: storage
options and environment variables on an allow-list (URLs without their user:password@ part, never
a credential), and, run on a worker slot before the render writes anything, whether it can read
the model and write at the store with those and its own node's credentials."""

from __future__ import annotations

import dataclasses
import os
import re
from typing import TYPE_CHECKING

from ...errors import UserError
from ...store.storage import strip_userinfo

if TYPE_CHECKING:
    from ..tile import RenderJob

# Credentials never travel to the workers: they would sit in the cluster's actor specs (shown by
# `ray list actors --detail` and the dashboard), expire mid-render when they are session tokens,
# and override the nodes' own roles. Workers get theirs from their node: its environment (set
# where `ray start` runs, or a Kubernetes Secret mapped into the pod) or its role (an instance
# profile, IRSA, workload identity). What workers do receive is an allow-list (docs/safety.md):
# a name not on it is left out, whatever it is called (SSECustomerKey, headers, passwd, ...).
# Storage options workers may receive; a nested dict lists what may pass inside that option.
WORKER_OPTIONS: dict = {
    "anon": None,
    "endpoint_url": None,
    "use_ssl": None,
    "region_name": None,
    "requester_pays": None,
    "client_kwargs": {"endpoint_url": None, "region_name": None},
    "config_kwargs": {
        "connect_timeout": None,
        "read_timeout": None,
        "signature_version": None,
        "retries": {"max_attempts": None, "total_max_attempts": None, "mode": None},
        "s3": {"addressing_style": None},
    },
}
# Environment variables workers may receive from the driver, besides FSSPEC_<PROTOCOL>_<OPTION>
# for a top-level option above and FSSPEC_<PROTOCOL> (a JSON object: passed filtered the same way).
FORWARDED_ENV = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION")
_FSSPEC_ENV = re.compile(r"FSSPEC_([A-Z0-9]+)(?:_(.+))?")


def _scalar(value):
    """A value workers may receive: a plain scalar (URLs without their user:password@ part); None
    for anything else (a dict where none is expected, a list, an object)."""
    if isinstance(value, str):
        return strip_userinfo(value)
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return None


def for_worker_options(options: dict, allowed: dict | None = None) -> dict:
    """Storage options as workers may receive them: only the names of ``WORKER_OPTIONS``, at
    their depth, with plain values; everything else (a key, a secret, a token, a header, an
    encryption key, a password under any name) is left out."""
    allowed = WORKER_OPTIONS if allowed is None else allowed
    out = {}
    for k, v in (options or {}).items():
        if k not in allowed:
            continue
        if isinstance(allowed[k], dict):
            if isinstance(v, dict) and (sub := for_worker_options(v, allowed[k])):
                out[k] = sub
        elif (value := _scalar(v)) is not None or v is None:
            out[k] = value
    return out


def storage_environment(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The driver's object-storage environment variables that workers receive too: an endpoint
    (without user:password@), a region, fsspec's allowed per-protocol options; never a key,
    secret or token, and an ``FSSPEC_S3='{...}'`` object only filtered like storage options."""
    import json

    env = {}
    for k, v in (os.environ if environ is None else environ).items():
        if k in FORWARDED_ENV:
            env[k] = strip_userinfo(v)
        elif m := _FSSPEC_ENV.fullmatch(k):
            option = m.group(2)
            if option is None:  # FSSPEC_S3='{"endpoint_url": ..., "key": ...}'
                try:
                    value = json.loads(v)
                except ValueError:
                    continue
                if isinstance(value, dict) and (kept := for_worker_options(value)):
                    env[k] = json.dumps(kept)
            elif option.lower() in WORKER_OPTIONS and not isinstance(WORKER_OPTIONS[option.lower()], dict):
                env[k] = strip_userinfo(v)
    return env


def for_workers(job: RenderJob) -> RenderJob:
    """The job as actors receive it: allowed storage options only, URLs without user:password@."""
    return dataclasses.replace(
        job,
        model=strip_userinfo(job.model),
        store=strip_userinfo(job.store),
        storage_options=for_worker_options(job.storage_options),
        model_storage_options=for_worker_options(job.model_storage_options),
    )


# errors that mean the worker has no credentials, or not the right ones
_CREDENTIAL_ERRORS = (
    "NoCredentialsError",
    "PartialCredentialsError",
    "CredentialRetrievalError",
    "DefaultCredentialsError",
    "PermissionError",
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "Forbidden",
    "RefreshError",
)


def access_problem(model: str, model_options: dict, store: str, store_options: dict) -> tuple[str, bool] | None:
    """Run where a worker runs: can this process read the model's weights and write at the store's
    location, with these options and its own credentials? None if so, else (what failed, whether
    for want of credentials). Writes
    only a scratch object it deletes: under ``store`` on object storage (which has no folders),
    in the nearest existing folder at or above it on a file system (creating no folder)."""
    import tempfile
    import uuid

    import fsspec

    weights = model if model.endswith(".pt") else model.rstrip("/") + "/model.pt"
    try:
        with fsspec.open(weights, "rb", **model_options) as f:
            f.read(1)
    except Exception as e:  # noqa: BLE001 - reported to the driver as the reason
        return f"cannot read MODEL {model!r} ({_error_line(e)})", _credentials(e)
    try:
        fs, root = fsspec.url_to_fs(store, **store_options)
        protocols = {fs.protocol} if isinstance(fs.protocol, str) else set(fs.protocol)
        if protocols & {"file", "local"}:
            folder = root.rstrip("/") or "/"
            while not os.path.isdir(folder) and os.path.dirname(folder) != folder:
                folder = os.path.dirname(folder)
            with tempfile.NamedTemporaryFile(dir=folder, prefix=".ourgan-write-check-"):
                pass
        else:
            scratch = f"{root.rstrip('/')}/.ourgan-write-check-{uuid.uuid4().hex}"
            fs.pipe_file(scratch, b"")
            fs.rm_file(scratch)
    except Exception as e:  # noqa: BLE001 - reported to the driver as the reason
        return f"cannot write at --out {store!r} ({_error_line(e)})", _credentials(e)
    return None


def _error_line(e: BaseException) -> str:
    return f"{type(e).__name__}: {' '.join(str(e).split())[:200]}"


def _credentials(e: BaseException) -> bool:
    """Whether an error says the credentials are missing or not good enough."""
    names = {type(x).__name__ for x in (e, e.__cause__, e.__context__) if x is not None}
    return bool(names & set(_CREDENTIAL_ERRORS)) or any(w in str(e) for w in ("credentials", "AccessDenied", "Forbidden"))


def access_check_task(
    model: str, model_options: dict, store: str, store_options: dict, env: dict[str, str]
) -> tuple[str, tuple[str, bool] | None]:
    """The Ray task: (this node's address, ``access_problem``) with the forwarded variables set
    for the call, as the actors would have them."""
    import ray

    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        return ray.util.get_node_ip_address(), access_problem(model, model_options, store, store_options)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def refuse_access(problem: tuple[str, bool], node: str) -> UserError:
    """The one line a render that its workers cannot serve stops with, before it writes anything."""
    what, credentials = problem
    if credentials:
        how = (
            "--storage-options credentials are not sent to Ray workers: give the nodes their own, in the "
            "environment where `ray start` runs (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, a mounted "
            "credentials file, a Kubernetes Secret) or through their role (an instance profile, IRSA, workload "
            "identity)"
        )
    else:
        how = (
            "every Ray node must reach the model and --out themselves: use object storage (s3://, gs://) or a "
            "file system all nodes mount at the same path, with credentials on the nodes (--storage-options "
            "credentials are not sent to workers)"
        )
    return UserError(f"a Ray worker (node {node}) {what}; {how}; nothing was written")
