"""The ``ourgan-dist`` command line: a thin click layer over the library.

Imports of torch, Ray and Zarr happen inside commands, so ``--help`` is fast. Every user error
exits with status 2 and one line naming the input and the remedy; ``--debug`` shows tracebacks.
"""

from __future__ import annotations

import click

from .errors import UserError


def _redact(text: str) -> str:
    """An error line without any URL's user:password@ part (storage.redact, imported here only
    when there is an error to print: ``--help`` stays free of fsspec and Zarr)."""
    if "@" not in text:
        return text
    from .storage import redact

    return redact(text)


class _Cli(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except UserError as e:
            if ctx.params.get("debug") or ctx.obj and ctx.obj.get("debug"):
                raise
            click.echo(f"Error: {_redact(str(e))}", err=True)
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
                raise
            cause = getattr(e, "cause", None)
            if isinstance(cause, UserError):
                click.echo(f"Error: {_redact(str(cause))}", err=True)
                ctx.exit(2)
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            click.echo(f"Error: {type(e).__name__}: {_redact(first)[:300]} (re-run with --debug for the traceback)",
                       err=True)
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

    for command in (train_command, render_command, export_command, inspect_command, view_command, evaluate_command,
                    demo):
        main.add_command(command)


_register()


if __name__ == "__main__":  # pragma: no cover
    main()
