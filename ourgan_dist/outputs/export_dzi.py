"""The Deep Zoom writer of ``export``: a ``.dzi`` file and its ``_files`` tree, or both in a zip.

The tree's levels are the store's own pyramid; libvips' dzsave cuts and encodes the tiles, band by
band (``DZI_BAND_TILES`` tile columns of an array at a time), so its strip buffers do not grow with
the image. The tiles are cut in a private folder beside the target and moved into place when all
are written. The geometry is ``deepzoom``'s, shared with the viewer.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass

from ..errors import UserError
from ..store.canvas import Canvas
from .deepzoom import OVERLAP as DZI_OVERLAP
from .deepzoom import TILE as DZI_TILE
from .deepzoom import descriptor, top_level
from .export_shared import check_target, export_bar, publish_file, vips_image

DZI_BAND_TILES = 16  # tile columns per dzsave pass (~4K px): bounds its strip buffers


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
    image, source, stream = vips_image(canvas, lambda rows: on_px(rows * (p.x1 - p.x0)), str(p.array), (p.x0, p.x1))
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
        publish_file(os.path.join(work, f"{tree.stem}.zip"), target, overwrite)
        return
    old_tree = os.path.join(os.path.dirname(target), f"{tree.stem}_files")
    if os.path.lexists(old_tree):
        check_target(file, overwrite, tiles)
        shutil.rmtree(old_tree)
    if not overwrite and os.path.lexists(target):  # refused before its tree moves
        raise UserError(f"export to {file!r}: the file appeared while the export ran")
    os.replace(tree.root, old_tree)
    publish_file(os.path.join(work, f"{tree.stem}.dzi"), target, overwrite)


def write_dzi(canvas: Canvas, file: str, tiles: str, quality: int, progress: bool, zipped: bool, overwrite: bool = False) -> int:
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
    kept = False
    try:
        tree = _DziTree(work, stem, zipped)
        with export_bar(progress, total, "px", f"export {os.path.basename(file)}") as bar:
            for p in passes:
                _move_band_tiles(_cut_band(canvas, p, work, suffix, bar.update), p, tree, ext)
        tree.finish(descriptor(width, height, ext), os.path.join(work, f"{stem}.dzi"))
        try:
            _publish_dzi(tree, work, file, overwrite, tiles)
        except UserError as e:  # the target appeared meanwhile: the finished export is not thrown away
            kept = True
            raise UserError(f"{e} (the finished export is kept in {work!r})") from None
    finally:
        if not kept:
            shutil.rmtree(work, ignore_errors=True)
    return top + 1
