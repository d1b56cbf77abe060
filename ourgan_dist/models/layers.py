"""Layers shared by the networks: a convolution that is bit-exact under tiling on CPU, and the
vertical positional convolution (a 3x3 conv that also sees the global y channel)."""

from __future__ import annotations

import contextlib
import contextvars

import torch
import torch.nn.functional as F
from torch import nn


_EXACT_ONLY = contextvars.ContextVar("ourgan_exact_only", default=False)


@contextlib.contextmanager
def exact_only(on: bool = True):
    """Inside, an ``ExactConv2d`` in inference that cannot take its exact path (no oneDNN, or a
    dtype other than float32, or not on CPU) raises instead of silently falling back to the
    ordinary convolution: exact mode refuses to be inexact."""
    token = _EXACT_ONLY.set(on)
    try:
        yield
    finally:
        _EXACT_ONLY.reset(token)


def _use_onednn(x: torch.Tensor, weight: torch.Tensor) -> bool:
    return (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and torch.backends.mkldnn.is_available()
        and not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad))
    )


class ExactConv2d(nn.Conv2d):
    """3x3 (or kxk) zero-padded convolution whose output at a pixel does not depend on how big the
    input window is.

    PyTorch's CPU conv picks its backend by input size (native below 20480 elements per sample,
    oneDNN above), and the two round differently, so a small tile and the whole level could
    disagree in the last bit. In inference on CPU we therefore always call oneDNN directly; its
    per-pixel reduction order is the same for every window size and thread count (checked by
    tests/test_models.py). Training and GPU use the ordinary path; inside ``exact_only()`` (exact
    renders on CPU) an inference call that cannot take the oneDNN path raises instead.
    """

    def __init__(self, cin: int, cout: int, kernel: int = 3):
        super().__init__(cin, cout, kernel, padding=kernel // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, Cin, H, W) -> (B, Cout, H, W)
        if _use_onednn(x, self.weight):
            return torch.ops.aten.mkldnn_convolution(
                x.contiguous(), self.weight, self.bias, list(self.padding), list(self.stride), list(self.dilation), self.groups
            )
        if _EXACT_ONLY.get() and not torch.is_grad_enabled():
            raise RuntimeError(
                f"exact mode: ExactConv2d cannot run its exact (oneDNN, float32, CPU) path here: input {x.dtype} on "
                f"{x.device.type}, oneDNN {'available' if torch.backends.mkldnn.is_available() else 'missing'}; "
                "the ordinary convolution would not be bit-exact under tiling"
            )
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


class YConv(nn.Module):
    """OUR-GAN's vertical positional convolution: the input plus a y channel (-1 at the top of
    the whole image, +1 at its bottom). Only y, never x: a horizontal coordinate would pin
    content to positions and remove diversity.

    The edge pixels (and edge rows of y) are repeated past the image's edge: zero padding is a
    constant mid-grey frame that every layer sees, and generators trained with it draw dark or
    bright bands along the image's sides. The base image is always generated whole, so the
    padding does not touch tiling."""

    def __init__(self, cin: int, cout: int, vertical: bool):
        super().__init__()
        self.vertical = vertical
        self.conv = ExactConv2d(cin + (1 if vertical else 0), cout)
        self.conv.padding = (0, 0)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # x: (B, C, H, W); y: (1, 1, H, 1) global row positions
        if self.vertical:
            x = torch.cat([x, y.to(x.dtype).expand(x.shape[0], 1, x.shape[2], x.shape[3])], dim=1)
        return self.conv(F.pad(x, (1, 1, 1, 1), mode="replicate"))


def leaky(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, 0.2)
