"""``ourgan-dist demo``: the whole product in one command on the embedded default.

Renders a 4096x3072 image of the bundled landscape photo ("picosdeeuropa" by Aitzol Berasategi,
CC-BY-4.0) with two local Ray workers into a Zarr store and says how to read it with dask. By
default it uses the model that ships with the package, trained ahead on that photo with the cpu
preset; ``--train`` trains one from scratch first, on a shortened schedule that fits a few
minutes. It ends with a PNG sheet of the photo and several seeds' new scenes. The hidden options exist for tests and benchmarks.
"""

from __future__ import annotations

import os
import time
from importlib import resources

import click

from .shared import TRAIN_SEED

DEMO_SCHEDULE = (150, 300)  # --train: base steps per scale (the paper's GAN base only), SR steps
DEMO_SIZE = "4096x3072"  # 4K wide, the bundled photo's 4:3: a 1024x768 base (the photo as the cpu preset keeps it), x4
SHEET_SEEDS = 3  # seeds on the demo's sheet: the render's, and two more drawn as base images
CREDIT = 'photo "picosdeeuropa" by Aitzol Berasategi, CC-BY-4.0 (see ourgan_dist/data/LICENSES.md)'


DEMO_ENTRIES = ("model", "render.zarr", "seeds.png")  # what the demo writes into its folder, and replaces when run again


def check_demo_folder(out_dir: str) -> None:
    """Refuse, before any work, an ``--out`` the demo would share with someone: a file, or a
    folder holding anything but what an earlier demo wrote (``DEMO_ENTRIES``; a ``seeds.png`` only
    if the demo wrote it: ``is_own_png``), which it replaces. ``model/`` and ``render.zarr`` are
    checked where they are written (``train`` and ``render`` refuse what is not theirs)."""
    from ..errors import UserError, some_names
    from ..quality.sheet import is_own_png

    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise UserError(f"--out {out_dir!r} is a file; choose a folder for the demo")
    names = sorted(os.listdir(out_dir)) if os.path.isdir(out_dir) else []
    other = [n for n in names if n not in DEMO_ENTRIES or (n == "seeds.png" and not is_own_png(os.path.join(out_dir, n)))]
    if other:
        raise UserError(
            f"--out {out_dir!r} holds files the demo did not write ({some_names(other)}); the demo replaces what is in its "
            "folder, so choose a new or empty one"
        )


def _data(name: str) -> str:
    return str(resources.files("ourgan_dist") / "data" / name)


def sample_photo() -> str:
    """The bundled landscape photo (CC-BY-4.0, see ourgan_dist/data/LICENSES.md)."""
    return _data("picos_de_europa.jpg")


def shipped_model() -> str | None:
    """The model trained ahead on the bundled photo, if this install carries it."""
    path = _data("demo-model")
    return path if os.path.exists(os.path.join(path, "model.pt")) else None


def ray_workers(wanted: int) -> int:
    """``wanted`` if the Ray executor can be imported, else 1 (the in-process executor)."""
    if wanted <= 1:
        return 1
    try:
        import ray  # noqa: F401

        from ..engine.executors import ray as _ray_executor  # noqa: F401
    except ImportError:
        return 1
    return wanted


@click.command()
@click.option(
    "--out",
    "out_dir",
    default="demo-out",
    type=click.Path(file_okay=False),
    help="Folder for the render (and the model, with --train).",
)
@click.option(
    "--train",
    "train_first",
    is_flag=True,
    help="Train a model from scratch on the bundled photo first (a shortened cpu schedule, minutes) "
    "instead of using the one trained ahead.",
)
@click.option("--seed", type=TRAIN_SEED, default=0, help="Render (and training) seed.")
@click.option("--size", default=DEMO_SIZE, hidden=True, help="Render size WIDTHxHEIGHT.")
@click.option("--workers", type=click.IntRange(min=1), default=2, hidden=True, help="Local Ray workers.")
@click.option("--preset", type=click.Choice(["tiny", "cpu"]), default="cpu", hidden=True)
@click.option("--base-steps", type=click.IntRange(min=0), default=DEMO_SCHEDULE[0], hidden=True)
@click.option("--sr-steps", type=click.IntRange(min=0), default=DEMO_SCHEDULE[1], hidden=True)
def demo(out_dir: str, train_first: bool, seed: int, size: str, workers: int, preset: str, base_steps: int, sr_steps: int) -> None:
    """Render a 4K image of the bundled landscape photo with local Ray.

    \b
    Examples:
      ourgan-dist demo --out demo-out            # the model trained ahead: a few minutes
      ourgan-dist demo --out demo-out --train    # train from scratch first (~10 minutes on 2 cores)
    """
    from ..engine.executors.ray_cluster import quiet_embedded_ray_auth
    from ..engine.render import RenderRequest, prepare, render
    from ..quality.sheet import render_preview, seed_sheet
    from ..train import train_model
    from .shared import progress_bar

    check_demo_folder(out_dir)
    quiet_embedded_ray_auth()
    photo = sample_photo()
    store = os.path.join(out_dir, "render.zarr")
    workers = ray_workers(workers)
    t0 = time.time()
    model_dir = None if train_first else shipped_model()
    if model_dir is None:
        model_dir = os.path.join(out_dir, "model")
        if not train_first:
            click.echo("note: this install carries no trained demo model; training one first")
        click.echo(
            f"1/2 training ({preset} preset, {base_steps} steps per base scale, {sr_steps} SR steps) on {photo}\n    ({CREDIT})"
        )
        train_model(
            photo, model_dir, preset=preset, seed=seed, device="auto", schedule=(base_steps, sr_steps), overwrite=True
        )  # the demo owns its folder, as its render does
        click.echo(f"    model written to {model_dir} in {time.time() - t0:.0f} s")
    else:
        click.echo(
            f"1/2 using the model trained ahead on the bundled photo: {model_dir}\n    ({CREDIT}; "
            "`--train` trains one from scratch)"
        )
    click.echo(
        f"2/2 rendering {size} with {workers} local {'Ray worker' if workers > 1 else 'in-process worker'}"
        f"{'s' if workers > 1 else ''}"
    )
    p = prepare(RenderRequest(model=model_dir, out=store, size=size, seed=seed, workers=workers, overwrite=True))
    summary = render(p, on_progress=progress_bar(p))
    click.echo(f"    {summary.tasks_run} tasks in {summary.seconds:.0f} s; total {time.time() - t0:.0f} s")
    click.echo(f"\nThe result is an OME-Zarr image at {os.path.abspath(store)}; read it with dask:\n")
    click.echo("    import ourgan_dist")
    click.echo(f"    img = ourgan_dist.open_result({os.path.abspath(store)!r})  # dask array (3, H, W) uint8")
    click.echo("    patch = img[:, :1024, :1024].compute()  # numpy, only these chunks are read")
    sheet = os.path.join(out_dir, "seeds.png")
    click.echo(f"\nDrawing {SHEET_SEEDS - 1} more seeds' new scenes for a sheet (about 30 s each on one core)")
    t1 = time.time()
    seed_sheet(
        p.model,
        photo,
        p.plan.width,
        p.plan.height,
        [seed + i for i in range(1, SHEET_SEEDS)],
        sheet,
        rendered=(seed, render_preview(store)),
    )
    click.echo(
        f"A sheet of the photo, this render and {SHEET_SEEDS - 1} more seeds' new scenes (open it in any "
        f"image viewer): {os.path.abspath(sheet)} ({time.time() - t1:.0f} s)"
    )
    exe = command_path()
    click.echo(f"Look at the render: {exe} view {store}\nExport it:          {exe} export {store} demo.tif")


def command_path() -> str:
    """How to run ``ourgan-dist`` from this shell: its name when it is on PATH, else its full path."""
    import shutil
    import sys

    here = os.path.join(os.path.dirname(sys.executable), "ourgan-dist")
    on_path = shutil.which("ourgan-dist")
    if on_path and os.path.realpath(on_path) == os.path.realpath(here):
        return "ourgan-dist"
    return here if os.path.exists(here) else "ourgan-dist"
