"""Noise and positions as functions of *global* pixel coordinates (invariant I3).

Every noise value is a counter-based draw: a hash of (seed, level, stream, channel, y, x). The
value at a pixel is the same whichever tile, window, worker or order asks for it, so tiles agree
on their overlaps and a render is a function of (checkpoint, seed, size) alone. No global RNG.

The hash is SplitMix64's finaliser applied to a key built from the counters; two independent
uniforms per value feed a Box-Muller transform. numpy uint64 arithmetic wraps, as intended.
"""

from __future__ import annotations

import numpy as np

from .geometry import Box

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = 0x9E3779B97F4A7C15
_MASK = (1 << 64) - 1
COORD_BITS = 28  # y and x each below 2**28 (plan.MAX_SIDE)
SEED_LIMIT = 1 << 64  # a stream's key takes the seed's 64 bits: seeds are 0 .. 2**64 - 1, larger ones would alias


def _mix(z: np.ndarray) -> np.ndarray:
    z = z ^ (z >> np.uint64(30))
    z = z * _M1
    z = z ^ (z >> np.uint64(27))
    z = z * _M2
    return z ^ (z >> np.uint64(31))


def _mix_int(v: int) -> int:
    return int(_mix(np.array([v & _MASK], dtype=np.uint64))[0])


def stream_key(seed: int, level: int, stream: int) -> int:
    """A 64-bit key for one noise stream of one level of one render seed (0 <= seed < 2**64)."""
    if not 0 <= seed < SEED_LIMIT:
        raise ValueError(f"seed {seed}: outside 0 .. 2**64 - 1, the seeds the noise tells apart")
    k = _mix_int(seed)
    k = _mix_int(k ^ ((level + 1) * _GOLDEN & _MASK))
    return _mix_int(k ^ ((stream + 1) * 0xD1B54A32D192ED03 & _MASK))


def _uniform(key: int, counters: np.ndarray) -> np.ndarray:
    bits = _mix(counters ^ np.uint64(key))
    bits = _mix(bits + np.uint64(_GOLDEN))
    return (bits >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))  # [0, 1)


def normal(seed: int, level: int, stream: int, channels: int, box: Box) -> np.ndarray:
    """Standard normal noise of shape (channels, box.height, box.width), float32, for the global
    pixels in ``box`` of the given level."""
    if box.y0 < 0 or box.x0 < 0 or box.y1 > (1 << COORD_BITS) or box.x1 > (1 << COORD_BITS):
        raise ValueError(f"noise box {box} outside [0, 2**{COORD_BITS})")
    c = np.arange(channels, dtype=np.uint64)[:, None, None]
    y = np.arange(box.y0, box.y1, dtype=np.uint64)[None, :, None]
    x = np.arange(box.x0, box.x1, dtype=np.uint64)[None, None, :]
    counter = (c << np.uint64(2 * COORD_BITS + 1)) | (y << np.uint64(COORD_BITS + 1)) | (x << np.uint64(1))
    key = stream_key(seed, level, stream)
    u1 = _uniform(key, counter)
    u2 = _uniform(key, counter | np.uint64(1))
    r = np.sqrt(-2.0 * np.log1p(-u1))  # 1 - u1 in (0, 1]
    return (r * np.cos(2.0 * np.pi * u2)).astype(np.float32)


def y_coordinates(y0: int, y1: int, height: int) -> np.ndarray:
    """The vertical position channel for rows [y0, y1) of an image ``height`` rows tall:
    -1 at the top row, +1 at the bottom row of the *whole* image, linear between."""
    rows = np.arange(y0, y1, dtype=np.float64)
    if height <= 1:
        return np.zeros_like(rows, dtype=np.float32)
    return (-1.0 + 2.0 * rows / (height - 1)).astype(np.float32)
