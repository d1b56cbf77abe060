"""Pixel arithmetic of the store's arrays: generation floats to the result's uint8, and the 2x2
mean that makes each viewing-pyramid array from the one before. Pure numpy, deterministic."""

from __future__ import annotations

import numpy as np


def to_uint8(x: np.ndarray) -> np.ndarray:
    """[-1, 1] float -> uint8, round half up, deterministic."""
    return np.clip(np.floor((x.astype(np.float32) + 1.0) * 127.5 + 0.5), 0, 255).astype(np.uint8)


def downsample2(block: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """2x2 mean (rounded) of a uint8 (3, h, w) block, edge pixels repeated for odd sizes."""
    _, h, w = block.shape
    ph, pw = 2 * out_h - h, 2 * out_w - w
    if ph or pw:
        block = np.pad(block, ((0, 0), (0, ph), (0, pw)), mode="edge")
    b = block.astype(np.uint16).reshape(3, out_h, 2, out_w, 2)
    return ((b.sum(axis=(2, 4)) + 2) // 4).astype(np.uint8)
