"""``ourgan-dist evaluate``: quality figures of a trained model against its photo."""

from __future__ import annotations

import json

import click


@click.command("evaluate")
@click.argument("model_dir", type=click.Path(exists=True, file_okay=False))
@click.argument("image", type=click.Path(dir_okay=False))
@click.option("--seeds", type=click.IntRange(min=1), default=8, help="Base samples for diversity and layout.")
@click.option(
    "--pictures",
    type=click.Path(file_okay=False, writable=True),
    default=None,
    help="Folder for side-by-side PNGs (render | photo | bicubic x4, 1:1 crops, one per level).",
)
@click.option(
    "--max-width",
    "render_max_width",
    type=click.IntRange(min=16),
    default=2048,
    help="The fine-detail render is at the photo's size, shrunk to at most this wide.",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (every figure).")
def evaluate_command(model_dir: str, image: str, seeds: int, pictures: str | None, render_max_width: int, as_json: bool) -> None:
    """Measure a model against its photo: fine detail of a render at the photo's size, level by
    level (SWD of finest-band patches and band RMS, with the photo's sampling floor, a blurred
    copy and bicubic x4 as references), reconstruction PSNR of the base generator, SR PSNR vs
    bicubic on the held-out strip, diversity across seeds and vertical layout.

    \b
    Examples:
      ourgan-dist evaluate model/ photo.jpg
      ourgan-dist evaluate model/ photo.jpg --seeds 8 --pictures eval-pictures/ --json
    """
    from ..quality.evaluate import describe, evaluate

    result = evaluate(model_dir, image, seeds=seeds, render_max_width=render_max_width, pictures=pictures)
    if as_json:
        click.echo(json.dumps(result, indent=2, sort_keys=True))
    else:
        for line in describe(result):
            click.echo(line)
