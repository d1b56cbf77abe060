"""A compact x4 super-resolution network (Real-ESRGAN's SRVGGNetCompact layout) with an exact
tiled forward pass.

    f = PReLU(conv_first(x))                       (B, nf, h, w)
    f = PReLU(conv_i(f))   for i in 1..convs       (B, nf, h, w)
    r = pixel_shuffle4(conv_last(f))               (B, 48, h, w) -> (B, 3, 4h, 4w)
    out = r + skip4(x)                             (nearest x4 of the input, as the prior has)

Every conv runs at input resolution, so the receptive radius is ``convs + 2`` input pixels and a
window only has to shrink by one pixel per conv; the pixel shuffle and the nearest skip are
integer-factor and local. The layers and the region each is computed on come from
``sr_architecture`` (models/sr_architecture.py), the shared windowed forward from
models/window.py. About 0.6 M parameters at nf=64, convs=16: ~25x fewer operations per pixel
than the RRDB, which is what makes a 16K render practical on a laptop.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import SRConfig
from ..planning.geometry import Box
from .layers import ExactConv2d
from .sr_architecture import sr_architecture
from .window import WindowedSR, crop, from_net, to_net


class SRVGG(WindowedSR):
    def __init__(self, cfg: SRConfig):
        super().__init__()
        self.cfg, self.arch = cfg, sr_architecture(cfg)
        *body, last = self.arch.convs
        self.convs = nn.ModuleList(ExactConv2d(c.cin, c.cout, c.kernel) for c in body)
        self.acts = nn.ModuleList(nn.PReLU(c.cout) for c in body)
        self.conv_last = ExactConv2d(last.cin, last.cout, last.kernel)
        self.register_buffer("noise_amp", torch.tensor(float(cfg.noise_amp)))

    def forward_window(
        self, x: torch.Tensor, z: torch.Tensor | None, *, window: Box, core: Box, level_size: tuple[int, int]
    ) -> torch.Tensor:
        """x, z: (B, 3, window.h, window.w) at ``window`` of a level of ``level_size`` (h, w).
        Returns (B, 3, 4*core.h, 4*core.w), exact when the window holds ``core`` expanded by the
        receptive radius (clipped at the level's borders)."""
        H, W = level_size
        f, reg = to_net(x if z is None else x + self.noise_amp * z), window
        for conv, act, spec in zip(self.convs, self.acts, self.arch.convs):
            # garbage from a cut edge stays outside what is kept
            f, reg = crop(act(conv(f)), reg, core.expand(self.arch.reach_after(spec.name)).clip(H, W))
        r, _ = crop(self.conv_last(f), reg, core)  # computed on core + 1, kept: (B, 48, core.h, core.w)
        r = F.pixel_shuffle(r, 4)  # (B, 3, 4*core.h, 4*core.w)
        skip = self.skip4(x, window, core, level_size)
        return from_net(r if skip is None else r + skip)
