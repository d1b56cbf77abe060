"""Each region of the photo at one place: the rule that keeps the patch base from drawing an
object twice (or torn in pieces), on the exact layout scales and the first local-search scales
(models/patches.py explains why and where it acts)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

PLACE_CELL = 4  # key positions are grouped in cells this many a side: a photo region, for one_place
PLACE_NEAR = 4  # users of a region whose offsets (query - key) differ by at most this many px are one copy
PLACE_FAR = 2.0  # a wider image may draw a region again, at least this many photo widths away (see copies)
PLACE_BESIDE = 4  # a copy the other way round within 1/4 of the photo's width of the kept one's users is beside it
PLACE_SLACK = 2  # an image this many px short of a whole number of photo widths counts as that many (copies)


def copies(w: int, sw: int) -> int:
    """How many copies of each photo region ``one_place`` keeps in an image ``w`` wide drawn from
    the photo ``sw`` wide at its height: as many as fit ``PLACE_FAR`` photo widths apart (one up
    to three photos wide, two up to five, ...), an image ``PLACE_SLACK`` px short counting as the
    full width (a scale's size and the photo's are rounded apart). Half a photo apart, a panorama
    twice the photo's width drew the photo's one stone table two or three times in every seed, and
    its one trail twice; a frame 1.2 photos wide, given two copies, drew the trail's bank at both
    edges."""
    return max(1, 1 + (w + PLACE_SLACK - sw) // round(PLACE_FAR * sw))


def regions(kh: int, kw: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The photo region (``key_cells``) of each of ``kh * kw`` key positions and of its mirror
    image's, (2 kh kw,): a mirrored key is its original's region; and (kh kw,) each key's place
    in the mirror image."""
    cells = key_cells(kh, kw, PLACE_CELL)
    flipped = torch.arange(kh * kw).view(kh, kw).flip(-1).reshape(-1)
    return torch.cat([cells, cells[flipped]]), flipped


def key_cells(kh: int, kw: int, cell: int) -> torch.Tensor:
    """(kh * kw,) the region (a ``cell`` x ``cell`` square of key positions) of every key."""
    cw = -(-kw // cell)
    return ((torch.arange(kh) // cell)[:, None] * cw + (torch.arange(kw) // cell)[None, :]).reshape(-1)


def one_place(
    idx: torch.Tensor, cells: torch.Tensor, w: int, kw: int, places: int, far: float, upright: int | None = None
) -> torch.Tensor:
    """(n queries, n regions) bool: the regions each query of an image ``w`` wide is barred from.

    ``idx`` is every query's key (a row-major index into key positions ``kw`` wide: the photo's
    ``upright`` ones, then as many of its mirror image's), ``cells`` every key's photo region (a
    mirrored key its original's). A region used at several places is an object drawn twice (or torn in
    pieces): each region keeps the users that copy it at the offset (query position - key
    position) most queries of the image share (within ``PLACE_NEAR`` px), since an object copied
    whole moves all its patches by one offset; the rest are barred from it. Up to ``places`` copies
    are kept, each at least ``far`` px (in x) from the others. A mirrored copy's offsets are set
    apart from every upright one's: a copy running on from the photo into its mirror image moves
    its patches by one offset too, and drew an object beside its own mirror image as one copy."""
    nq, nc = idx.shape[0], int(cells.max()) + 1
    barred = torch.zeros(nq, nc, dtype=torch.bool)
    q = torch.arange(nq)
    qx = q % w
    half = cells.shape[0] if upright is None else upright
    at = idx % half
    oy, ox = q // w - at // kw, qx - at % kw + (idx >= half) * 2 * (w + kw + PLACE_NEAR)
    # support of each query's offset: how many queries move their patch by about the same offset
    y0, x0 = int(oy.min()), int(ox.min())
    hist = torch.zeros(int(oy.max()) - y0 + 1, int(ox.max()) - x0 + 1)
    hist.index_put_((oy - y0, ox - x0), torch.ones(nq), accumulate=True)
    n = PLACE_NEAR
    box = F.conv2d(F.pad(hist[None, None], (n, n, n, n)), torch.ones(1, 1, 2 * n + 1, 2 * n + 1))[0, 0]
    support = box[oy - y0, ox - x0]
    qc = cells[idx]
    mirrored = idx >= half
    turned = torch.zeros(nq, nc, dtype=torch.bool)  # barred from a region kept the other way round
    order = torch.argsort(qc, stable=True)
    counts = torch.bincount(qc, minlength=nc).tolist()
    start = 0
    for c, count in enumerate(counts):
        users = order[start : start + count]
        start += count
        if count < 2:
            continue
        a, b = oy[users], ox[users]
        free = torch.ones(count, dtype=torch.bool)
        kept_x: list[float] = []
        ways = set()
        for _ in range(places):
            m = int(support[users].masked_fill(~free, -1).argmax())
            if not free[m] or any(abs(float(qx[users[m]]) - x) < far for x in kept_x):
                break
            kept_x.append(float(qx[users[m]]))
            ways.add(bool(mirrored[users[m]]))
            free &= torch.maximum((a - a[m]).abs(), (b - b[m]).abs()) > n  # this copy's users keep it
        barred[users[free], c] = True
        if len(ways) == 1:  # the other way round, beside the kept copy: its own mirror image
            held = qx[users[~free]].double()
            beside = (qx[users].double()[:, None] - held[None]).abs().amin(1) < kw / PLACE_BESIDE
            turned[users[free & beside & (mirrored[users] != ways.pop())], c] = True
    if not turned.any():
        return barred
    # half an object, completed by its own mirror image beside it, moved to the next region when
    # barred from one: a query barred so is barred from the regions around it too
    cw = -(-kw // PLACE_CELL)  # the regions' grid (key_cells)
    around = F.max_pool2d(turned.view(nq, 1, nc // cw, cw).float(), 3, 1, padding=1).view(nq, nc) > 0
    return barred | around


PLACE_PAIRS = 1 << 25  # local-search scales bar copies (one_place) while queries x photo regions are at most this


def field_index(nnf, sh: int, sw: int) -> torch.Tensor:
    """(h * w,) every pixel's match (a local field's: columns past ``sw`` are the mirror image's)
    as a row-major index into the photo's ``sh * sw`` pixels, then its mirror image's, as
    ``one_place`` and ``key_cells`` count them."""
    sy, sx = nnf
    mirrored = sx >= sw
    return (sy * sw + torch.where(mirrored, sx - sw, sx) + mirrored * (sh * sw)).reshape(-1)
