"""The x4 super-resolution networks and their exact tiled forward pass.

``SRNet`` is ESRGAN's RRDBNet (the paper's SR network; ``arch="rrdb"``), ``SRVGG`` a compact plain
conv net (``arch="srvgg"``, models/srvgg.py). Both compute

    out = skip4(x) + net(x + amp * z)      (skip4: none, nearest or bicubic x4 of the input)

with pixels in [0, 1] inside the network when ``unit_range`` (the range pre-trained priors use)
and in [-1, 1] outside, as everywhere else in ourgan-dist.

body: conv_first -> RRDB blocks (each: RDBs with dense 3x3 convs, residual scale 0.2) ->
conv_body, with a long skip; tail: nearest x2 -> conv -> nearest x2 -> conv -> conv_hr ->
conv_last. Every layer is a zero-padded 3x3 convolution or a pointwise/integer-factor op, so
the receptive field is exact and known: ``SRConfig.receptive_radius`` input pixels. The skip is a
fixed x4 bicubic upsampling (align_corners=False, scale factor exactly 4): it reads two input
pixels either side, within the tail's radius, and clamps only at the window's edge, which for kept
pixels is either the image edge (as in the whole-level pass) or at least two pixels away.

``forward_window`` runs the network on a window (a tile's source core plus halo) placed at known
global coordinates and crops as it goes: after each block it keeps only the pixels the rest of
the network still needs around the core (zero padding at a window edge that is not an image
edge only ever reaches pixels that are cropped). The kept core is then bit-identical to running
the network on the whole level (invariant I1), while the halo costs only where it is needed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import SRConfig
from ..planning.geometry import Box
from .layers import ExactConv2d, leaky


class RDB(nn.Module):
    """Residual dense block: ``dense`` 3x3 convs, each seeing all earlier features."""

    def __init__(self, nf: int, gc: int, dense: int):
        super().__init__()
        self.convs = nn.ModuleList(ExactConv2d(nf + i * gc, gc) for i in range(dense - 1))
        self.fuse = ExactConv2d(nf + (dense - 1) * gc, nf)

    @property
    def receptive_radius(self) -> int:
        return len(self.convs) + 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, nf, H, W) -> same
        feats = [x]
        for conv in self.convs:
            feats.append(leaky(conv(torch.cat(feats, dim=1))))
        return x + 0.2 * self.fuse(torch.cat(feats, dim=1))


def _crop(t: torch.Tensor, have: Box, want: Box) -> tuple[torch.Tensor, Box]:
    """Cut ``want`` (intersected with ``have``) out of a tensor covering ``have``."""
    want = Box(max(want.y0, have.y0), min(want.y1, have.y1), max(want.x0, have.x0), min(want.x1, have.x1))
    if want == have:
        return t, have
    ys, xs = want.relative_to(have)
    return t[:, :, ys, xs], want


def to_net(x: torch.Tensor, unit: bool) -> torch.Tensor:
    """[-1, 1] pixels -> the network's range."""
    return (x + 1) * 0.5 if unit else x


def from_net(y: torch.Tensor, unit: bool) -> torch.Tensor:
    """The network's range -> [-1, 1], clamped."""
    return (y * 2 - 1).clamp(-1, 1) if unit else y.clamp(-1, 1)


def skip_window(x: torch.Tensor, kind: str, window: Box, core: Box, level_size: tuple[int, int]) -> torch.Tensor | None:
    """The x4 skip of ``core``, (B, 3, 4*core.h, 4*core.w), cut from ``x`` covering ``window``.

    nearest reads only the pixel itself. bicubic (align_corners=False, factor exactly 4) reads two
    pixels either side and clamps at its own window's edge, which for kept pixels is either the
    image edge (as in the whole-level pass) or at least two pixels away."""
    if kind == "none":
        return None
    H, W = level_size
    if kind == "nearest":
        cy, cx = core.relative_to(window)
        return F.interpolate(x[:, :, cy, cx], scale_factor=4, mode="nearest")
    sk = core.expand(2).clip(H, W)
    sy, sx = sk.relative_to(window)
    skip = F.interpolate(x[:, :, sy, sx], scale_factor=4, mode="bicubic", align_corners=False)
    ky, kx = core.relative_to(sk)
    return skip[:, :, slice(4 * ky.start, 4 * ky.stop), slice(4 * kx.start, 4 * kx.stop)]


class WindowedSR(nn.Module):
    """What every x4 network shares: a config, an exact receptive radius, and the whole-image
    forward as the window that is the whole level (subclasses implement ``forward_window``)."""

    cfg: SRConfig

    @property
    def receptive_radius(self) -> int:
        return self.cfg.network_radius

    def forward(self, x: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        """Whole-image forward (training and the untiled reference): (B, 3, h, w) -> (B, 3, 4h, 4w)."""
        h, w = x.shape[2], x.shape[3]
        full = Box(0, h, 0, w)
        return self.forward_window(x, z, window=full, core=full, level_size=(h, w))


class SRNet(WindowedSR):
    def __init__(self, cfg: SRConfig):
        super().__init__()
        self.cfg = cfg
        nf, gc = cfg.features, cfg.growth
        self.conv_first = ExactConv2d(3, nf)
        self.rdbs = nn.ModuleList(RDB(nf, gc, cfg.dense_convs) for _ in range(cfg.blocks * cfg.rdbs_per_block))
        self.conv_body = ExactConv2d(nf, nf)
        self.up1 = ExactConv2d(nf, nf)
        self.up2 = ExactConv2d(nf, nf)
        self.conv_hr = ExactConv2d(nf, nf)
        self.conv_last = ExactConv2d(nf, 3)
        self.register_buffer("noise_amp", torch.tensor(float(cfg.noise_amp)))

    def forward_window(
        self, x: torch.Tensor, z: torch.Tensor | None, *, window: Box, core: Box, level_size: tuple[int, int]
    ) -> torch.Tensor:
        """x, z: (B, 3, window.height, window.width), the source pixels (and their global noise)
        in ``window`` of a level of ``level_size`` (h, w). Returns (B, 3, 4*core.height,
        4*core.width): the network's output for ``core``, exact if the window holds ``core``
        expanded by the receptive radius (clipped at the level's borders)."""
        H, W = level_size
        rem = self.receptive_radius  # radius still ahead of the current point

        def need(r: int) -> Box:
            return core.expand(r).clip(H, W)

        unit = self.cfg.unit_range
        inp = to_net(x if z is None else x + self.noise_amp * z, unit)
        fea = self.conv_first(inp)
        rem -= 1
        fea, reg = _crop(fea, window, need(rem))
        trunk, treg = fea, reg
        per = self.cfg.rdbs_per_block
        for b in range(self.cfg.blocks):
            block_in, block_reg = trunk, treg
            for rdb in self.rdbs[b * per : (b + 1) * per]:
                trunk = rdb(trunk)
                rem -= rdb.receptive_radius
                trunk, treg = _crop(trunk, treg, need(rem))
            skip, _ = _crop(block_in, block_reg, treg)
            trunk = skip + 0.2 * trunk
        trunk = self.conv_body(trunk)
        rem -= 1
        trunk, treg = _crop(trunk, treg, need(rem))
        fea, _ = _crop(fea, reg, treg)
        fea = fea + trunk  # (B, nf, h', w') on treg = core + 2 px (clipped)
        # tail: nearest x2, conv, nearest x2, conv, conv, conv: two source pixels either side
        t = leaky(self.up1(F.interpolate(fea, scale_factor=2, mode="nearest")))
        t = leaky(self.up2(F.interpolate(t, scale_factor=2, mode="nearest")))
        t = self.conv_last(leaky(self.conv_hr(t)))  # (B, 3, 4h', 4w') on 4 * treg
        ys, xs = core.relative_to(treg)
        t = t[:, :, slice(4 * ys.start, 4 * ys.stop), slice(4 * xs.start, 4 * xs.stop)]
        skip = skip_window(to_net(x, unit), self.cfg.skip, window, core, level_size)
        return from_net(t if skip is None else skip + t, unit)


def run_window(
    net: nn.Module, x: torch.Tensor, z: torch.Tensor | None, *, window: Box, core: Box, level_size: tuple[int, int], detail=None
) -> torch.Tensor:
    """``sr_window`` plus, where ``detail`` (a trained ``DetailLibrary``) is given and the config's
    ``detail`` weight is not 0, the photo's detail patches (models/detail.py). This is what the
    renderer calls, tiled and untiled alike."""
    y = sr_window(net, x, z, window=window, core=core, level_size=level_size)
    if detail is None or not detail.ready or net.cfg.detail <= 0:
        return y
    return detail.apply(
        y, x, z, window=window, core=core, level_size=level_size, strength=net.cfg.detail, choices=net.cfg.detail_choices
    )


def sr_window(
    net: nn.Module, x: torch.Tensor, z: torch.Tensor | None, *, window: Box, core: Box, level_size: tuple[int, int]
) -> torch.Tensor:
    """``net.forward_window`` with the level's edge handled as ``net.cfg.edge`` says.

    "replicate": where the window touches the level's edge, the source (and its noise) is
    extended by repeating its edge pixels, as far as the receptive radius reaches, so no conv's
    zero padding (black, in [0, 1] range) ever reaches a kept pixel: a dark frame around every
    level would otherwise compound level after level. The padded level is handled as a larger
    virtual level shifted by the radius R; the network is translation invariant (its noise comes
    in as ``z``), so a tile and the whole level see the same padded pixels and I1 still holds."""
    if net.cfg.edge == "zeros":
        return net.forward_window(x, z, window=window, core=core, level_size=level_size)
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


def build_sr(cfg: SRConfig) -> nn.Module:
    """The SR network ``cfg`` describes (untrained)."""
    if cfg.arch == "srvgg":
        from .srvgg import SRVGG

        return SRVGG(cfg)
    return SRNet(cfg)
