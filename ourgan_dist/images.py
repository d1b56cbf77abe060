"""Reading the user's photograph with pyvips: any format libvips reads (JPEG, PNG, TIFF, WebP,
...), 8 or 16 bit, grayscale, alpha, CMYK, EXIF orientation. Large photos are shrunk on load
(``thumbnail``) rather than decoded whole. Problems become one-line ``UserError``s."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import numpy as np

from .errors import UserError

MIN_SIDE = 16  # smaller photos cannot feed even the tiny preset
# Photos above this many pixels are refused before any decoding (OURGAN_MAX_PHOTO_PIXELS raises
# it): a file's header can claim any size, and a damaged photo's check decodes it whole.
MAX_PHOTO_PIXELS = 300_000_000
MAX_PHOTO_PIXELS_ENV = "OURGAN_MAX_PHOTO_PIXELS"


@dataclass(frozen=True)
class PhotoInfo:
    path: str
    width: int  # after EXIF orientation
    height: int
    bands: int
    format: str
    sha256: str


def _pyvips():
    import pyvips

    return pyvips


def _check_path(path: str) -> None:
    if not os.path.exists(path):
        raise UserError(f"photo {path!r}: no such file; give the path of a JPEG/PNG/TIFF/WebP photograph")
    if os.path.isdir(path):
        raise UserError(f"photo {path!r}: is a directory; give the path of an image file")
    if not os.access(path, os.R_OK):
        raise UserError(f"photo {path!r}: not readable (permission denied)")


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _open(path: str, **kw):
    pyvips = _pyvips()
    _check_path(path)
    try:
        return pyvips.Image.new_from_file(path, **kw)
    except pyvips.Error as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else "unknown format"
        raise UserError(f"photo {path!r}: not a readable image ({first[:120]}); use a JPEG, PNG, TIFF or WebP file") from None


def max_photo_pixels() -> int:
    """The largest photo accepted, in pixels: ``OURGAN_MAX_PHOTO_PIXELS`` or 300 megapixels."""
    text = os.environ.get(MAX_PHOTO_PIXELS_ENV, "").strip()
    if not text:
        return MAX_PHOTO_PIXELS
    try:
        n = int(text)
    except ValueError:
        try:
            f = float(text)  # 6e8
            n = int(f) if f.is_integer() else 0
        except (ValueError, OverflowError):
            n = 0
    if n <= 0:
        raise UserError(
            f"{MAX_PHOTO_PIXELS_ENV}={text!r}: expected a whole number of pixels > 0, e.g. {MAX_PHOTO_PIXELS_ENV}=600000000"
        )
    return n


def _oriented(im) -> tuple[int, int]:
    """(width, height) as the photo is seen: after its EXIF orientation."""
    try:
        orientation = im.get("orientation") if im.get_typeof("orientation") else 1
    except Exception:
        orientation = 1
    return (im.height, im.width) if orientation in (5, 6, 7, 8) else (im.width, im.height)


def photo_size(path: str) -> tuple[int, int]:
    """(width, height) after EXIF orientation, from the header alone (no decoding, no hashing)."""
    return _oriented(_open(path))


def probe(path: str) -> PhotoInfo:
    """Size (after EXIF orientation) and format without decoding pixels. A photo whose header
    declares more than ``max_photo_pixels()`` pixels is refused here, before anything decodes it."""
    im = _open(path)
    w, h = im.width, im.height
    limit = max_photo_pixels()
    if w * h > limit:
        raise UserError(
            f"photo {path!r}: {w}x{h} is {w * h / 1e6:.0f} megapixels, over the limit of "
            f"{limit / 1e6:.0f} megapixels; shrink it, or raise the limit with "
            f"{MAX_PHOTO_PIXELS_ENV}={w * h} if it really is that large"
        )
    w, h = _oriented(im)
    if min(w, h) < MIN_SIDE:
        raise UserError(
            f"photo {path!r}: {w}x{h} is too small; a training photo needs at least {MIN_SIDE} px "
            "on each side (and far more to learn anything)"
        )
    return PhotoInfo(path, w, h, im.bands, im.format, file_sha256(path))


def _vips_reason(e: Exception, default: str) -> str:
    """The line of a pyvips error that says what is wrong (not 'unable to call ...')."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    useful = [ln for ln in lines if not ln.startswith("unable to call")]
    return (useful or lines or [default])[-1][:160]


def find_damage(path: str) -> str | None:
    """Decode the whole photo (streaming, in constant memory) and return why it is damaged
    (truncated, corrupt data), or None if it decodes cleanly. A damaged JPEG or PNG otherwise
    decodes "successfully" with its missing part filled in grey, and a model would learn that.
    A decoder's warning counts as damage too: libjpeg reports scrambled data ("Corrupt JPEG
    data: premature end of data segment") only as a warning, and decodes garbage."""
    pyvips = _pyvips()
    _check_path(path)
    try:
        pyvips.Image.new_from_file(path, access="sequential", fail_on="warning").avg()
    except pyvips.Error as e:
        return _vips_reason(e, "decode failed")
    return None


def write_decodable_copy(path: str, dest: str) -> str:
    """What can be decoded of a damaged photo, EXIF-rotated, as a lossless TIFF at ``dest`` (the
    missing part is whatever the decoder fills in): lets training read it like an intact photo."""
    pyvips = _pyvips()
    try:
        im = _open(path, access="sequential", fail_on="none").autorot()
        im.tiffsave(dest, compression="deflate", bigtiff=True)
    except pyvips.Error as e:
        raise UserError(f"photo {path!r}: not even part of it can be decoded ({_vips_reason(e, 'decode failed')})") from None
    return dest


def _to_srgb8(im):
    """Any interpretation/bit depth/alpha -> 3-band 8-bit sRGB (alpha flattened on white)."""
    pyvips = _pyvips()
    if im.interpretation == "cmyk" or im.bands == 4 and im.interpretation == "cmyk":
        im = im.icc_transform("srgb") if im.get_typeof("icc-profile-data") else im.colourspace("srgb")
    if im.hasalpha():
        im = im.flatten(
            background=[255] * (im.bands - 1)
            if im.format == "uchar"
            else [65535] * (im.bands - 1)
            if im.format == "ushort"
            else [1.0] * (im.bands - 1)
        )
    if im.interpretation not in ("srgb", "b-w") or im.format not in ("uchar",):
        try:
            im = im.colourspace("srgb")
        except pyvips.Error:
            pass
    if im.format != "uchar":
        im = (
            im.cast("uchar")
            if im.format in ("char", "short", "int")
            else ((im / 257).cast("uchar") if im.format == "ushort" else im.cast("uchar"))
        )
    if im.bands == 1:
        im = im.bandjoin([im, im])
    elif im.bands == 2:  # gray + alpha left over
        im = im[0].bandjoin([im[0], im[0]])
    elif im.bands > 3:
        im = im[0:3]
    return im


def load_rgb(path: str, max_width: int | None = None, max_height: int | None = None) -> np.ndarray:
    """The photo as float32 (3, H, W) in [-1, 1], EXIF-rotated, optionally shrunk to fit
    ``max_width`` x ``max_height`` (shrink-on-load: a 20000 px JPEG is never decoded whole)."""
    pyvips = _pyvips()
    info = probe(path)
    try:
        if max_width or max_height:
            tw = min(max_width or info.width, info.width)
            th = min(max_height or info.height, info.height)
            im = pyvips.Image.thumbnail(path, tw, height=th, size="down", fail_on="truncated")
        else:
            im = _open(path, access="sequential", fail_on="truncated").autorot()
        im = _to_srgb8(im)
        arr = np.ndarray(buffer=im.write_to_memory(), dtype=np.uint8, shape=(im.height, im.width, im.bands))
    except pyvips.Error as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else "decode failed"
        raise UserError(f"photo {path!r}: could not be decoded ({first[:120]}); is the file truncated?") from None
    return (arr.transpose(2, 0, 1).astype(np.float32) / 127.5 - 1.0).copy()


# ---- resampling: the one bicubic filter that training, evaluation and the SR degradation share ----
# Tensors (B, 3, H, W) in [-1, 1]; torch is imported by the callers that have tensors, not here.


def resize(img, height: int, width: int):
    """``img`` (B, 3, H, W) resized to ``height`` x ``width`` by antialiased bicubic, clamped to
    [-1, 1]: the photo at a smaller scale (a base scale, an SR level)."""
    import torch.nn.functional as F

    return F.interpolate(img, size=(height, width), mode="bicubic", align_corners=False, antialias=True).clamp(-1, 1)


def pyramid(img, sizes: list[tuple[int, int]]) -> list:
    """``img`` resized (``resize``) to every (height, width) of ``sizes``, in their order."""
    return [resize(img, h, w) for h, w in sizes]


def downsample4(img):
    """Bicubic 1/4 (antialiased), clamped: the degradation the SR network learns to invert."""
    import torch.nn.functional as F

    return F.interpolate(img, scale_factor=0.25, mode="bicubic", align_corners=False, antialias=True).clamp(-1, 1)


def upsample4(img):
    """Plain bicubic x4, clamped: the baseline the SR network has to beat."""
    import torch.nn.functional as F

    return F.interpolate(img, scale_factor=4, mode="bicubic", align_corners=False).clamp(-1, 1)
