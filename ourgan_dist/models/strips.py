"""The patch base's starting layout: the photo's upright strips laid side by side in a new order.

The photo is cut at columns where little changes across (between objects rather than through
them); the strips are laid in an order that keeps the photo's neighbours apart, drawn among random
orders with better-matching joins likelier, and repeated until the new image's width is filled.
``models/patches.py`` shrinks this collage to its coarsest scale and redraws it from the photo's
patches; what was tried here and not kept is in docs/quality.md.
"""

from __future__ import annotations

import torch

ORDERS_TRIED = 200  # random strip orders drawn; one is picked, cheaper joins more likely


def reorder_strips(photo: torch.Tensor, width: int, pieces: int, seed: int) -> torch.Tensor:
    """(1, 3, h, W) photo -> (1, 3, h, width): its upright strips side by side in a new order,
    a function of the seed. Cuts fall more often where columns change little (between objects
    rather than through them); of ``ORDERS_TRIED`` random orders in which no strip is followed by
    a neighbour of the photo (or as few as can be), one is drawn, orders whose joins differ less
    being likelier (the cheapest one alone made most seeds alike); strips repeat, in further
    orders, until ``width`` is filled; half the seeds mirror the result. ``pieces`` 1 keeps the
    photo (mirrored, widened by repeats)."""
    g = torch.Generator().manual_seed(seed & ((1 << 63) - 1))  # torch takes 63 bits
    _, _, h, w_photo = photo.shape
    k = max(1, min(pieces + int(torch.randint(-1, 2, (1,), generator=g)) if pieces > 1 else 1, w_photo // 8))
    change = (photo[..., 1:] - photo[..., :-1]).abs().sum((0, 1, 2))  # (W - 1,) how much each column boundary changes
    weight = torch.exp(-change / (change.mean() + 1e-8))
    spacing = max(1, w_photo // (2 * k))
    cuts: list[int] = []
    for _ in range(64 * k):
        if len(cuts) == k - 1:
            break
        c = int(torch.multinomial(weight, 1, generator=g)) + 1
        if spacing <= c <= w_photo - spacing and all(abs(c - o) >= spacing for o in cuts):
            cuts.append(c)
    edges = [0] + sorted(cuts) + [w_photo]
    strips = [photo[..., a:b] for a, b in zip(edges[:-1], edges[1:])]
    order = _draw_order(strips, -(-width // w_photo) + 2, g)  # joins overlap: more than enough to fill ``width``
    collage = strips[order[0]]
    for i in order[1:]:  # joins cross-fade over a third of the narrower side: a sky's gradient meets without a step
        nxt = strips[i]
        o = min(collage.shape[-1], nxt.shape[-1]) // 3
        ramp = torch.linspace(0, 1, o + 2)[1:-1] if o else torch.zeros(0)
        mixed = collage[..., collage.shape[-1] - o :] * (1 - ramp) + nxt[..., :o] * ramp
        collage = torch.cat([collage[..., : collage.shape[-1] - o], mixed, nxt[..., o:]], dim=-1)
    offset = int(torch.randint(0, collage.shape[-1] - width + 1, (1,), generator=g))
    collage = collage[..., offset : offset + width]
    return collage.flip(-1) if torch.rand(1, generator=g) < 0.5 else collage


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
