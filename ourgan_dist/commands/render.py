"""``ourgan-dist render MODEL_DIR --out URL --size WxH``: plan, validate and render into a Zarr store."""

from __future__ import annotations

import click

from ..errors import UserError
from .shared import RENDER_SEED, progress_bar, storage_options_option


def _parse_halo(value: str) -> str:
    if value == "exact" or value.isdigit():
        return value
    raise UserError(f"--halo {value!r}: expected 'exact' or a number of pixels >= 0")


def _parse_memory(value: str | None) -> int | None:
    """'80GB', '24GiB', '16G', '512M' -> bytes (G, GiB: 2**30; GB: 10**9)."""
    if value is None:
        return None
    import re

    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(i?B?)\s*", value, re.IGNORECASE)
    if not m or float(m.group(1)) <= 0:
        raise UserError(f"--worker-memory {value!r}: expected a size such as 80GB, 24GiB or 16G")
    unit = "KMGT".find(m.group(2).upper()) + 1 if m.group(2) else 0
    decimal = m.group(3).upper() == "B" and unit
    return int(float(m.group(1)) * (1000 if decimal else 1024) ** unit)


def _parse_tile(value: str) -> int | None:
    if value == "auto":
        return None
    if value.isdigit():
        return int(value)
    raise UserError(f"--tile {value!r}: expected 'auto', 0 (untiled) or a number of pixels")


@click.command("render")
@click.argument("model")
@click.option("--out", required=True, help="Output store URL: a path, file://, memory://, s3://, gs://.")
@click.option("--size", required=True, help="Output size WIDTHxHEIGHT, e.g. 4096x2730.")
@click.option("--seed", type=RENDER_SEED, default=0, help="The new image's seed; each gives another image.")
@click.option(
    "--tile",
    default="auto",
    help="Tile side in output pixels (multiple of --chunk); 0: untiled; auto: sized for the workers and their memory.",
)
@click.option("--halo", default="exact", help="'exact' (the receptive field) or pixels; smaller is inexact.")
@click.option(
    "--chunk",
    type=click.IntRange(min=4),
    default=None,
    show_default="256, or a divisor of --tile",
    help="Zarr chunk side (multiple of 4); --tile must be a multiple of it.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    show_default="1, in this process (using all its cores); with --address: one per GPU (--device cuda) or per node",
    help="Workers; 2 or more without --address start local Ray workers that split this machine's cores (as `demo` does).",
)
@click.option("--address", default=None, help="Ray cluster to join: auto, HOST:PORT or ray://HOST:PORT.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu")
@click.option(
    "--worker-memory",
    default=None,
    show_default="CPU: 80% of this machine's / workers; GPU: the local GPU's, else 24GiB assumed",
    help="Memory of one worker (GPU memory with --device cuda), e.g. 80GB: sizes --tile auto and caps tiles.",
)
@click.option(
    "--precision",
    type=click.Choice(["fp32", "fp16", "bf16"]),
    default="fp32",
    help="GPU inference precision; fp32 is the exact mode.",
)
@click.option(
    "--storage-options",
    default=None,
    help="JSON fsspec options for --out (never stored), or @FILE holding them (not shown by ps); default: $OURGAN_STORAGE_OPTIONS.",
)
@click.option("--resume", is_flag=True, help="Finish an interrupted render into the same --out.")
@click.option(
    "--overwrite",
    is_flag=True,
    help="Replace an existing render at --out (only its own entries: a folder holding other files is "
    "refused) and an existing --export file.",
)
@click.option(
    "--export", "export_to", default=None, help="Also export the result (.tif/.dzi/.png/.jpg); an existing file needs --overwrite."
)
@click.option(
    "--dry-run", is_flag=True, help="Print the plan, load per worker, memory, store size and time projections; write nothing."
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def render_command(
    model: str,
    out: str,
    size: str,
    seed: int,
    tile: str,
    halo: str,
    chunk: int | None,
    workers: int | None,
    address: str | None,
    device: str,
    worker_memory: str | None,
    precision: str,
    storage_options: str | None,
    resume: bool,
    overwrite: bool,
    export_to: str | None,
    dry_run: bool,
    quiet: bool,
) -> None:
    """Render a new image of --size from a trained MODEL directory into a Zarr store.

    Without --workers the render runs in this process on one worker; --workers 2 splits this
    machine's cores between two local Ray workers. --dry-run prints the plan and a time with a
    range from a one-second probe of a real tile on this machine, and writes nothing.

    \b
    Examples:
      ourgan-dist render model/ --out out.zarr --size 4096x2730 --seed 7
      ourgan-dist render model/ --out out.zarr --size 16384x10240 --workers 2 --dry-run
      ourgan-dist render model/ --out out.zarr --size 4096x2730 --tile 0      # untiled reference
      ourgan-dist render s3://b/model --out s3://b/r.zarr --size 16384x10912 --address auto
      ourgan-dist render model/ --out r.zarr --size 36864x27648 --device cuda --workers 32 \\
          --worker-memory 80GB --dry-run                                 # plan a gigapixel on 32 GPUs
    """
    if address is None:
        from ..engine.executors.ray_cluster import quiet_embedded_ray_auth

        quiet_embedded_ray_auth()
    from ..engine.render import RenderRequest, prepare, release

    if resume and overwrite:
        raise UserError("--resume and --overwrite contradict each other; pass one")
    so = storage_options_option(storage_options)
    req = RenderRequest(
        model=model,
        out=out,
        size=size,
        seed=seed,
        tile=_parse_tile(tile),
        halo=_parse_halo(halo),
        chunk=chunk,
        workers=workers or (0 if address else 1),
        address=address,
        resume=resume,
        overwrite=overwrite,
        device=device,
        precision=precision,
        storage_options=so,
        model_storage_options=so,
        worker_memory=_parse_memory(worker_memory),
    )
    p = prepare(req)
    try:  # a cluster that prepare joined for --address is left however this ends
        checked = _check_targets(p, export_to, dry_run)
        _print_plan(p, dry_run)
        if dry_run:
            click.echo("dry run: nothing written")
            return
        _render_and_export(p, checked, export_to, quiet)
    finally:
        release(p)


def _check_targets(p, export_to: str | None, dry_run: bool):
    """Refuse an output (and an export target) that would be refused, before the plan is printed;
    a dry run reports what a real run would meet, and goes on. Returns ``check_output``'s result."""
    from ..engine.render import check_output

    try:
        checked = check_output(p)
        if export_to:  # before the render rather than after it
            from ..outputs.export_shared import check_target

            check_target(export_to, p.request.overwrite)
        return checked
    except Exception as e:  # noqa: BLE001 - a dry run reports what a real run would meet, and goes on
        if not dry_run:
            raise
        from ..store.storage import redact

        click.echo(
            redact(
                f"note: a real run would be refused: {e}"
                if isinstance(e, UserError)
                else f"note: --out was not checked ({type(e).__name__}: {str(e).strip()[:200]})"
            )
        )
        return None


def _print_plan(p, dry_run: bool) -> None:
    """The plan, the forecast (with a probe on a dry run: a real run's bar measures as it goes), a
    warning for a huge request, and the error a narrow --halo makes."""
    from ..engine.forecast import forecast
    from ..engine.halo_error import describe_halo_error, measure_halo_error

    for line in (*p.plan.describe(), *p.notes):
        click.echo(line)
    fc = forecast(p, probe=dry_run)
    for line in fc.lines:
        click.echo(line)
    if fc.warning:
        click.echo(
            f"WARNING: {fc.warning}" + ("" if dry_run else "; starting now (Ctrl-C stops it; --resume finishes it later)"),
            err=True,
        )
    if not p.plan.exact:
        err = measure_halo_error(p)
        if err:
            click.echo(describe_halo_error(p.plan, err))


def _render_and_export(p, checked, export_to: str | None, quiet: bool) -> None:
    from ..engine.render import render as run_render
    from ..store.storage import strip_userinfo

    r = p.request
    summary = run_render(p, on_progress=None if quiet else progress_bar(p), checked=checked)
    click.echo(
        f"\ndone: {summary.tasks_run} task(s) in {summary.seconds:.1f} s"
        + (f", {summary.tasks_skipped} already done" if summary.tasks_skipped else "")
        + f" -> {strip_userinfo(r.out)}"
    )
    if export_to:
        from ..engine.allocator import bound_allocator
        from ..outputs.export import export as run_export

        bound_allocator()  # the process ends with the export: keep glibc from hoarding freed buffers
        run_export(r.out, export_to, storage_options=r.storage_options, progress=not quiet, overwrite=r.overwrite)
        click.echo(f"exported {strip_userinfo(export_to)}")
