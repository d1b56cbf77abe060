"""``ourgan-dist view URL``: a deep-zoom page of a render store on 127.0.0.1."""

from __future__ import annotations

import click

from .shared import storage_options_option


@click.command("view")
@click.argument("url")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, help="Port on 127.0.0.1 (0: any free port).")
@click.option(
    "--storage-options",
    default=None,
    help="JSON fsspec options for URL (e.g. an s3 endpoint), or @FILE holding them (not "
    "shown by ps); default: $OURGAN_STORAGE_OPTIONS.",
)
def view_command(url: str, port: int, storage_options: str | None) -> None:
    """Show the render store URL in the browser: deep zoom from the whole picture down to single
    pixels, tiles cut on the fly from its OME-Zarr pyramid (no export needed), the render's
    config beside it. Serves on 127.0.0.1 only; Ctrl-C stops it.

    \b
    Examples:
      ourgan-dist view out.zarr
      ourgan-dist view s3://bucket/r.zarr --port 8080 --storage-options '{"endpoint_url": "http://127.0.0.1:9000"}'
    """
    from ..store.storage import strip_userinfo
    from ..view.server import ViewServer

    server = ViewServer(url, storage_options_option(storage_options), port=port)
    click.echo(f"viewing {strip_userinfo(url)} at {server.url}  (Ctrl-C to stop)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        click.echo("stopped")
    finally:
        server.server_close()
