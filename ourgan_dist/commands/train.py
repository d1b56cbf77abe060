"""``ourgan-dist train IMAGE --out MODEL_DIR``: learn a model from one photograph."""

from __future__ import annotations

import click

from .shared import TRAIN_SEED


@click.command("train")
@click.argument("image", type=click.Path(dir_okay=False))
@click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="Model directory to write.")
@click.option(
    "--preset", type=click.Choice(["tiny", "cpu", "paper"]), default="cpu", help="tiny: tests; cpu: a laptop; paper: GPU scale."
)
@click.option(
    "--iterations",
    type=click.IntRange(min=0),
    default=None,
    help="Override the preset's steps per stage (0: write an untrained, seeded model).",
)
@click.option("--seed", type=TRAIN_SEED, default=0, help="Seed of the weights' start and of every random draw.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto")
@click.option(
    "--set",
    "settings",
    multiple=True,
    metavar="SECTION.FIELD=VALUE",
    help="Change one field of the preset's config (repeatable), e.g. --set base.noise=3 "
    "--set train.sr_blur=0; the fields are those in the model's model.json.",
)
@click.option("--no-vertical-coord", is_flag=True, help="Ablation: train without the y channel.")
@click.option("--overwrite", is_flag=True, help="Replace the model already in --out.")
@click.option(
    "--allow-damaged", is_flag=True, help="Train on a damaged (truncated, corrupt) photo's decodable part instead of refusing it."
)
def train_command(
    image: str,
    out: str,
    preset: str,
    iterations: int | None,
    seed: int,
    device: str,
    settings: tuple[str, ...],
    no_vertical_coord: bool,
    overwrite: bool,
    allow_damaged: bool,
) -> None:
    """Learn a model from one photograph IMAGE.

    \b
    Examples:
      ourgan-dist train photo.jpg --out model/ --preset cpu
      ourgan-dist train photo.jpg --out untrained/ --preset tiny --iterations 0 --seed 3
      ourgan-dist train photo.jpg --out model/ --overwrite          # replace an earlier model
      ourgan-dist train photo.jpg --out model/ --set base.noise=3   # bolder new layouts
    """
    import time

    from .demo import command_path
    from ..train import train_model

    t0 = time.time()
    model_id = train_model(
        image,
        out,
        preset=preset,
        iterations=iterations,
        seed=seed,
        device=device,
        vertical_coord=not no_vertical_coord,
        overwrite=overwrite,
        allow_damaged=allow_damaged,
        warn=lambda message: click.echo(f"Warning: {message}", err=True),
        settings=settings,
    )
    minutes, seconds = divmod(round(time.time() - t0), 60)
    click.echo(
        f"model {model_id} written to {out} in {minutes} min {seconds:02d} s\n"
        f"next: {command_path()} render {out} --out render.zarr --size {suggested_size(image)} --seed 1"
    )


def suggested_size(image: str, long_side: int = 4096) -> str:
    """A --size of the photo's own shape with ``long_side`` px on its longer side, for the hint
    after training (a portrait photo gets a portrait render); 4096x2560 if the photo cannot be read."""
    from ..images import photo_size

    try:
        w, h = photo_size(image)
    except Exception:  # noqa: BLE001 - only a hint: training already read the photo
        return f"{long_side}x{long_side * 5 // 8}"
    if w >= h:
        return f"{long_side}x{max(16, round(long_side * h / w))}"
    return f"{max(16, round(long_side * w / h))}x{long_side}"
