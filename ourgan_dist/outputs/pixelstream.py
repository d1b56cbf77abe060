"""Reading a render store in bounded pieces, for exports.

Two readers, both holding a bounded amount of pixels whatever the canvas size:

- ``tiles``: the tiles of one OME-Zarr array in row-major order, ``(h, w, 3)`` each, read a few
  ahead on a small thread pool (an ``s3://`` store answers many small reads at once).
- ``PngStream``: the array as the byte stream of an uncompressed PNG, produced band by band as
  a reader asks for bytes. libvips loads such a stream sequentially (``pngload_source``), so a
  pyvips pipeline can pull the image through without the whole of it ever being in memory. A
  band is as many rows as fit a byte budget: for very wide images fewer rows than a chunk, which
  decodes a chunk more than once but keeps memory flat.
"""

from __future__ import annotations

import struct
import zlib
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterator

import numpy as np

from ..store.canvas import Canvas
from ..planning.geometry import Box

BAND_BYTES = 8 << 20  # pixels of one PNG band (uncompressed)
READ_AHEAD = 8  # tiles in flight while writing
READ_THREADS = 4


def tile_boxes(height: int, width: int, tile: int) -> list[Box]:
    """Row-major tile boxes of a (height, width) array; edge tiles are cut at the edge."""
    return [Box(y, min(y + tile, height), x, min(x + tile, width)) for y in range(0, height, tile) for x in range(0, width, tile)]


def tiles(canvas: Canvas, name: str, tile: int, on_tile: Callable[[], None] | None = None) -> Iterator[np.ndarray]:
    """(h, w, 3) uint8 tiles of array ``name`` in row-major order, at most ``READ_AHEAD`` ahead."""
    _, height, width = canvas.array(name).shape
    boxes = deque(tile_boxes(height, width, tile))

    def read(box: Box) -> np.ndarray:
        return np.ascontiguousarray(canvas.read(name, box).transpose(1, 2, 0))  # (3,h,w) -> (h,w,3)

    with ThreadPoolExecutor(READ_THREADS, thread_name_prefix="export-read") as pool:
        pending: deque = deque()
        while boxes or pending:
            while boxes and len(pending) < READ_AHEAD:
                pending.append(pool.submit(read, boxes.popleft()))
            out = pending.popleft().result()
            if on_tile:
                on_tile()
            yield out


def _png_chunk(tag: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + tag + payload + struct.pack(">I", zlib.crc32(payload, zlib.crc32(tag)))


class PngStream:
    """The store's array ``name`` (or its ``columns`` x0..x1) as the bytes of an RGB PNG (stored
    deflate blocks, filter 0), generated on demand by ``read``. Feed it to ``pyvips.SourceCustom``."""

    def __init__(
        self,
        canvas: Canvas,
        name: str = "0",
        on_rows: Callable[[int], None] | None = None,
        band_bytes: int = BAND_BYTES,
        columns: tuple[int, int] | None = None,
    ):
        _, self.height, width = canvas.array(name).shape
        self.x0, self.x1 = columns if columns is not None else (0, width)
        if not 0 <= self.x0 < self.x1 <= width:
            raise ValueError(f"columns {columns} outside array {name!r} of width {width}")
        self.width = self.x1 - self.x0
        chunk_rows = canvas.array(name).chunks[1]
        self.band = max(1, min(chunk_rows, band_bytes // (3 * self.width + 1)))
        self._canvas, self._name, self._on_rows = canvas, name, on_rows
        self._parts = self._generate()
        self._pending = memoryview(b"")

    def _generate(self) -> Iterator[bytes]:
        ihdr = struct.pack(">IIBBBBB", self.width, self.height, 8, 2, 0, 0, 0)  # 8 bit RGB, no interlace
        yield b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)
        z = zlib.compressobj(0)  # stored blocks: the bytes only travel to libvips in this process
        for y in range(0, self.height, self.band):
            rows = min(self.band, self.height - y)
            px = self._canvas.read(self._name, Box(y, y + rows, self.x0, self.x1))  # (3, rows, w)
            lines = np.zeros((rows, 1 + 3 * self.width), np.uint8)  # a filter byte (0) per row
            lines[:, 1:].reshape(rows, self.width, 3)[...] = px.transpose(1, 2, 0)
            del px
            data = z.compress(lines.data)
            del lines
            if data:
                yield _png_chunk(b"IDAT", data)
            if self._on_rows:
                self._on_rows(rows)
        yield _png_chunk(b"IDAT", z.flush()) + _png_chunk(b"IEND", b"")

    def read(self, size: int) -> bytes:
        """Up to ``size`` next bytes of the PNG; b"" at the end."""
        while not len(self._pending):
            part = next(self._parts, None)
            if part is None:
                return b""
            self._pending = memoryview(part)
        out = self._pending[:size]
        self._pending = self._pending[len(out) :]
        return bytes(out)
