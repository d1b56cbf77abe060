"""Detail from the photo: the finest band an SR level adds, copied from the photo's own patches.

An SR network fine-tuned with an L1 loss predicts the mean of what a low-resolution patch could
become, so its output is smooth at 1:1: grass, gravel and rock come out as soft gradients. This
stage adds texture the way example-based super-resolution does. At training time the photo,
shrunk to a few scales an octave apart, is cut into a library of pairs:

    key    = 4x4 pixels of the photo shrunk x4 (what an SR level reads), uint8, 48 values
    patch  = 8x8 pixels of the photo's detail band at that place: the photo minus its bicubic
             x4 round trip, each channel's mean removed, int8 in 1/255 steps

At render time every source pixel j of an SR level (one 4x4 output footprint) looks up the
library's ``choices`` nearest keys to the 4x4 source pixels around it, picks one of them with its
own global noise value, and adds that patch, weighted by a separable sin^2 window, to the 8x8
output pixels centred on its footprint. Neighbouring blocks overlap by half and their windows sum
to one.

Exact tiling: the keys are integers below 256, so distance x library size + index (< 2^35) is
an exact integer in float64 whatever the summation order: equal distances go to the lower index; the choice comes from the
counter-based noise of the source pixel; and the window is in integer 64ths, so every output
pixel's four weighted patches sum exactly in int32, in any order. A block reads source pixels up
to 3 away from the core it writes into (guided detail up to ``DETAIL_REACH`` in
models/sr_architecture.py), so the SR halo must be at least that: the architecture's receptive
radius includes that reach.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..planning.geometry import Box
from .blocks import BLOCK, KEY, add_blocks, added, block_weight, replicated, to_levels
from .guided_detail import decode_photo, encode_photo, key_energy, photo_band

SCALES = 4  # library scales: 1, 1/2, 1/4, 1/8 of the photo's width
MIN_WIDTH = 64  # a scale whose photo would be narrower than this is left out
_CHUNK = 4096  # blocks per distance matrix (4096 x patches float64: 128 MiB at 4096 patches)
_BAND = 64  # rows of blocks handled at a time


class DetailLibrary(nn.Module):
    """Key/patch pairs at ``SCALES`` scales of the photo; empty (and inactive) until ``build``."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("keys", torch.zeros(0, dtype=torch.uint8))  # (S, N, 48)
        self.register_buffer("patches", torch.zeros(0, dtype=torch.int8))  # (S, N, 3, 8, 8)
        self.register_buffer("scales", torch.zeros(0))  # (S,) output width / photo width
        self.register_buffer("photo_width", torch.zeros((), dtype=torch.int64))
        self.register_buffer("guide", torch.zeros(0, dtype=torch.uint8))  # the photo as a JPEG (guided_detail.py)
        self._bands: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        if prefix + "guide" not in state_dict:  # a model trained before guided detail: it has no photo kept
            state_dict[prefix + "guide"] = torch.zeros(0, dtype=torch.uint8)
        for name in ("keys", "patches", "scales", "guide"):  # a stored library sets the shapes
            key = prefix + name
            if key in state_dict and state_dict[key].shape != getattr(self, name).shape:
                setattr(self, name, torch.zeros_like(state_dict[key], device=getattr(self, name).device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @property
    def ready(self) -> bool:
        return self.keys.dim() == 3 and self.keys.shape[1] > 0

    @property
    def guided(self) -> bool:
        """Whether the photo is kept for the first level's guided detail (models trained before it have none)."""
        return self.guide.numel() > 0

    def band(self, out_height: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``guided_detail.photo_band`` of the kept photo at a level ``out_height`` rows tall, and its
        keys' ``key_energy`` (cached)."""
        if out_height not in self._bands:
            low, band = photo_band(decode_photo(self.guide), out_height)
            self._bands = {out_height: (low, band, key_energy(low))}  # one level at a time
        return self._bands[out_height]

    @torch.no_grad()
    def build(self, photo: torch.Tensor, patches: int, seed: int) -> None:
        """Cut the library from ``photo`` (1, 3, H, W) in [-1, 1], at full resolution."""
        gen = torch.Generator().manual_seed(seed)
        photo = photo.detach().float().cpu()
        h, w = photo.shape[2:]
        keys, pats, scales = [], [], []
        for s in range(SCALES):
            r = 0.5**s
            hh, ww = round(h * r) // 4 * 4, round(w * r) // 4 * 4
            if min(hh, ww) < max(MIN_WIDTH, 4 * (KEY + 2)) and s > 0:
                break
            img = (
                photo.float()
                if s == 0 and (hh, ww) == (h, w)
                else F.interpolate(photo.float(), size=(hh, ww), mode="bicubic", align_corners=False, antialias=True)
            )
            img = img.clamp(-1, 1)
            low = F.interpolate(img, size=(hh // 4, ww // 4), mode="bicubic", align_corners=False, antialias=True)
            band = img - F.interpolate(low, size=(hh, ww), mode="bicubic", align_corners=False)
            lh, lw = hh // 4, ww // 4
            # source pixel j's block covers output [4j - 2, 4j + 6), its key source [j - 1, j + 3)
            # j - 1 in [0, lh - 4]: every key inside the photo
            ys = torch.randint(0, lh - KEY + 1, (patches,), generator=gen)
            xs = torch.randint(0, lw - KEY + 1, (patches,), generator=gen)
            k = _cut(to_levels(low)[0], ys, xs, KEY).reshape(patches, -1)  # (N, 48), channel-major
            p = _cut(band[0], 4 * ys + 2, 4 * xs + 2, BLOCK)  # output [4j - 2, 4j + 6) with j = ys + 1
            p = p - p.mean(dim=(2, 3), keepdim=True)
            keys.append(k.to(torch.uint8))
            pats.append(torch.round(p * 127.5).clamp(-127, 127).to(torch.int8))
            scales.append(ww / w)
        self.keys = torch.stack(keys)
        self.patches = torch.stack(pats)
        self.scales = torch.tensor(scales, dtype=torch.float32)
        self.photo_width = torch.tensor(w, dtype=torch.int64)
        self.guide = encode_photo(photo)
        self._bands = {}

    def scale_index(self, out_width: int) -> int:
        """The library whose scale is nearest (in log) to an output level ``out_width`` px wide."""
        r = out_width / float(self.photo_width)
        logs = [abs(math.log(float(s) / r)) for s in self.scales]
        return min(range(len(logs)), key=logs.__getitem__)

    @torch.no_grad()
    def apply(
        self,
        y: torch.Tensor,
        x: torch.Tensor,
        z: torch.Tensor | None,
        *,
        window: Box,
        core: Box,
        level_size: tuple[int, int],
        strength: float,
        choices: int,
    ) -> torch.Tensor:
        """``y`` (1, 3, 4 core.h, 4 core.w): an SR level's output for the source ``core``, read
        from ``x`` (and its noise ``z``) at ``window`` of a source level of ``level_size``.
        Returns ``y`` plus the photo's detail. Blocks are handled a band of rows at a time, so
        the memory stays bounded for any tile."""
        H, W = level_size
        s = self.scale_index(4 * W)
        keys, pats = self.keys[s].double(), self.patches[s]
        n = keys.shape[0]
        k = min(choices, n - 1)
        index = torch.arange(n, dtype=torch.float64, device=keys.device)
        search = (keys.T.contiguous(), ((keys * keys).sum(1) * n + index)[None, :], k)
        # the blocks that touch the core: source pixels core.y0 - 1 .. core.y1 (and x alike)
        blocks = Box(core.y0 - 1, core.y1 + 1, core.x0 - 1, core.x1 + 1)
        need = Box(blocks.y0 - 1, blocks.y1 + 2, blocks.x0 - 1, blocks.x1 + 2)  # their keys' source pixels
        levels = to_levels(replicated(x, window, need, H, W))  # (1, 3, need.h, need.w)
        u = None if z is None else torch.special.ndtr(replicated(z, window, blocks, H, W)[0, 0].float())
        acc = torch.zeros(3, 4 * core.height, 4 * core.width, dtype=torch.int32, device=y.device)
        weight = block_weight(y.device)  # (8, 8) integers: the 2D window x 4096
        for r0 in range(blocks.y0, blocks.y1, _BAND):
            r1 = min(r0 + _BAND, blocks.y1)
            q = F.unfold(levels[:, :, r0 - 1 - need.y0 : r1 + 2 - need.y0], KEY).transpose(1, 2)[0]  # keys: rows j-1..j+2
            pick = (
                torch.zeros(q.shape[0], dtype=torch.long, device=y.device)
                if u is None
                else torch.clamp((u[r0 - blocks.y0 : r1 - blocks.y0].reshape(-1) * choices).long(), max=k - 1)
            )
            idx = _nearest(q, search, pick)
            p = pats[idx].to(torch.int32) * weight  # (blocks, 3, 8, 8): exact integers
            add_blocks(acc, p.reshape(r1 - r0, blocks.width, 3, BLOCK, BLOCK), r0, blocks.x0, core)
        return added(y, acc, strength)  # int8 steps of 1/255 of [0, 1], window x 4096


def _nearest(q: torch.Tensor, search: tuple, pick: torch.Tensor) -> torch.Tensor:
    """For each row of ``q`` (keys as integer floats), the library index ranked ``pick`` among its
    nearest keys, ordered by distance, then index: one exact float64 product, distance * n + index
    (integers below 2^35), so equal distances never leave the order to ``topk``."""
    keys_t, base, k = search
    n = keys_t.shape[1]
    out = []
    for i in range(0, q.shape[0], _CHUNK):
        d = torch.addmm(base, q[i : i + _CHUNK].double(), keys_t, alpha=-2 * n)
        top = torch.topk(d, k + 1, dim=1, largest=False, sorted=True).indices
        out.append(top.gather(1, pick[i : i + _CHUNK, None])[:, 0])
    return torch.cat(out)


def _cut(img: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor, side: int) -> torch.Tensor:
    """(N, C, side, side): the squares of ``img`` (C, H, W) whose top-left corners are (ys, xs)."""
    r = torch.arange(side)
    return img[:, (ys[:, None] + r)[:, :, None], (xs[:, None] + r)[:, None, :]].permute(1, 0, 2, 3)
