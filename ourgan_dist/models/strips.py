"""The patch base's starting layout: the photo's upright strips laid side by side in a new order.

The photo is cut where it is calm (between objects rather than through them); the strips, each
mirrored or not, are laid in an order that keeps the photo's neighbours apart, drawn among random
orders with better-matching joins likelier. One photo width holds every strip once, so nothing in
the photo appears twice in it; a wider image repeats them in further orders.
``models/patches.py`` shrinks this collage to its coarsest scale and redraws it from the photo's
patches; what was tried here and not kept is in docs/quality.md.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

ORDERS_TRIED = 200  # random strip orders drawn; one is picked, cheaper joins more likely
CUT_SHARPNESS = 3.0  # a boundary as busy as the mean is e^3 times less likely a cut than a wholly calm one
STRIP_FLIP = 0.5  # each strip is mirrored with this probability: more new scenes from a few strips


def reorder_strips(photo: torch.Tensor, width: int, pieces: int, seed: int) -> torch.Tensor:
    """(1, 3, h, W) photo -> (1, 3, h, width): its upright strips side by side in a new order,
    a function of the seed. ``pieces`` to ``pieces`` + 2 strips are cut where the photo is
    calm (between objects rather than through them: a sun or a cup cut in two came back as two
    whole ones); each strip is mirrored or not; of ``ORDERS_TRIED`` random orders in which no
    strip is followed by a neighbour of the photo (or as few as can be), one is drawn, orders
    whose joins differ less being likelier (the cheapest one alone made most seeds alike). One
    photo width holds every strip exactly once (a wider image repeats them, in further orders);
    half the seeds mirror the result. ``pieces`` 1 keeps the photo (mirrored, widened by repeats)."""
    g = torch.Generator().manual_seed(seed & ((1 << 63) - 1))  # torch takes 63 bits
    _, _, h, w_photo = photo.shape
    k = max(1, min(pieces + int(torch.randint(0, 3, (1,), generator=g)) if pieces > 1 else 1, w_photo // 8))
    edges = [0] + _cuts(photo, k, g) + [w_photo]
    # joins cross-fade over a third of the narrowest strip (a sky's gradient meets without a step);
    # each strip carries half of that beyond each of its cuts, the photo's own next columns
    # (at the photo's edges its other edge: a mirrored one drew a symmetric double of what the edge
    # cuts, a lattice tower as diamonds), so a join spends those and no strip loses any of itself
    left = right = min(b - a for a, b in zip(edges[:-1], edges[1:])) // 6
    o = left + right
    padded = F.pad(photo, (o, o, 0, 0), mode="circular") if o else photo
    strips = [padded[..., a + o - left : b + o + right] for a, b in zip(edges[:-1], edges[1:])]
    flips = torch.rand(len(strips), generator=g) < STRIP_FLIP
    strips = [t.flip(-1) if f else t for t, f in zip(strips, flips)]
    rounds = 1 if width <= w_photo else -(-width // w_photo) + 1  # one photo width holds every strip once
    order = _draw_order(strips, rounds, g)
    collage = strips[order[0]][..., left:]
    ramp = torch.linspace(0, 1, o + 2)[1:-1]
    for i in order[1:]:
        nxt = strips[i]
        mixed = collage[..., collage.shape[-1] - o :] * (1 - ramp) + nxt[..., :o] * ramp
        collage = torch.cat([collage[..., : collage.shape[-1] - o], mixed, nxt[..., o:]], dim=-1)
    collage = collage[..., : collage.shape[-1] - right]  # rounds x the photo's width
    offset = int(torch.randint(0, collage.shape[-1] - width + 1, (1,), generator=g))
    collage = collage[..., offset : offset + width]
    return collage.flip(-1) if torch.rand(1, generator=g) < 0.5 else collage


def _cuts(photo: torch.Tensor, k: int, g: torch.Generator) -> list[int]:
    """Up to ``k - 1`` columns to cut the photo at, in order, at least ``W / (2k)`` apart and
    from its edges: only boundaries calmer than the mean (``_busy_columns``), the calmer much
    likelier. A photo with too few calm places gets fewer cuts rather than one through an object."""
    w = photo.shape[-1]
    busy = _busy_columns(photo)
    weight = torch.exp(-CUT_SHARPNESS * busy / (busy.mean() + 1e-8)) * (busy <= busy.mean())  # (W - 1,)
    spacing = max(1, w // (2 * k))
    cuts: list[int] = []
    for _ in range(64 * k):
        if len(cuts) == k - 1:
            break
        c = int(torch.multinomial(weight, 1, generator=g)) + 1
        if spacing <= c <= w - spacing and all(abs(c - o) >= spacing for o in cuts):
            cuts.append(c)
    return sorted(cuts)


def _busy_columns(photo: torch.Tensor) -> torch.Tensor:
    """(W - 1,) how much of an object each boundary between two columns cuts through. A pixel's
    share is how far it stands out from its row's median (in units of the row's mean), averaged
    over a box of 1/16 of the height by 1/16 of the width; a boundary scores its busiest box.
    Objects stand out from their rows' background (a sun from the sky, a cup from the table),
    texture only a little, and a box wider than a texture's grain averages that out; a column's
    own step does not do: the centre of a round object changes little across."""
    _, _, h, w = photo.shape
    img = photo[0]
    apart = (img - img.median(2, keepdim=True).values).abs().sum(0)  # (h, W)
    apart = apart / (apart.mean(1, keepdim=True) + 0.25 * apart.mean() + 1e-8)  # a calm sky's faint sun still counts
    ry, rx = max(1, h // 32), max(1, w // 32)
    boxed = F.avg_pool2d(F.pad(apart[None, None], (rx, rx, ry, ry), mode="replicate"), (2 * ry + 1, 2 * rx + 1), 1)[0, 0]
    busiest = boxed.max(0).values  # (W,)
    return torch.maximum(busiest[:-1], busiest[1:])


def _draw_order(strips: list[torch.Tensor], repeats: int, g: torch.Generator) -> list[int]:
    """The strips' order in the collage: ``repeats`` rounds of every strip. Of the orders tried,
    only those with the fewest joins of a strip to itself or to a neighbour in the photo (either
    way round: the collage may be mirrored) are kept, as those repeat an object or rebuild the
    photo's own layout; among them one is drawn with probability
    ``exp(-(cost - least) / (median - least))``, ``cost`` summing the joins' mean squared colour steps."""
    n = len(strips)
    step = torch.tensor(
        [[float(((a[..., -1] - b[..., 0]) ** 2).mean()) for b in strips] for a in strips], dtype=torch.float64
    )  # (n, n): the colour step where strip i meets strip j
    tried = [_random_order(n, repeats, g) for _ in range(ORDERS_TRIED)]
    rejoined = [sum(abs(b - a) <= 1 for a, b in zip(o, o[1:])) for o in tried]
    orders = [o for o, r in zip(tried, rejoined) if r == min(rejoined)]
    cost = torch.stack([step[o[:-1], o[1:]].sum() for o in orders])
    spread = float(cost.median() - cost.min()) or 1.0
    return orders[int(torch.multinomial(torch.exp(-(cost - cost.min()) / spread), 1, generator=g))]


def _random_order(n: int, repeats: int, g: torch.Generator) -> list[int]:
    """``repeats`` rounds, each using every strip once; each next strip is drawn among the round's
    left-over strips that are not the last one's neighbours in the photo (any left-over if none)."""
    order: list[int] = []
    for _ in range(repeats):
        left = torch.randperm(n, generator=g).tolist()
        while left:
            ok = [i for i in left if not order or abs(i - order[-1]) > 1] or left
            pick = ok[int(torch.randint(len(ok), (1,), generator=g))]
            order.append(pick)
            left.remove(pick)
    return order
