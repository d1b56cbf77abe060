"""The paper's x4 super-resolution network, ESRGAN's RRDBNet (``arch="rrdb"``), and ``build_sr``,
which builds the network a config asks for (this one, or the compact ``SRVGG`` of models/srvgg.py).
Both compute

    out = skip4(x) + net(x + amp * z)      (skip4: none, nearest or bicubic x4 of the input)

body: conv_first -> RRDB blocks (each: RDBs with dense 3x3 convs, residual scale 0.2) ->
conv_body, with a long skip; tail: nearest x2 -> conv -> nearest x2 -> conv -> conv_hr ->
conv_last. Every layer is a zero-padded 3x3 convolution or a pointwise/integer-factor op, so the
receptive field is exact and known. The layers, the region each is computed on and the radius
are described once, without torch, by ``sr_architecture`` (models/sr_architecture.py); the
network builds its convolutions from that description and its windowed forward crops by it
(models/window.py). The bicubic skip (align_corners=False, scale factor exactly 4) reads two
input pixels either side, within the tail's radius.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import SRConfig
from ..planning.geometry import Box
from .layers import ExactConv2d, leaky
from .sr_architecture import Conv, sr_architecture
from .srvgg import SRVGG
from .window import WindowedSR, crop, from_net, to_net


def exact_conv(spec: Conv) -> ExactConv2d:
    return ExactConv2d(spec.cin, spec.cout, spec.kernel)


class RDB(nn.Module):
    """Residual dense block: dense 3x3 convs, each seeing all earlier features, then a fusion conv."""

    def __init__(self, specs: tuple[Conv, ...]):
        super().__init__()
        self.convs = nn.ModuleList(exact_conv(s) for s in specs[:-1])
        self.fuse = exact_conv(specs[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, nf, H, W) -> same
        feats = [x]
        for conv in self.convs:
            feats.append(leaky(conv(torch.cat(feats, dim=1))))
        return x + 0.2 * self.fuse(torch.cat(feats, dim=1))


class SRNet(WindowedSR):
    def __init__(self, cfg: SRConfig):
        super().__init__()
        self.cfg, self.arch = cfg, sr_architecture(cfg)
        n = cfg.blocks * cfg.rdbs_per_block
        self.conv_first = exact_conv(self.arch.conv("conv_first"))
        self.rdbs = nn.ModuleList(RDB(self.arch.group(f"rdbs.{j}")) for j in range(n))
        self.conv_body = exact_conv(self.arch.conv("conv_body"))
        self.up1 = exact_conv(self.arch.conv("up1"))
        self.up2 = exact_conv(self.arch.conv("up2"))
        self.conv_hr = exact_conv(self.arch.conv("conv_hr"))
        self.conv_last = exact_conv(self.arch.conv("conv_last"))
        self.register_buffer("noise_amp", torch.tensor(float(cfg.noise_amp)))

    def forward_window(
        self, x: torch.Tensor, z: torch.Tensor | None, *, window: Box, core: Box, level_size: tuple[int, int]
    ) -> torch.Tensor:
        """x, z: (B, 3, window.height, window.width), the source pixels (and their global noise)
        in ``window`` of a level of ``level_size`` (h, w). Returns (B, 3, 4*core.height,
        4*core.width): the network's output for ``core``, exact if the window holds ``core``
        expanded by the receptive radius (clipped at the level's borders)."""
        H, W = level_size

        def need(after: str) -> Box:  # the region the rest of the network needs once ``after`` ran
            return core.expand(self.arch.reach_after(after)).clip(H, W)

        fea, reg = crop(self.conv_first(to_net(x if z is None else x + self.noise_amp * z)), window, need("conv_first"))
        trunk, treg = fea, reg
        per = self.cfg.rdbs_per_block
        for b in range(self.cfg.blocks):
            block_in, block_reg = trunk, treg
            for j in range(b * per, (b + 1) * per):
                trunk, treg = crop(self.rdbs[j](trunk), treg, need(f"rdbs.{j}.fuse"))
            skip, _ = crop(block_in, block_reg, treg)
            trunk = skip + 0.2 * trunk
        trunk, treg = crop(self.conv_body(trunk), treg, need("conv_body"))
        fea, _ = crop(fea, reg, treg)
        fea = fea + trunk  # (B, nf, h', w') on treg = core + TAIL_REACH px (clipped)
        # tail: nearest x2, conv, nearest x2, conv, conv, conv: TAIL_REACH source pixels either side
        t = leaky(self.up1(F.interpolate(fea, scale_factor=2, mode="nearest")))
        t = leaky(self.up2(F.interpolate(t, scale_factor=2, mode="nearest")))
        t = self.conv_last(leaky(self.conv_hr(t)))  # (B, 3, 4h', 4w') on 4 * treg
        ys, xs = core.relative_to(treg)
        t = t[:, :, slice(4 * ys.start, 4 * ys.stop), slice(4 * xs.start, 4 * xs.stop)]
        skip = self.skip4(x, window, core, level_size)
        return from_net(t if skip is None else skip + t)


def build_sr(cfg: SRConfig) -> WindowedSR:
    """The SR network ``cfg`` describes (untrained)."""
    return SRVGG(cfg) if cfg.arch == "srvgg" else SRNet(cfg)
