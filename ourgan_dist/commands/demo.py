"""``ourgan-dist demo``: the whole product in one command on the embedded default.

Trains the cpu preset's architecture briefly on the bundled public-domain photo, renders a 4K
image with two local Ray workers into a Zarr store, and says how to read it."""

from __future__ import annotations

import os
import time
from importlib import resources

import click

DEMO_SCHEDULE = (150, 400)  # base steps per scale, SR steps: ~2 minutes on 2 CPU cores


def sample_photo() -> str:
    return str(resources.files("ourgan_dist") / "data" / "rocket.jpg")


@click.command()
@click.option("--out", "out_dir", default="demo-out", type=click.Path(file_okay=False),
              help="Folder for the model and the render.")
@click.option("--size", default="4096x2731", help="Render size WIDTHxHEIGHT.")
@click.option("--workers", type=click.IntRange(min=1), default=2, help="Local Ray workers (1: in-process).")
@click.option("--base-steps", type=click.IntRange(min=0), default=DEMO_SCHEDULE[0], help="Training steps per base scale.")
@click.option("--sr-steps", type=click.IntRange(min=0), default=DEMO_SCHEDULE[1], help="SR training steps.")
@click.option("--seed", type=click.IntRange(min=0), default=0)
def demo(out_dir: str, size: str, workers: int, base_steps: int, sr_steps: int, seed: int) -> None:
    """Train on the bundled sample photo and render a 4K image with local Ray.

    \b
    Example:
      ourgan-dist demo --out demo-out
    """
    from ..render import RenderRequest, prepare, render
    from ..train import train_model

    photo = sample_photo()
    model_dir = os.path.join(out_dir, "model")
    store = os.path.join(out_dir, "render.zarr")
    t0 = time.time()
    click.echo(f"1/2 training on {photo} (public domain, see ourgan_dist/data/LICENSES.md)")
    train_model(photo, model_dir, preset="cpu", seed=seed, device="auto", schedule=(base_steps, sr_steps))
    t1 = time.time()
    click.echo(f"    model written to {model_dir} in {t1 - t0:.0f} s")
    click.echo(f"2/2 rendering {size} with {workers} local worker(s)")
    p = prepare(RenderRequest(model=model_dir, out=store, size=size, seed=seed, workers=workers, overwrite=True))
    from ..cli import _progress_bar

    summary = render(p, on_progress=_progress_bar(p))
    click.echo(f"    {summary.tasks_run} tasks in {summary.seconds:.0f} s; total {time.time() - t0:.0f} s")
    click.echo(f"\nThe result is an OME-Zarr image at {os.path.abspath(store)}; read it with dask:\n")
    click.echo("    import ourgan_dist")
    click.echo(f"    img = ourgan_dist.open_result({store!r})   # dask array (3, H, W) uint8")
    click.echo("    patch = img[:, :1024, :1024].compute()")
    click.echo(f"\nInspect it with: ourgan-dist inspect {store}")
