"""From a correspondence field to pixels: the photo's patches placed by the field vote for every
pixel, and the seams where the field jumps are healed by a screened Poisson solve that keeps the
photo's own gradients (models/patches.py)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

FINE_VOTE = 3  # side of the patches that vote on the local-search scales (see fine_vote)


def fine_vote(p: int) -> int:
    """The vote's patch side on the local-search scales: ``FINE_VOTE`` (at most ``p``). Where the
    correspondence is incoherent (neighbours matched to unrelated places, as across a texture like
    grass) a vote of all p x p patches averages unrelated pixels into flat grey smears that the
    finer scales keep; the 3 x 3 patches around each pixel keep the texture. The layout scales keep
    the full vote: a smaller one there let clouds spread over the massif."""
    return min(FINE_VOTE, p)


SHARPNESS = 0.3  # a patch's vote weighs exp(-its match distance / (SHARPNESS x the median distance))


def match_weights(cost: torch.Tensor) -> torch.Tensor:
    """(h, w) vote weights from every patch's distance to its match (``field_cost``): a patch that
    matched well outvotes one that did not. Where the correspondence is incoherent (neighbours
    matched to unrelated places), the plain mean of the patches covering a pixel blends them into
    a ghost (a fern seen through rock, a smeared streak); the weighted mean keeps the patches that
    fit. A distance 0.3 x the scale's median weighs 1/e; the exponent stops at 30, so every pixel
    keeps a weight."""
    scale = SHARPNESS * cost.median().clamp_min(1e-12)
    return torch.exp(-(cost / scale).clamp(max=30.0))


def vote(src: torch.Tensor, nnf, p: int, weights: torch.Tensor | None = None) -> torch.Tensor:
    """(1, 3, h, w): every pixel the mean of the p x p photo patches that cover it, each placed
    by the correspondence ``nnf`` (photo row and column of every patch centre) and weighed by
    ``weights`` ((h, w), one a patch; None: all alike)."""
    sy, sx = nnf
    h, w = sy.shape
    r = p // 2
    img = src[0]
    wq = torch.ones(h, w) if weights is None else weights
    acc = torch.zeros(img.shape[0], h, w)
    count = torch.zeros(1, h, w)
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            # pixel q + d receives the value at match(q) + d of the patch centred at q
            y0, y1, x0, x1 = max(0, dy), min(h, h + dy), max(0, dx), min(w, w + dx)
            cy = sy[y0 - dy : y1 - dy, x0 - dx : x1 - dx] + dy
            cx = sx[y0 - dy : y1 - dy, x0 - dx : x1 - dx] + dx
            wd = wq[y0 - dy : y1 - dy, x0 - dx : x1 - dx]
            acc[:, y0:y1, x0:x1] += img[:, cy, cx] * wd
            count[:, y0:y1, x0:x1] += wd
    return (acc / count).unsqueeze(0)


HEAL_LENGTH = 1 / 8  # of the image's height: how far a seam's colour step is spread (screened Poisson) ...
HEAL_MAX = 12.0  # ... up to this many pixels (longer at fine scales turned rock-meadow seams into haze)


def heal(src: torch.Tensor, nnf, p: int, weights: torch.Tensor | None = None) -> torch.Tensor:
    """The voted image with its seams healed: the image whose gradients are the photo's own
    (voted like the pixels) and whose colours stay near the vote's, at a length of ``HEAL_LENGTH``.

    Where the correspondence jumps (two regions copied from different places of the photo), the
    plain vote steps between two colours that never met in the photo: a sky lighter on one side
    of a line, a meadow's band changing tone at a column. The photo's gradients there are small,
    so the step is spread over the healing length instead; edges the photo has are kept.
    ``weights``: as ``vote``'s."""
    gx = F.pad(src[..., :, 1:] - src[..., :, :-1], (0, 1))
    gy = F.pad(src[..., 1:, :] - src[..., :-1, :], (0, 0, 0, 1))
    v, vx, vy = vote(torch.cat([src, gx, gy], 1), nnf, p, weights).split(src.shape[1], 1)
    return screened_poisson(v, vx, vy, max(1.0, min(v.shape[2] * HEAL_LENGTH, HEAL_MAX)))


def screened_poisson(v: torch.Tensor, gx: torch.Tensor, gy: torch.Tensor, length: float) -> torch.Tensor:
    """(1, C, h, w): the u minimising |grad u - (gx, gy)|^2 + |u - v|^2 / length^2 (forward
    differences, reflecting edges), solved exactly in the cosine basis (FFT of the mirrored image)."""
    h, w = v.shape[2:]
    gx, gy = gx.clone(), gy.clone()
    gx[..., -1] = 0  # no difference leaves the image
    gy[..., -1, :] = 0
    div = gx - F.pad(gx, (1, 0))[..., :-1] + gy - F.pad(gy, (0, 0, 1, 0))[..., :-1, :]

    def mirrored(a: torch.Tensor) -> torch.Tensor:
        a = torch.cat([a, a.flip(-1)], -1)
        return torch.cat([a, a.flip(-2)], -2).double()

    ky = torch.arange(2 * h, dtype=torch.float64)
    kx = torch.arange(2 * w, dtype=torch.float64)
    laplacian = (2 * torch.cos(math.pi * ky / h) - 2)[:, None] + (2 * torch.cos(math.pi * kx / w) - 2)[None, :]
    mu = 1.0 / length**2
    u = torch.fft.ifft2((mu * torch.fft.fft2(mirrored(v)) - torch.fft.fft2(mirrored(div))) / (mu - laplacian))
    return u.real[..., :h, :w].to(v.dtype)
