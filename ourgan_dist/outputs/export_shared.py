"""What every export shares, and the checks made before one writes anything.

The format a file name asks for (``export_format``) and its compression
(``resolve_compression``); ``check_target``, which refuses a target the export may not write
(called before any work, and again before a Deep Zoom tree replaces an old one); the names of a
Deep Zoom export's tree (``dzi_files``, ``dzi_tile_ext``, ``foreign_in_dzi_tree``); the progress
bar of the writers; and an array of the store as a sequential libvips image (``vips_image``).
"""

from __future__ import annotations

import os
import re
import sys

from ..errors import UserError
from ..store.canvas import Canvas

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


def publish_file(tmp: str, file: str, overwrite: bool) -> None:
    """Move the finished export ``tmp`` to ``file``. Without ``overwrite`` this never replaces a
    file, not even one that appeared while the export ran (after ``check_target``): the name is
    taken by a hard link, which fails if it exists; ``tmp`` is then kept, and the error names it.
    Where the file system has no hard links, the name is checked again just before the rename."""
    if not overwrite:
        appeared = UserError(
            f"export to {file!r}: the file appeared while the export ran; the finished export is kept "
            f"as {tmp!r} (rename it, or export again with --overwrite)"
        )
        try:
            os.link(tmp, file)
        except FileExistsError:
            raise appeared from None
        except OSError:  # no hard links here (a FAT or network file system): the next best check
            if os.path.lexists(file):
                raise appeared from None
        else:
            os.remove(tmp)
            return
    os.replace(tmp, file)


def export_bar(progress: bool, total: int, unit: str, desc: str):
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


def vips_image(canvas: Canvas, on_rows, name: str = "0", columns: tuple[int, int] | None = None):
    """Array ``name`` of the store (or its ``columns`` x0..x1) as a sequential pyvips image,
    pulled from the store as libvips reads; ``on_rows(n)`` after each band of n rows."""
    import pyvips

    from .pixelstream import PngStream

    stream = PngStream(canvas, name, on_rows=on_rows, columns=columns)
    source = pyvips.SourceCustom()
    source.on_read(stream.read)
    image = pyvips.Image.new_from_source(source, "", access="sequential")
    return image, source, stream  # callers keep the source and stream alive while libvips reads
