"""The ``ourgan-dist`` command line: a thin click layer over the library.

Imports of torch, Ray and Zarr happen inside commands, so ``--help`` is fast. Every user error
exits with status 2 and one line naming the input and the remedy; ``--debug`` shows tracebacks,
masked as the error lines are (a secret is never printed, --debug or not).
"""

from __future__ import annotations

import click

from .errors import UserError


def _redact(text: str, args: list[str] | tuple[str, ...] = ()) -> str:
    """An error line without any URL's user:password@ part or signed URL's query credentials
    (storage.redact, imported here only when there is an error to print that may hold one:
    ``--help`` stays free of fsspec and Zarr), nor the
    user:password of a URL among the command's arguments wherever it appears (a storage library
    may quote it without its URL, e.g. as a bucket name), nor a secret value of the storage
    options this command was given (``commands.shared.remember_secrets``)."""
    import re

    from .masking import mask

    for arg in args:
        for userinfo in re.findall(r"://([^/?#\s]+)@", str(arg)):
            text = text.replace(userinfo, "***")
    text = mask(text)
    if "@" not in text and "=" not in text:  # no user:password@, no signed URL's query
        return text
    from .store.storage import redact

    return redact(text)


# exceptions of the storage libraries (botocore, aiohttp, ...) that mean: the endpoint does not answer
_UNREACHABLE = {
    "EndpointConnectionError",
    "ConnectTimeoutError",
    "ConnectTimeout",
    "ClientConnectorError",
    "ServerDisconnectedError",
    "ProxyConnectionError",
    "ConnectionClosedError",
}
_NO_CREDENTIALS = {"NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError", "DefaultCredentialsError"}
_STORAGE_LIBRARIES = (
    "/botocore/",
    "/aiobotocore/",
    "/boto3/",
    "/s3fs/",
    "/fsspec/",
    "/gcsfs/",
    "/adlfs/",
    "/aiohttp/",
    "/google/auth/",
)
# errors of a path the user gave (a target that cannot be written, a folder that is a file)
_PATH_ERRNOS = {"EACCES", "EPERM", "ENOENT", "ENOTDIR", "EISDIR", "EEXIST", "EROFS", "ENOSPC", "EDQUOT"}


def _raised_in_storage_library(e: BaseException) -> bool:
    tb = e.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and any(s in tb.tb_frame.f_code.co_filename.replace("\\", "/") for s in _STORAGE_LIBRARIES)


def input_error(e: BaseException) -> str | None:
    """One line for an error that comes from the user's input rather than from a bug: storage
    that does not answer, has no credentials or refuses the options (``--storage-options``); a
    path that cannot be written or is a file where a folder is needed. None for anything else."""
    import errno
    import os

    name, first = type(e).__name__, " ".join(str(e).split())[:240]
    if name in _UNREACHABLE:
        return (
            f"the storage does not answer ({name}: {first}); check the endpoint (endpoint_url in "
            "--storage-options, or AWS_ENDPOINT_URL) and that the storage is up"
        )
    if name in _NO_CREDENTIALS:
        return (
            f"no credentials for the storage ({name}: {first}); give them in --storage-options (or "
            "OURGAN_STORAGE_OPTIONS), or in this machine's environment or role"
        )
    if (isinstance(e, (TypeError, ValueError)) or name == "ParamValidationError") and _raised_in_storage_library(e):
        return (
            f"the storage library refused the URL or --storage-options ({name}: {first}); check their names and "
            "values against the options of the URL's file system (s3fs, gcsfs, ...)"
        )
    if isinstance(e, OSError) and e.filename and errno.errorcode.get(e.errno or 0) in _PATH_ERRNOS:
        path = os.fspath(e.filename)
        while path and not os.path.lexists(path) and os.path.dirname(path) != path:
            path = os.path.dirname(path)
        if e.errno in (errno.EEXIST, errno.ENOTDIR) and os.path.lexists(path) and not os.path.isdir(path):
            return f"{path!r} is a file, where a folder is needed; choose another path"
        return f"cannot use {e.filename!r}: {e.strerror or first}; check that its folder exists and can be written"
    return None


def _traceback(ctx: click.Context, e: BaseException, args: list[str], code: int) -> None:
    """``--debug``: the full traceback, with the same credentials masked as in an error line
    (an exception's text may quote a URL's password or a storage option's secret)."""
    import traceback

    click.echo(_redact("".join(traceback.format_exception(e)).rstrip(), args), err=True)
    ctx.exit(code)


class _Cli(click.Group):
    def invoke(self, ctx: click.Context):
        args = [*ctx._protected_args, *ctx.args] if hasattr(ctx, "_protected_args") else list(ctx.args)  # for _redact
        try:
            return super().invoke(ctx)
        except UserError as e:
            if ctx.params.get("debug") or ctx.obj and ctx.obj.get("debug"):
                _traceback(ctx, e, args, 2)
            click.echo(f"Error: {_redact(str(e), args)}", err=True)
            ctx.exit(2)
        except KeyboardInterrupt:
            click.echo("Interrupted: finished tasks are recorded; re-run with --resume to continue.", err=True)
            ctx.exit(130)
        except click.exceptions.Exit:
            raise
        except click.ClickException:
            raise
        except Exception as e:
            if ctx.obj and ctx.obj.get("debug"):
                _traceback(ctx, e, args, 1)
            cause = getattr(e, "cause", None)
            if isinstance(cause, UserError):
                click.echo(f"Error: {_redact(str(cause), args)}", err=True)
                ctx.exit(2)
            if line := input_error(e) or (isinstance(cause, Exception) and input_error(cause)):
                click.echo(f"Error: {_redact(line, args)}", err=True)
                ctx.exit(2)
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            click.echo(f"Error: {type(e).__name__}: {_redact(first, args)[:300]} (re-run with --debug for the traceback)", err=True)
            ctx.exit(1)


@click.group(cls=_Cli, context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
@click.version_option(package_name="ourgan-dist")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """ourgan-dist: learn from ONE photograph, render new 4K, 16K and gigapixel images from it."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


def _register() -> None:
    """Every command lives in ``ourgan_dist/commands/<name>.py`` (click only at import: no torch)."""
    from .commands.demo import demo
    from .commands.evaluate import evaluate_command
    from .commands.export import export_command
    from .commands.inspect import inspect_command
    from .commands.render import render_command
    from .commands.train import train_command
    from .commands.view import view_command

    for command in (train_command, render_command, export_command, inspect_command, view_command, evaluate_command, demo):
        main.add_command(command)


_register()


if __name__ == "__main__":  # pragma: no cover
    main()
