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
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
import uuid
import zipfile
from dataclasses import dataclass

import numpy as np

from ..store.canvas import Canvas
from .deepzoom import OVERLAP as DZI_OVERLAP
from .deepzoom import TILE as DZI_TILE
from .deepzoom import descriptor, top_level
from ..errors import StoreError, UserError
from ..store.storage import check_settings

TIFF_TILE = 256
TIFF_BUFFER = 4 << 20  # bytes tifffile compresses per pass: bounds its memory
DZI_BAND_TILES = 16  # tile columns per dzsave pass (~4K px): bounds its strip buffers
FORMATS = {
    ".tif": "tiff",
    ".tiff": "tiff",
    ".dzi": "dzi",
    ".zip": "dzi-zip",
    ".png": "png",
    ".jpg": "jpeg",
    ".jpeg": "jpeg",
    ".webp": "webp",
}
COMPRESSIONS = {"tiff": ("deflate", "jpeg", "none"), "dzi": ("jpeg", "png"), "dzi-zip": ("jpeg", "png")}
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


def export_format(file: str) -> str:
    """The export format named by a file's suffix, or a ``UserError`` listing the choices."""
    suffix = os.path.splitext(file)[1].lower()
    if suffix not in FORMATS:
        raise UserError(
            f"export to {file!r}: unknown file type {suffix or '(none)'!r}; name the file .tif (pyramidal "
            "BigTIFF), .dzi or .zip (Deep Zoom), .png, .jpg or .webp"
        )
    return FORMATS[suffix]


def resolve_compression(fmt: str, file: str, compression: str | None) -> str | None:
    """The compression to use: the format's default when none is given; refused where the
    format has no choice or does not know the one given."""
    choices = COMPRESSIONS.get(fmt)
    if choices is None:
        if compression is not None:
            raise UserError(
                f"--compression {compression!r}: {file!r} has no compression choice; it applies to "
                ".tif (deflate, jpeg, none) and .dzi/.zip (jpeg, png)"
            )
        return None
    if compression is None:
        return choices[0]
    if compression not in choices:
        raise UserError(f"--compression {compression!r} for {file!r}: choose one of {', '.join(choices)}")
    return compression


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


def dzi_files(file: str) -> str:
    """The ``<stem>_files`` folder of a ``.dzi`` export, beside the ``.dzi`` file."""
    target = os.path.abspath(file)
    return os.path.join(os.path.dirname(target), os.path.splitext(os.path.basename(target))[0] + "_files")


def dzi_tile_ext(compression: str | None) -> str:
    """The suffix of a Deep Zoom export's tile files for its tile compression."""
    return "png" if compression == "png" else "jpg"


_DZI_TILE_NAME = {ext: re.compile(rf"^\d+_\d+\.{ext}$") for ext in ("jpg", "png")}


def foreign_in_dzi_tree(tree: str, ext: str) -> str | None:
    """The first path under a Deep Zoom ``_files`` folder that such an export does not write
    (anything but numeric level folders holding only ``<col>_<row>.<ext>`` tile files), or None
    when the folder has exactly that layout. A link is foreign: it is never followed."""
    if os.path.islink(tree) or not os.path.isdir(tree):
        return tree
    for level in sorted(os.listdir(tree)):
        path = os.path.join(tree, level)
        if not level.isdigit() or os.path.islink(path) or not os.path.isdir(path):
            return path
        for name in sorted(os.listdir(path)):
            tile = os.path.join(path, name)
            if not _DZI_TILE_NAME[ext].match(name) or os.path.islink(tile) or not os.path.isfile(tile):
                return tile
    return None


def _check_writable(file: str, parent: str) -> None:
    """Refuse a folder this process cannot create files in (the export writes a temporary file
    beside its target and renames it): create and delete a scratch file there."""
    import tempfile

    try:
        with tempfile.NamedTemporaryFile(dir=parent, prefix=".ourgan-write-check-"):
            pass
    except OSError as e:
        raise UserError(
            f"export to {file!r}: cannot write in folder {parent!r} ({e.strerror or e}); choose a folder you can write"
        ) from None


def check_target(file: str, overwrite: bool = False, compression: str | None = None) -> None:
    """Refuse, writing nothing, a target this export may not write: a remote or folder path, a
    missing parent folder, or an existing file without ``overwrite``; for ``.dzi``, an existing
    ``<stem>_files`` folder without ``overwrite``, or with it one that holds anything but Deep
    Zoom tiles of this export's tile format (``foreign_in_dzi_tree``), which is never deleted."""
    if "://" in file:
        raise UserError(f"export to {file!r}: exports write a local file; give a path on this machine")
    parent = os.path.dirname(os.path.abspath(file))
    if not os.path.isdir(parent):
        if os.path.lexists(parent):
            raise UserError(f"export to {file!r}: {parent!r} is a file, not a folder; choose another path")
        raise UserError(f"export to {file!r}: folder {parent!r} does not exist; create it first")
    _check_writable(file, parent)
    if os.path.isdir(file):
        raise UserError(f"export to {file!r}: is a folder; give a file name ending .tif, .dzi, .zip, .png, .jpg or .webp")
    fmt = export_format(file)
    tree = dzi_files(file) if fmt == "dzi" else None
    if not overwrite:
        if os.path.lexists(file):
            raise UserError(f"export to {file!r}: the file already exists; pass --overwrite to replace it")
        if tree is not None and os.path.lexists(tree):
            raise UserError(f"export to {file!r}: its tile folder {tree!r} already exists; pass --overwrite to replace it")
    elif tree is not None and os.path.lexists(tree):
        ext = dzi_tile_ext(compression)
        if foreign := foreign_in_dzi_tree(tree, ext):
            raise UserError(
                f"export to {file!r} --overwrite: refusing to delete {tree!r}, it is not only a Deep Zoom "
                f"tree of .{ext} tiles ({foreign!r} is not one); move it away or export to another name"
            )


def _bar(progress: bool, total: int, unit: str, desc: str):
    from tqdm import tqdm

    return tqdm(
        total=total,
        unit=unit,
        desc=desc,
        disable=not progress,
        file=sys.stderr,
        dynamic_ncols=True,
        unit_scale=unit in ("row", "px"),
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
        levels = _write_tiff(canvas, file, comp, quality, progress)
    elif fmt in ("dzi", "dzi-zip"):
        levels = _write_dzi(canvas, file, comp, quality, progress, zipped=fmt == "dzi-zip", overwrite=overwrite)
    else:
        levels = _write_single(canvas, file, fmt, quality, progress)
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


def _write_tiff(canvas: Canvas, file: str, compression: str, quality: int, progress: bool) -> int:
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
        with _bar(progress, total, "tile", f"export {os.path.basename(file)}") as bar, tifffile.TiffWriter(tmp, bigtiff=True) as tw:
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
        os.replace(tmp, file)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return len(shapes)


def _vips_image(canvas: Canvas, on_rows, name: str = "0", columns: tuple[int, int] | None = None):
    """Array ``name`` of the store (or its ``columns`` x0..x1) as a sequential pyvips image,
    pulled from the store as libvips reads; ``on_rows(n)`` after each band of n rows."""
    import pyvips

    from .pixelstream import PngStream

    stream = PngStream(canvas, name, on_rows=on_rows, columns=columns)
    source = pyvips.SourceCustom()
    source.on_read(stream.read)
    image = pyvips.Image.new_from_source(source, "", access="sequential")
    return image, source, stream  # callers keep the source and stream alive while libvips reads


def _write_single(canvas: Canvas, file: str, fmt: str, quality: int, progress: bool) -> int:
    options = {"png": {"compression": 6}, "jpeg": {"Q": quality}, "webp": {"Q": quality}}[fmt]
    tmp = _partial(file)
    try:
        with _bar(progress, canvas.plan.height, "row", f"export {os.path.basename(file)}") as bar:
            image, _source, _stream = _vips_image(canvas, bar.update)
            image.write_to_file(tmp, **options)
        os.replace(tmp, file)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return 1


class _DziTree:
    """Where Deep Zoom tiles go: a ``name_files/`` folder, or the same paths inside a zip file."""

    def __init__(self, work: str, stem: str, zipped: bool):
        self.stem, self.root = stem, os.path.join(work, f"{stem}_files")
        self.zip = zipfile.ZipFile(os.path.join(work, f"{stem}.zip"), "w", zipfile.ZIP_STORED, allowZip64=True) if zipped else None
        self._made: set[int] = set()

    def put(self, level: int, col: int, row: int, src: str, ext: str) -> None:
        name = f"{level}/{col}_{row}.{ext}"
        if self.zip is not None:
            self.zip.write(src, f"{self.stem}_files/{name}")
            os.remove(src)
            return
        if level not in self._made:
            os.makedirs(os.path.join(self.root, str(level)), exist_ok=True)
            self._made.add(level)
        os.replace(src, os.path.join(self.root, name))

    def finish(self, dzi: str, path: str) -> None:
        if self.zip is not None:
            self.zip.writestr(f"{self.stem}.dzi", dzi)
            self.zip.close()
        else:
            with open(path, "w") as f:
                f.write(dzi)


def dzi_bands(width: int, per_band: int) -> list[tuple[int, int]]:
    """Deep Zoom tile columns ``[c0, c1)`` cut in one pass each, ``per_band`` at a time."""
    cols = -(-width // DZI_TILE)
    return [(c, min(c + per_band, cols)) for c in range(0, cols, per_band)]


@dataclass(frozen=True)
class _DziPass:
    """One dzsave run: tile columns ``[c0, c1)`` of OME-Zarr array ``array`` (Deep Zoom level
    ``level``), cut from its pixel columns ``[x0, x1)``; ``last``: the coarsest array, whose run
    also makes the levels below it."""

    array: int
    level: int
    c0: int
    c1: int
    x0: int
    x1: int
    last: bool

    @property
    def shift(self) -> int:
        """The band's tile column j is column j + shift of its level (the band starts one column early)."""
        return self.c0 - 1 if self.c0 else 0


def _dzi_passes(shapes: list[tuple[int, int]], top: int) -> list[_DziPass]:
    """The dzsave runs of a Deep Zoom export: each array in bands of ``DZI_BAND_TILES`` tile
    columns (the coarsest in one), each band one tile column early (its first kept tile then has
    its left overlap) and one overlap past its end."""
    passes = []
    for k, (_, w) in enumerate(shapes):
        last = k == len(shapes) - 1
        for c0, c1 in dzi_bands(w, 1 << 30 if last else DZI_BAND_TILES):
            x0 = (c0 - 1) * DZI_TILE if c0 else 0
            passes.append(_DziPass(k, top - k, c0, c1, x0, min(w, c1 * DZI_TILE + DZI_OVERLAP), last))
    return passes


def _cut_band(canvas: Canvas, p: _DziPass, work: str, suffix: str, on_px) -> str:
    """dzsave of one band into ``work``; returns its ``band_files`` folder. ``on_px(n)`` as
    pixels are read."""
    image, source, stream = _vips_image(canvas, lambda rows: on_px(rows * (p.x1 - p.x0)), str(p.array), (p.x0, p.x1))
    band = os.path.join(work, "band")
    image.dzsave(band, tile_size=DZI_TILE, overlap=DZI_OVERLAP, suffix=suffix, depth="onepixel" if p.last else "one")
    del image, source, stream
    os.remove(band + ".dzi")
    return os.path.join(work, "band_files")


def _move_band_tiles(own: str, p: _DziPass, tree: _DziTree, ext: str) -> None:
    """A band's tiles into the tree at their level's columns, without the extra leading column or
    a sliver past the band; the band's folder is removed."""
    levels = sorted(int(d) for d in os.listdir(own) if d.isdigit())
    for d in levels:
        for name in os.listdir(os.path.join(own, str(d))):
            col, row = (int(v) for v in os.path.splitext(name)[0].split("_"))
            if (p.c0 and col == 0) or col + p.shift >= p.c1:
                continue
            tree.put(p.level - levels[-1] + d, col + p.shift, row, os.path.join(own, str(d), name), ext)
    shutil.rmtree(own)


def _publish_dzi(tree: _DziTree, work: str, file: str, overwrite: bool, tiles: str) -> None:
    """The finished export from ``work`` to its place: the zip file, or the ``.dzi`` file and its
    ``_files`` folder (an old one checked again, as it may have changed while the tiles were cut)."""
    target = os.path.abspath(file)
    if tree.zip is not None:
        os.replace(os.path.join(work, f"{tree.stem}.zip"), target)
        return
    old_tree = os.path.join(os.path.dirname(target), f"{tree.stem}_files")
    if os.path.lexists(old_tree):
        check_target(file, overwrite, tiles)
        shutil.rmtree(old_tree)
    os.replace(tree.root, old_tree)
    os.replace(os.path.join(work, f"{tree.stem}.dzi"), target)


def _write_dzi(canvas: Canvas, file: str, tiles: str, quality: int, progress: bool, zipped: bool, overwrite: bool = False) -> int:
    """A Deep Zoom tree (``name.dzi`` + ``name_files/``, or both in ``name.zip``) whose levels are
    the store's own pyramid: Deep Zoom level ``top - k`` is OME-Zarr array ``k`` (both halve and
    round up). libvips' dzsave cuts and encodes the tiles; it runs once per band of
    ``DZI_BAND_TILES`` tile columns of each array, so its strip buffers stay a few megabytes
    whatever the image's width. A band's image starts one tile column early so that its first
    kept tile has its left overlap; that extra column is dropped. The coarsest array also gives
    the levels below it, down to 1x1 (dzsave's own halving)."""
    shapes = canvas.plan.pyramid_shapes
    height, width = shapes[0]
    top = top_level(width, height)
    stem = os.path.splitext(os.path.basename(file))[0]
    suffix, ext = (f".jpg[Q={quality}]", "jpg") if tiles == "jpeg" else (".png", "png")
    passes = _dzi_passes(shapes, top)
    total = sum((p.x1 - p.x0) * shapes[p.array][0] for p in passes)
    work = tempfile.mkdtemp(prefix=f".{stem}.", dir=os.path.dirname(os.path.abspath(file)))
    try:
        tree = _DziTree(work, stem, zipped)
        with _bar(progress, total, "px", f"export {os.path.basename(file)}") as bar:
            for p in passes:
                _move_band_tiles(_cut_band(canvas, p, work, suffix, bar.update), p, tree, ext)
        tree.finish(descriptor(width, height, ext), os.path.join(work, f"{stem}.dzi"))
        _publish_dzi(tree, work, file, overwrite, tiles)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return top + 1
