"""``ourgan-dist export URL FILE``: a finished render as a pyramidal BigTIFF, Deep Zoom, PNG, JPEG or WebP."""

from __future__ import annotations

import click

from .shared import storage_options_option


@click.command("export")
@click.argument("url")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option(
    "--compression",
    type=click.Choice(["deflate", "jpeg", "none", "png"]),
    default=None,
    help=".tif: deflate (default, lossless), jpeg or none; .dzi/.zip tiles: jpeg (default) or png.",
)
@click.option("--quality", type=click.IntRange(1, 100), default=90, help="JPEG and WebP quality.")
@click.option(
    "--storage-options",
    default=None,
    help="JSON fsspec options for URL (e.g. an s3 endpoint), or @FILE holding them (not "
    "shown by ps); default: $OURGAN_STORAGE_OPTIONS.",
)
@click.option(
    "--overwrite",
    is_flag=True,
    help="Replace an existing FILE (for .dzi, also its name_files/ tree, only if it holds nothing but Deep Zoom tiles).",
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def export_command(
    url: str, file: str, compression: str | None, quality: int, storage_options: str | None, overwrite: bool, quiet: bool
) -> None:
    """Export the complete render store URL to FILE; the format comes from FILE's suffix.

    \b
    .tif/.tiff  tiled pyramidal BigTIFF (the store's own pyramid; constant memory at any size)
    .dzi        Deep Zoom tree (name.dzi + name_files/), .zip: the same in one file
    .png .jpg .webp   one image (JPEG: at most 65535 px a side, WebP: 16383)

    \b
    Examples:
      ourgan-dist export out.zarr out.tif
      ourgan-dist export out.zarr out.tif --compression jpeg --quality 85 --overwrite
      ourgan-dist export s3://bucket/r.zarr r.dzi --storage-options '{"anon": false}'
    """
    from ..engine.allocator import bound_allocator
    from ..outputs.export import export

    bound_allocator()  # this process ends with the export: keep glibc from hoarding freed buffers
    result = export(
        url,
        file,
        storage_options=storage_options_option(storage_options),
        compression=compression,
        quality=quality,
        progress=not quiet,
        overwrite=overwrite,
    )
    click.echo(
        f"exported {result.width}x{result.height} to {file} ({result.format}"
        + (f", {result.compression}" if result.compression else "")
        + (f", {result.levels} levels" if result.levels > 1 else "")
        + ")"
    )
