"""The exact windowed forward pass that every x4 network shares.

A tile runs the SR network on a window (its source core plus halo) placed at known global
coordinates of a level, and keeps only the x4 output of its core. The networks (models/sr.py,
models/srvgg.py) implement ``forward_window``: after each block they crop to the region the rest
of the network still needs around the core (``SRArchitecture.reach_after``), so zero padding at
a window edge that is not an image edge only ever reaches pixels that are cropped, and the kept
core is bit-identical to running the network on the whole level (invariant I1), while the halo
costs only where it is needed. This module holds what they share: the crop, the pixel range, the
x4 skip, the whole-image forward, and the renderer's entry point ``run_window`` (the level's edge
and the detail stage).

Inside the networks pixels are in [0, 1] (the range the pre-trained priors use); outside, as
everywhere else in ourgan-dist, in [-1, 1].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import SRConfig
from ..planning.geometry import Box
from .sr_architecture import SRArchitecture


def crop(t: torch.Tensor, have: Box, want: Box) -> tuple[torch.Tensor, Box]:
    """Cut ``want`` (intersected with ``have``) out of a tensor covering ``have``."""
    want = Box(max(want.y0, have.y0), min(want.y1, have.y1), max(want.x0, have.x0), min(want.x1, have.x1))
    if want == have:
        return t, have
    ys, xs = want.relative_to(have)
    return t[:, :, ys, xs], want


def to_net(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] pixels -> the network's [0, 1]."""
    return (x + 1) * 0.5


def from_net(y: torch.Tensor) -> torch.Tensor:
    """The network's [0, 1] -> [-1, 1], clamped."""
    return (y * 2 - 1).clamp(-1, 1)


def skip_window(x: torch.Tensor, kind: str, reach: int, window: Box, core: Box, level_size: tuple[int, int]) -> torch.Tensor | None:
    """The x4 skip of ``core``, (B, 3, 4*core.h, 4*core.w), cut from ``x`` covering ``window``.

    nearest reads only the pixel itself. bicubic (align_corners=False, factor exactly 4) reads
    ``reach`` (2) pixels either side and clamps at its own window's edge, which for kept pixels is
    either the image edge (as in the whole-level pass) or at least that far away."""
    if kind == "none":
        return None
    H, W = level_size
    if kind == "nearest":
        cy, cx = core.relative_to(window)
        return F.interpolate(x[:, :, cy, cx], scale_factor=4, mode="nearest")
    sk = core.expand(reach).clip(H, W)
    sy, sx = sk.relative_to(window)
    skip = F.interpolate(x[:, :, sy, sx], scale_factor=4, mode="bicubic", align_corners=False)
    ky, kx = core.relative_to(sk)
    return skip[:, :, slice(4 * ky.start, 4 * ky.stop), slice(4 * kx.start, 4 * kx.stop)]


class WindowedSR(nn.Module):
    """What every x4 network shares: its config and architecture, its exact receptive radius, and
    the whole-image forward as the window that is the whole level (subclasses implement
    ``forward_window``)."""

    cfg: SRConfig
    arch: SRArchitecture

    @property
    def receptive_radius(self) -> int:
        return self.arch.network_radius

    def skip4(self, x: torch.Tensor, window: Box, core: Box, level_size: tuple[int, int]) -> torch.Tensor | None:
        """The config's x4 skip of ``core``, in the network's range."""
        return skip_window(to_net(x), self.cfg.skip, self.arch.skip_reach, window, core, level_size)

    def forward(self, x: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        """Whole-image forward (training and the untiled reference): (B, 3, h, w) -> (B, 3, 4h, 4w)."""
        h, w = x.shape[2], x.shape[3]
        full = Box(0, h, 0, w)
        return self.forward_window(x, z, window=full, core=full, level_size=(h, w))


def sr_window(
    net: WindowedSR, x: torch.Tensor, z: torch.Tensor | None, *, window: Box, core: Box, level_size: tuple[int, int]
) -> torch.Tensor:
    """``net.forward_window`` with the level's edge pixels repeated past it.

    Where the window touches the level's edge, the source (and its noise) is extended by repeating
    its edge pixels, as far as the receptive radius reaches, so no conv's zero padding (black, in
    [0, 1] range) ever reaches a kept pixel: a dark frame around every level would otherwise
    compound level after level. The padded level is handled as a larger virtual level shifted by
    the radius R; the network is translation invariant (its noise comes in as ``z``), so a tile and
    the whole level see the same padded pixels and I1 still holds."""
    H, W = level_size
    r = net.receptive_radius
    pads = (
        r if window.x0 == 0 else 0,
        r if window.x1 == W else 0,  # left, right, top, bottom
        r if window.y0 == 0 else 0,
        r if window.y1 == H else 0,
    )
    if any(pads):
        x = F.pad(x, pads, mode="replicate")
        z = None if z is None else F.pad(z, pads, mode="replicate")
    vwin = Box(window.y0 + r - pads[2], window.y1 + r + pads[3], window.x0 + r - pads[0], window.x1 + r + pads[1])
    vcore = Box(core.y0 + r, core.y1 + r, core.x0 + r, core.x1 + r)
    return net.forward_window(x, z, window=vwin, core=vcore, level_size=(H + 2 * r, W + 2 * r))


def run_window(
    net: WindowedSR,
    x: torch.Tensor,
    z: torch.Tensor | None,
    *,
    window: Box,
    core: Box,
    level_size: tuple[int, int],
    detail=None,
    field=None,
    source_size: tuple[int, int] | None = None,
) -> torch.Tensor:
    """``sr_window`` plus, where ``detail`` (a trained ``DetailLibrary``) is given and the config's
    ``detail`` weight is not 0, the photo's detail patches (models/detail.py); on the first level
    of a patch base, where ``field`` (the base's correspondence on ``window``, coordinates in a
    photo of ``source_size``) is given and the model keeps its photo, the photo's detail read
    where the base was drawn from (models/guided_detail.py). This is what the renderer calls,
    tiled and untiled alike."""
    y = sr_window(net, x, z, window=window, core=core, level_size=level_size)
    if detail is None or not detail.ready or net.cfg.detail <= 0:
        return y
    if field is not None and detail.guided:
        from .guided_detail import MIN_LOW, apply_guided

        low, band, energy = detail.band(4 * level_size[0])
        if min(low.shape[1:]) >= MIN_LOW:  # a smaller level has no room for keys: the library serves it
            return apply_guided(
                y,
                x,
                field,
                low=low,
                band=band,
                energy=energy,
                window=window,
                core=core,
                level_size=level_size,
                source_size=source_size,
                strength=net.cfg.detail,
            )
    return detail.apply(
        y, x, z, window=window, core=core, level_size=level_size, strength=net.cfg.detail, choices=net.cfg.detail_choices
    )
