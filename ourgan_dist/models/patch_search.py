"""Finding a photo patch for every patch of an image: features by projection on the photo
patches' principal directions, the exact search with completeness (GPNN's normalisation) and the
vertical term, and the local PatchMatch-style search that refines a field carried up a scale.
models/patches.py draws new images with them."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .regions import field_index

PCA_SAMPLES = 8000  # photo patches sampled to fit each scale's projection


class Projection:
    """Features of every p x p patch of an image: its projection on the photo patches' first
    ``k`` principal directions at this scale, computed for all patches at once as a convolution."""

    def __init__(self, photo: torch.Tensor, p: int, k: int, seed: int):
        cut = F.unfold(photo, p)[0].T  # (n, 3 * p * p) patches wholly inside the photo
        g = torch.Generator().manual_seed(seed)
        sample = cut[torch.randperm(cut.shape[0], generator=g)[:PCA_SAMPLES]]
        self.mean = sample.mean(0)
        _, _, v = torch.linalg.svd(sample - self.mean, full_matrices=False)
        self.basis = v[:k]  # (k, 3 * p * p)
        self.p = p
        self.variance = float(((sample - self.mean) ** 2).sum(1).mean()) + 1e-8

    def __call__(self, x: torch.Tensor, pad: bool) -> torch.Tensor:
        """(1, 3, h, w) -> (k, h', w'): one feature per patch centre; with ``pad`` every pixel is a
        centre (edges repeated), else only centres whose patch lies inside."""
        r = self.p // 2
        if pad:
            x = F.pad(x, (r, r, r, r), mode="replicate")
        f = F.conv2d(x, self.basis.view(-1, 3, self.p, self.p))
        return f[0] - (self.basis @ self.mean).view(-1, 1, 1)


KEPT_DISTANCES = 1 << 26  # query-key distances (4 bytes each) kept from the first sweep for the second, at most


def nearest(
    q: torch.Tensor,
    k: torch.Tensor,
    qy: torch.Tensor,
    ky: torch.Tensor,
    vw: float,
    alpha: float,
    chunk: int = 2048,
    barred: torch.Tensor | None = None,
    cells: torch.Tensor | None = None,
    twin: torch.Tensor | None = None,
) -> torch.Tensor:
    """For each query row of ``q`` (nq, d) the index of its photo patch in ``k`` (nk, d): the least
    (|q - k|^2 + vw * (qy - ky)^2) / (alpha + min over queries of the same), GPNN's completeness
    (the larger ``alpha``, the weaker: plain nearest neighbours as it grows). ``twin``: each key's
    mirror image among the keys, whose nearest query counts for both."""
    root = math.sqrt(vw)  # the vertical term as one more feature: one matrix product gives the whole distance
    q, k = torch.cat([q, root * qy[:, None]], 1), torch.cat([k, root * ky[:, None]], 1)
    kk = (k * k).sum(1)

    def dist(i: int) -> torch.Tensor:
        qc = q[i : i + chunk]
        return torch.addmm(kk[None], qc, k.T, alpha=-2).add_((qc * qc).sum(1, keepdim=True)).clamp_min_(0)  # (c, nk)

    keep = q.shape[0] * k.shape[0] <= KEPT_DISTANCES  # small enough to keep from the first sweep for the second
    swept: dict[int, torch.Tensor] = {}
    least = torch.full((k.shape[0],), float("inf"))
    for i in range(0, q.shape[0], chunk):
        d = dist(i)
        least = torch.minimum(least, d.min(0).values)
        if keep:
            swept[i] = d
    if twin is not None:  # a patch the image holds mirrored is held: its mirror image is not missing
        least = torch.minimum(least, least[twin])
    norm = alpha + least
    out = torch.empty(q.shape[0], dtype=torch.long)
    for i in range(0, q.shape[0], chunk):
        sc = (swept.pop(i) if keep else dist(i)).div_(norm[None])
        if barred is not None:  # (nq, n regions) and each key's region: one_place
            sc.masked_fill_(barred[i : i + chunk][:, cells], float("inf"))
        out[i : i + chunk] = sc.argmin(1)
    return out


def upsample_field(nnf, size: tuple[int, int], src_size: tuple[int, int], p: int):
    """The correspondence of the scale below, carried to ``size``: each pixel reads the match of
    the pixel below it, moved by its own sub-pixel offset, in the photo of ``src_size``."""
    (py, px), (h, w), (sh, sw) = nnf, size, src_size
    r = p // 2
    ph, pw = py.shape
    fy = (torch.arange(h, dtype=torch.float64) + 0.5) * ph / h - 0.5
    fx = (torch.arange(w, dtype=torch.float64) + 0.5) * pw / w - 0.5
    iy = fy.round().long().clamp(0, ph - 1)
    ix = fx.round().long().clamp(0, pw - 1)
    ry, rx = h / ph, w / pw
    # (h, w) photo rows/cols: the lower match scaled up, plus this pixel's offset from the lower pixel's centre
    ny = ((py[iy][:, ix].double() + 0.5) * ry - 0.5 + (fy - iy)[:, None] * ry).round().long()
    nx = ((px[iy][:, ix].double() + 0.5) * rx - 0.5 + (fx - ix)[None, :] * rx).round().long()
    return ny.clamp(r, sh - 1 - r), nx.clamp(r, sw - 1 - r)


def edge_rows(inner, top: int, bottom: int):
    """The field of an image from that of its ``inner`` rows (those whose patch lies wholly inside
    it): each of its ``top`` first and ``bottom`` last rows takes the match of the nearest inner
    row, moved on by the rows between them. An edge row is drawn from the photo's row as far from
    that match as it is from the inner row, so a band along the photo's bottom keeps its height
    and an object standing just above it stays whole. Matched on their own (a patch padded with
    its edge row repeated, against photo patches centred a patch's reach inside), the edge rows
    were drawn from rows further in at every scale, and whatever stood above a band at the frame
    was stretched over it (docs/quality.md, "Edge rows from the rows inside")."""
    sy, sx = inner
    n = sy.shape[0]
    y = torch.arange(top + n + bottom) - top  # every row of the image, counted from the first inner one
    at = y.clamp(0, n - 1)
    return sy[at] + (y - at)[:, None], sx[at]


def field_cost(qf, kf, qy, ky, vw: float, nnf) -> torch.Tensor:
    """(h, w): every query patch's distance to its match under ``nnf`` (features, plus the
    vertical term), the distance ``refine_field`` minimises."""
    sy, sx = nnf
    return ((qf - kf[:, sy, sx]) ** 2).sum(0) + vw * (qy[:, None] - ky[sy]) ** 2


JUMPS = (1, 4, 16)  # neighbour distances whose matches each pixel tries (propagation)
RANDOM_TRIES = 4  # random jumps per pixel and pass, at radii halving from a quarter of the photo


def refine_field(qf, kf, qy, ky, vw: float, nnf, p: int, g: torch.Generator, shut=None, barred=None, cells=None):
    """One PatchMatch-style pass over a correspondence field: every pixel keeps the best of its
    own match moved by up to 1 px, its neighbours' matches (shifted by the step), and random jumps.
    ``shut`` (the keys' (h, w) bool): centres never taken; ``barred`` (queries, photo regions) bool
    with ``cells`` (each key's region, as ``field_index`` numbers keys): regions a query never takes."""
    r = p // 2
    sy, sx = nnf
    _, sh, sw = kf.shape

    def cost(cy, cx):
        cy, cx = cy.clamp(r, sh - 1 - r), cx.clamp(r, sw - 1 - r)
        d = field_cost(qf, kf, qy, ky, vw, (cy, cx))
        if shut is not None:
            d = d.masked_fill(shut[cy, cx], float("inf"))
        if barred is not None:
            region = cells[field_index((cy, cx), sh, sw // 2)]
            pair = torch.arange(region.numel()) * barred.shape[1] + region
            d = d.masked_fill(barred.view(-1)[pair].view(d.shape), float("inf"))
        return d, cy, cx

    best, by, bx = cost(sy, sx)

    def consider(cy, cx):
        nonlocal best, by, bx
        d, cy, cx = cost(cy, cx)
        better = d < best
        best = torch.where(better, d, best)
        by = torch.where(better, cy, by)
        bx = torch.where(better, cx, bx)

    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy or dx:
                consider(sy + dy, sx + dx)
    for j in JUMPS:
        for ey, ex in ((0, j), (0, -j), (j, 0), (-j, 0)):
            consider(torch.roll(by, (ey, ex), (0, 1)) + ey, torch.roll(bx, (ey, ex), (0, 1)) + ex)
    radius = max(sh, sw) // 4
    for _ in range(RANDOM_TRIES):
        if radius < 2:
            break
        consider(
            by + torch.randint(-radius, radius + 1, by.shape, generator=g),
            bx + torch.randint(-radius, radius + 1, bx.shape, generator=g),
        )
        radius //= 2
    return by, bx
