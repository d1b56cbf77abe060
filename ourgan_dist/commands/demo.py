"""``ourgan-dist demo``: the whole product in one command on the embedded default.

Trains the cpu preset's architecture briefly on the bundled public-domain photo, renders a 4K
image with two local Ray workers (in-process if the Ray executor is unavailable) into a Zarr
store, and says how to read it with dask. The hidden options exist for tests and benchmarks.
"""

from __future__ import annotations

import os
import time
from importlib import resources

import click

DEMO_SCHEDULE = (150, 400)  # base steps per scale, SR steps: a few minutes on 2 CPU cores
DEMO_SIZE = "4096x2731"  # 4K wide, the bundled photo's aspect ratio


def sample_photo() -> str:
    """The bundled public-domain photo (see ourgan_dist/data/LICENSES.md)."""
    return str(resources.files("ourgan_dist") / "data" / "rocket.jpg")


def ray_workers(wanted: int) -> int:
    """``wanted`` if the Ray executor can be imported, else 1 (the in-process executor)."""
    if wanted <= 1:
        return 1
    try:
        import ray  # noqa: F401

        from ..executors import ray as _ray_executor  # noqa: F401
    except ImportError:
        return 1
    return wanted


@click.command()
@click.option("--out", "out_dir", default="demo-out", type=click.Path(file_okay=False),
              help="Folder for the model and the render.")
@click.option("--seed", type=click.IntRange(min=0), default=0, help="Training and render seed.")
@click.option("--size", default=DEMO_SIZE, hidden=True, help="Render size WIDTHxHEIGHT.")
@click.option("--workers", type=click.IntRange(min=1), default=2, hidden=True, help="Local Ray workers.")
@click.option("--preset", type=click.Choice(["tiny", "cpu"]), default="cpu", hidden=True)
@click.option("--base-steps", type=click.IntRange(min=0), default=DEMO_SCHEDULE[0], hidden=True)
@click.option("--sr-steps", type=click.IntRange(min=0), default=DEMO_SCHEDULE[1], hidden=True)
def demo(out_dir: str, seed: int, size: str, workers: int, preset: str, base_steps: int, sr_steps: int) -> None:
    """Train on the bundled sample photo and render a 4K image with local Ray.

    \b
    Example:
      ourgan-dist demo --out demo-out
    """
    from ..cli import _progress_bar
    from ..render import RenderRequest, prepare, render
    from ..train import train_model

    photo = sample_photo()
    model_dir = os.path.join(out_dir, "model")
    store = os.path.join(out_dir, "render.zarr")
    workers = ray_workers(workers)
    t0 = time.time()
    click.echo(f"1/2 training ({preset} preset, {base_steps} steps per base scale, {sr_steps} SR steps) on {photo} "
               "(public domain, see ourgan_dist/data/LICENSES.md)")
    train_model(photo, model_dir, preset=preset, seed=seed, device="auto", schedule=(base_steps, sr_steps),
                overwrite=True)  # the demo owns its folder, as its render does
    t1 = time.time()
    click.echo(f"    model written to {model_dir} in {t1 - t0:.0f} s")
    click.echo(f"2/2 rendering {size} with {workers} local {'Ray worker' if workers > 1 else 'in-process worker'}"
               f"{'s' if workers > 1 else ''}")
    p = prepare(RenderRequest(model=model_dir, out=store, size=size, seed=seed, workers=workers, overwrite=True))
    summary = render(p, on_progress=_progress_bar(p))
    click.echo(f"    {summary.tasks_run} tasks in {summary.seconds:.0f} s; total {time.time() - t0:.0f} s")
    click.echo(f"\nThe result is an OME-Zarr image at {os.path.abspath(store)}; read it with dask:\n")
    click.echo("    import ourgan_dist")
    click.echo(f"    img = ourgan_dist.open_result({os.path.abspath(store)!r})  # dask array (3, H, W) uint8")
    click.echo("    patch = img[:, :1024, :1024].compute()  # numpy, only these chunks are read")
    click.echo(f"\nInspect it: ourgan-dist inspect {store}    Export it: ourgan-dist export {store} demo.tif")
