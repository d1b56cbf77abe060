"""``ourgan-dist evaluate``: quality figures of a trained model against its photo."""

from __future__ import annotations

import json

import click


@click.command("evaluate")
@click.argument("model_dir", type=click.Path(exists=True, file_okay=False))
@click.argument("image", type=click.Path(dir_okay=False))
@click.option("--seeds", type=click.IntRange(min=1), default=8, help="Base samples for diversity and layout.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def evaluate_command(model_dir: str, image: str, seeds: int, as_json: bool) -> None:
    """Measure a model: SR PSNR vs bicubic on held-out crops, diversity across seeds, vertical
    layout, fine-detail patch statistics (SWD) against a blurred copy of the photo.

    \b
    Example:
      ourgan-dist evaluate model/ photo.jpg --seeds 8 --json
    """
    from ..evaluate import describe, evaluate

    result = evaluate(model_dir, image, seeds=seeds)
    if as_json:
        click.echo(json.dumps(result, indent=2, sort_keys=True))
    else:
        for line in describe(result):
            click.echo(line)
