"""Exports of a finished render: pyramidal BigTIFF, Deep Zoom, PNG, JPEG, WebP, all streamed.

The format comes from the file name:

    .tif .tiff   tiled pyramidal BigTIFF, one page per OME-Zarr array (0 full size, 1 half, ...,
                 pages after the first marked "reduced resolution"): the store's own pyramid,
                 written tile by tile with tifffile; deflate (lossless, default), jpeg or none
    .dzi         a Deep Zoom tree (``name.dzi`` + ``name_files/``) cut and encoded by libvips' dzsave,
                 its levels being the store's own pyramid;
    .zip         the same tree in one zip file; tiles jpeg (default) or png (lossless)
    .png .jpg .jpeg .webp   one image, libvips; JPEG and WebP have hard size limits

Nothing decodes the image whole (invariant I5). The TIFF writer receives one tile at a time and
keeps a few megabytes in flight. The Deep Zoom tree is cut band by band (a few thousand pixels
wide) from each pyramid array, so libvips' strip buffers do not grow with the image either. The
single-image writers pull the image through a sequential PNG stream of the store
(``pixelstream``); libvips keeps a cache of lines across the whole width behind a sequential
source, so their memory grows with the image's width (docs/viewing.md has the figures). A file
appears only when it is complete: it is written under a temporary name beside the target and
renamed.

This module is the entry point (``export``) and the TIFF and single-image writers; the Deep Zoom
writer is ``export_dzi``; the format table, the target checks (``check_target``), the progress bar
and the store as a libvips image are ``export_shared``.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass

import numpy as np

from ..store.canvas import Canvas
from ..errors import StoreError, UserError
from ..store.storage import check_settings
from .export_dzi import write_dzi
from .export_shared import check_target, export_bar, export_format, publish_file, resolve_compression, vips_image

TIFF_TILE = 256
TIFF_BUFFER = 4 << 20  # bytes tifffile compresses per pass: bounds its memory
MAX_SIDE = {"jpeg": 65535, "webp": 16383, "png": 10_000_000}  # format limits (png: libvips' own limit)


@dataclass(frozen=True)
class ExportResult:
    """What an export wrote."""

    path: str  # the file (for .dzi, the .dzi file beside its _files folder)
    format: str
    width: int
    height: int
    levels: int  # pyramid levels written (1 for single images)
    compression: str | None


def open_for_export(url: str, storage_options: dict | None = None) -> Canvas:
    """Open a store and check it can be exported: an ourgan-dist render, complete, with every
    pyramid array present at the shape its plan gives."""
    canvas = Canvas(url, storage_options)
    canvas.require_complete("export")
    for k, (h, w) in enumerate(canvas.plan.pyramid_shapes):
        try:
            arr = canvas.array(str(k))
        except KeyError:
            raise StoreError(
                f"store {url!r}: pyramid array '{k}' is missing, so the store is damaged; render it again with --overwrite"
            ) from None
        if tuple(arr.shape) != (3, h, w) or arr.dtype != np.uint8:
            raise StoreError(
                f"store {url!r}: array '{k}' is {arr.dtype} {tuple(arr.shape)}, the plan says uint8 "
                f"{(3, h, w)}; the store is damaged: render it again with --overwrite"
            )
    return canvas


def _check_size(fmt: str, file: str, width: int, height: int) -> None:
    limit = MAX_SIDE.get(fmt)
    if limit and max(width, height) > limit:
        raise UserError(
            f"export to {file!r}: {width}x{height} is over the {limit} px per side that "
            f"{fmt.upper()} allows; export to .tif (pyramidal BigTIFF) or .dzi instead"
        )


def export(
    url: str,
    file: str,
    *,
    storage_options: dict | None = None,
    compression: str | None = None,
    quality: int = 90,
    progress: bool = True,
    overwrite: bool = False,
) -> ExportResult:
    """Export the complete render at ``url`` to ``file``; the format comes from its suffix.

    ``compression``: for .tif ``deflate`` (default, lossless), ``jpeg`` or ``none``; for .dzi/.zip
    the tile format, ``jpeg`` (default) or ``png`` (lossless). ``quality`` applies to JPEG and WebP.
    An existing ``file`` (for .dzi, or its ``_files`` folder) is refused unless ``overwrite``;
    with it, a ``_files`` folder is replaced only if it is a Deep Zoom tree (``check_target``).
    """
    fmt = export_format(file)
    comp = resolve_compression(fmt, file, compression)
    if not 1 <= quality <= 100:
        raise UserError(f"--quality {quality}: must be in [1, 100]")
    check_target(file, overwrite, comp)
    check_settings()
    canvas = open_for_export(url, storage_options)
    height, width = canvas.plan.pyramid_shapes[0]
    _check_size(fmt, file, width, height)
    if fmt == "tiff":
        levels = _write_tiff(canvas, file, comp, quality, progress, overwrite)
    elif fmt in ("dzi", "dzi-zip"):
        levels = write_dzi(canvas, file, comp, quality, progress, zipped=fmt == "dzi-zip", overwrite=overwrite)
    else:
        levels = _write_single(canvas, file, fmt, quality, progress, overwrite)
    return ExportResult(os.path.abspath(file), fmt, width, height, levels, comp)


def _partial(file: str) -> str:
    """A temporary name beside ``file`` that keeps its suffix (libvips picks the format by it)."""
    d, base = os.path.split(os.path.abspath(file))
    return os.path.join(d, f".{base}.{uuid.uuid4().hex[:12]}.partial{os.path.splitext(base)[1]}")


def _description(canvas: Canvas) -> str:
    info = canvas.info
    return json.dumps(
        {"ourgan_dist": {k: info.get(k) for k in ("name", "model_id", "model_preset", "seed", "size", "exact", "precision")}}
    )


def _write_tiff(canvas: Canvas, file: str, compression: str, quality: int, progress: bool, overwrite: bool) -> int:
    """One tiled page per OME-Zarr array, written tile by tile from the store."""
    import tifffile

    from .pixelstream import tile_boxes, tiles

    shapes = canvas.plan.pyramid_shapes
    total = sum(len(tile_boxes(h, w, TIFF_TILE)) for h, w in shapes)
    codec = {
        "deflate": dict(compression="zlib", compressionargs={"level": 6}, predictor=True),
        "jpeg": dict(compression="jpeg", compressionargs={"level": quality}),
        "none": dict(compression=None),
    }[compression]
    tmp = _partial(file)
    try:
        with (
            export_bar(progress, total, "tile", f"export {os.path.basename(file)}") as bar,
            tifffile.TiffWriter(tmp, bigtiff=True) as tw,
        ):
            for k, (h, w) in enumerate(shapes):
                tw.write(
                    tiles(canvas, str(k), TIFF_TILE, on_tile=lambda: bar.update(1)),
                    shape=(h, w, 3),
                    dtype=np.uint8,
                    tile=(TIFF_TILE, TIFF_TILE),
                    photometric="rgb",
                    subfiletype=1 if k else 0,
                    description=None if k else _description(canvas),
                    metadata=None,
                    software="ourgan-dist",
                    maxworkers=2,
                    buffersize=TIFF_BUFFER,
                    **codec,
                )
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    publish_file(tmp, file, overwrite)  # on refusal the finished export stays at tmp, and the error says so
    return len(shapes)


def _write_single(canvas: Canvas, file: str, fmt: str, quality: int, progress: bool, overwrite: bool) -> int:
    options = {"png": {"compression": 6}, "jpeg": {"Q": quality}, "webp": {"Q": quality}}[fmt]
    tmp = _partial(file)
    try:
        with export_bar(progress, canvas.plan.height, "row", f"export {os.path.basename(file)}") as bar:
            image, _source, _stream = vips_image(canvas, bar.update)
            image.write_to_file(tmp, **options)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    publish_file(tmp, file, overwrite)  # on refusal the finished export stays at tmp, and the error says so
    return 1
