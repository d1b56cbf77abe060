"""A compact x4 super-resolution network (Real-ESRGAN's SRVGGNetCompact layout) with an exact
tiled forward pass.

    f = PReLU(conv_first(x))                       (B, nf, h, w)
    f = PReLU(conv_i(f))   for i in 1..convs       (B, nf, h, w)
    r = pixel_shuffle4(conv_last(f))               (B, 48, h, w) -> (B, 3, 4h, 4w)
    out = r + skip4(x)                             (nearest x4 of the input, as the prior has)

Every conv runs at input resolution, so the receptive radius is ``convs + 2`` input pixels and a
window only has to shrink by one pixel per conv; the pixel shuffle and the nearest skip are
integer-factor and local. About 0.6 M parameters at nf=64, convs=16: ~25x fewer operations per
pixel than the RRDB, which is what makes a 16K render practical on a laptop.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import SRConfig
from ..planning.geometry import Box
from .layers import ExactConv2d
from .sr import WindowedSR, _crop, from_net, skip_window, to_net


class SRVGG(WindowedSR):
    def __init__(self, cfg: SRConfig):
        super().__init__()
        self.cfg = cfg
        nf = cfg.features
        self.convs = nn.ModuleList([ExactConv2d(3, nf)] + [ExactConv2d(nf, nf) for _ in range(cfg.convs)])
        self.acts = nn.ModuleList(nn.PReLU(nf) for _ in range(cfg.convs + 1))
        self.conv_last = ExactConv2d(nf, 3 * 16)
        self.register_buffer("noise_amp", torch.tensor(float(cfg.noise_amp)))

    def forward_window(
        self, x: torch.Tensor, z: torch.Tensor | None, *, window: Box, core: Box, level_size: tuple[int, int]
    ) -> torch.Tensor:
        """x, z: (B, 3, window.h, window.w) at ``window`` of a level of ``level_size`` (h, w).
        Returns (B, 3, 4*core.h, 4*core.w), exact when the window holds ``core`` expanded by the
        receptive radius (clipped at the level's borders)."""
        H, W = level_size
        unit = self.cfg.unit_range
        f = to_net(x if z is None else x + self.noise_amp * z, unit)
        reg, rem = window, len(self.convs) + 1
        for conv, act in zip(self.convs, self.acts):
            f = act(conv(f))
            rem -= 1
            f, reg = _crop(f, reg, core.expand(rem).clip(H, W))  # garbage from a cut edge stays outside
        r = self.conv_last(f)  # (B, 48, h', w') on reg == core
        r, _ = _crop(r, reg, core)
        r = F.pixel_shuffle(r, 4)  # (B, 3, 4*core.h, 4*core.w)
        skip = skip_window(to_net(x, unit), self.cfg.skip, window, core, level_size)
        return from_net(r if skip is None else r + skip, unit)
