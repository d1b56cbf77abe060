"""``ourgan-dist inspect URL|MODEL_DIR``: describe a render store or a model directory."""

from __future__ import annotations

import json

import click

from .shared import storage_options_option


@click.command("inspect")
@click.argument("target")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option(
    "--storage-options",
    default=None,
    help="JSON fsspec options, or @FILE holding them (not shown by ps); default: $OURGAN_STORAGE_OPTIONS.",
)
def inspect_command(target: str, as_json: bool, storage_options: str | None) -> None:
    """Describe a render store (sizes, levels, tasks done/total, config) or a MODEL directory."""
    from ..outputs.inspect import describe

    info = describe(target, storage_options_option(storage_options))
    if as_json:
        click.echo(json.dumps(info, indent=2, sort_keys=True))
    else:
        for line in info.pop("lines"):
            click.echo(line)
