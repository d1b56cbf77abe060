"""The patch base's starting layout: the photo's upright strips laid side by side in a new order,
and a drawn layout widened by the photo's calm stretches.

The photo is cut where it is calm (between objects rather than through them); the strips, each
mirrored or not, are laid in an order that keeps the photo's neighbours apart, drawn among random
orders with better-matching joins likelier, each strip once, so nothing in the photo appears
twice (``reorder_strips``). ``models/patches.py`` shrinks this collage to its coarsest scale and
redraws it from the photo's patches; an image wider than the photo is drawn at the photo's width
and then widened by calm stretches of the photo laid in where the drawing is calm (``widen``).
What was tried here and not kept is in docs/quality.md.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

ORDERS_TRIED = 200  # random strip orders drawn; one is picked, cheaper joins more likely
CUT_SHARPNESS = 3.0  # a boundary as busy as the mean is e^3 times less likely a cut than a wholly calm one
STRIP_FLIP = 0.5  # each strip is mirrored with this probability: more new scenes from a few strips


def reorder_strips(photo: torch.Tensor, width: int, pieces: int, seed: int) -> torch.Tensor:
    """(1, 3, h, W) photo -> (1, 3, h, width), ``width`` <= W: its upright strips side by side in
    a new order, a function of the seed. ``pieces`` to ``pieces`` + 2 strips are cut where the
    photo is calm (between objects rather than through them: a sun or a cup cut in two came back
    as two whole ones); each strip is mirrored or not; of ``ORDERS_TRIED`` random orders in which
    no strip is followed by a neighbour of the photo (or as few as can be), one is drawn, orders
    whose joins differ less being likelier (the cheapest one alone made most seeds alike). Every
    strip comes once (nothing in the photo twice), and a window ``width`` wide is kept; half the
    seeds mirror the result. ``pieces`` 1 keeps the photo (mirrored or not). A wider image is
    drawn at the photo's width and then widened (``widen``)."""
    _, _, h, w_photo = photo.shape
    if width > w_photo:
        raise ValueError(f"a collage {width} wide from a photo {w_photo} wide: draw it at the photo's width, then widen it")
    g = torch.Generator().manual_seed(seed & ((1 << 63) - 1))  # torch takes 63 bits
    k = max(1, min(pieces + int(torch.randint(0, 3, (1,), generator=g)) if pieces > 1 else 1, w_photo // 8))
    edges = [0] + _cuts(_busy_columns(photo), k, g) + [w_photo]
    # joins cross-fade over a third of the narrowest strip (a sky's gradient meets without a step);
    # each strip carries half of that beyond each of its cuts, the photo's own next columns
    # (at the photo's edges its other edge: a mirrored one drew a symmetric double of what the edge
    # cuts, a lattice tower as diamonds), so a join spends those and no strip loses any of itself
    o = 2 * (min(b - a for a, b in zip(edges[:-1], edges[1:])) // 6)
    strips = _pieces(F.pad(photo, (o, o, 0, 0), mode="circular") if o else photo, edges, o)
    flips = torch.rand(len(strips), generator=g) < STRIP_FLIP
    strips = [t.flip(-1) if f else t for t, f in zip(strips, flips)]
    collage = _join([strips[i] for i in _draw_order(strips, g)], o)  # the photo's width
    offset = int(torch.randint(0, collage.shape[-1] - width + 1, (1,), generator=g))
    collage = collage[..., offset : offset + width]
    return collage.flip(-1) if torch.rand(1, generator=g) < 0.5 else collage


def widen(x: torch.Tensor, photo: torch.Tensor, width: int, seed: int) -> torch.Tensor:
    """A drawn layout (1, 3, h, w) -> (1, 3, h, width), width >= w: calm stretches of the photo
    (1, 3, h, W) (a sky, a meadow: ``_calm_pieces``) laid into it where it is itself calm (between
    its objects: ``_cuts``), about a quarter of its width at each place, each mirrored or not; a
    function of the seed. Every object of the layout stays once: a new image wider than the photo
    is drawn at the photo's width, where each of its objects is placed once, and widened so; drawn
    at the full width, the passes filled the room with second suns, tables and trails."""
    w = x.shape[-1]
    extra = width - w
    if extra <= 0:
        return x
    g = torch.Generator().manual_seed(seed & ((1 << 63) - 1))
    places = -(-4 * extra // w)  # about a quarter of the layout's width laid in at each place
    cuts = _cuts(_busy_anywhere(x), places + 1, g) or [w // 2]  # no calm place: its middle
    o = 2 * max(1, min(b - a for a, b in zip([0] + cuts, cuts + [w])) // 12)  # as strips' joins, shorter: a gap is narrow
    parts = _pieces(F.pad(x, (o, o, 0, 0), mode="replicate"), [0] + cuts + [w], o)
    padded, busy = F.pad(photo, (o, o, 0, 0), mode="circular"), _busy_anywhere(photo)
    laid = [parts[0]]
    for part, gap in zip(parts[1:], _gaps(extra, len(cuts), g)):
        laid += [t.flip(-1) if torch.rand(1, generator=g) < STRIP_FLIP else t for t in _calm_pieces(padded, busy, gap, o, g)]
        laid.append(part)
    return _join(laid, o)


def _pieces(padded: torch.Tensor, edges: list[int], o: int) -> list[torch.Tensor]:
    """The pieces between ``edges`` of an image padded by ``o`` columns each side, each carrying
    ``o / 2`` columns beyond each of its edges (what a join's cross-fade spends)."""
    half = o // 2
    return [padded[..., a + o - half : b + o + half] for a, b in zip(edges[:-1], edges[1:])]


def _join(pieces: list[torch.Tensor], o: int) -> torch.Tensor:
    """``pieces`` (each carrying ``o / 2`` columns beyond each side) side by side, each join a
    cross-fade over ``o`` columns: as wide as the pieces' own widths summed."""
    half = o // 2
    out = pieces[0][..., half:]
    ramp = torch.linspace(0, 1, o + 2)[1:-1]
    for nxt in pieces[1:]:
        mixed = out[..., out.shape[-1] - o :] * (1 - ramp) + nxt[..., :o] * ramp
        out = torch.cat([out[..., : out.shape[-1] - o], mixed, nxt[..., o:]], dim=-1)
    return out[..., : out.shape[-1] - half]


def _gaps(extra: int, n: int, g: torch.Generator) -> list[int]:
    """``extra`` columns shared at random among ``n`` places."""
    share = -torch.rand(n, generator=g, dtype=torch.float64).log()  # a uniform draw on the simplex
    cols = torch.floor(share / share.sum() * extra).long()
    cols[: extra - int(cols.sum())] += 1
    return cols.tolist()


def _calm_pieces(padded: torch.Tensor, busy: torch.Tensor, width: int, o: int, g: torch.Generator) -> list[torch.Tensor]:
    """Pieces of a photo ``width`` columns wide in all, from its calm stretches: each is drawn
    among the places where no boundary is busier than the mean (``busy``: ``_busy_anywhere``), the
    calmer much likelier, as cuts are; a width that no calm place is as wide as is made of two
    narrower pieces. ``padded`` is the photo padded by ``o`` columns each side; each piece
    carries ``o / 2`` beyond each side, as strips do."""
    if width <= 0:
        return []
    n = busy.shape[0]  # boundaries: the photo's width - 1
    if width - 1 <= n:
        span = F.max_pool1d(busy[None, None], width - 1, 1)[0, 0] if width > 1 else busy  # a column: its right boundary
        weight = _calm_weight(span, busy)
        if float(weight.sum()) > 0:
            x = int(torch.multinomial(weight, 1, generator=g))
            return _pieces(padded, [x, x + width], o)
    return _calm_pieces(padded, busy, width // 2, o, g) + _calm_pieces(padded, busy, width - width // 2, o, g)


def _cuts(busy: torch.Tensor, k: int, g: torch.Generator) -> list[int]:
    """Up to ``k - 1`` columns to cut an image at, in order, at least ``W / (2k)`` apart and
    from its edges: only boundaries calmer than the mean (``busy``: ``_busy_columns``), the calmer
    much likelier. An image with too few calm places gets fewer cuts rather than one through an object."""
    w = busy.shape[0] + 1
    weight = _calm_weight(busy, busy)  # (W - 1,)
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
    return _row_busy(_apart(photo))


def _busy_anywhere(photo: torch.Tensor) -> torch.Tensor:
    """(W - 1,) ``_busy_columns`` in units of its mean, or, where larger, the same measured against
    the whole photo's mean rather than each row's: what is laid into a wider image must hold no
    object at all, and a stone table on a speckled meadow, whose rows are busy everywhere, stands
    out only against the photo (row by row it scored as the meadow, and came back twice)."""
    apart = _apart(photo)
    rows, whole = _row_busy(apart), _boundaries(apart / (apart.mean() + 1e-8))
    return torch.maximum(rows / (rows.mean() + 1e-8), whole / (whole.mean() + 1e-8))


def _calm_weight(score: torch.Tensor, busy: torch.Tensor) -> torch.Tensor:
    """How likely each place of ``score`` (a busy measure of it) is drawn as a calm one: none if
    busier than ``busy``'s mean, else exp(-``CUT_SHARPNESS`` score / mean)."""
    return torch.exp(-CUT_SHARPNESS * score / (busy.mean() + 1e-8)) * (score <= busy.mean())


def _row_busy(apart: torch.Tensor) -> torch.Tensor:
    """``_busy_columns`` of a photo whose ``_apart`` is given."""
    return _boundaries(apart / (apart.mean(1, keepdim=True) + 0.25 * apart.mean() + 1e-8))  # a calm sky's faint sun still counts


def _apart(photo: torch.Tensor) -> torch.Tensor:
    """(h, W): how far each pixel's colour is from its row's median (summed over channels)."""
    img = photo[0]
    return (img - img.median(2, keepdim=True).values).abs().sum(0)


def _boundaries(share: torch.Tensor) -> torch.Tensor:
    """(h, W) -> (W - 1,): each boundary's busiest box of ``share`` (1/16 x 1/16 of the image)."""
    h, w = share.shape
    ry, rx = max(1, h // 32), max(1, w // 32)
    boxed = F.avg_pool2d(F.pad(share[None, None], (rx, rx, ry, ry), mode="replicate"), (2 * ry + 1, 2 * rx + 1), 1)[0, 0]
    busiest = boxed.max(0).values  # (W,)
    return torch.maximum(busiest[:-1], busiest[1:])


def _draw_order(strips: list[torch.Tensor], g: torch.Generator) -> list[int]:
    """The strips' order in the collage, each once. Of the orders tried, only those with the
    fewest joins of a strip to a neighbour in the photo (either way round: the collage may be
    mirrored) are kept, as those rebuild the photo's own layout; among them one is drawn with
    probability ``exp(-(cost - least) / (median - least))``, ``cost`` summing the joins' mean
    squared colour steps."""
    n = len(strips)
    step = torch.tensor(
        [[float(((a[..., -1] - b[..., 0]) ** 2).mean()) for b in strips] for a in strips], dtype=torch.float64
    )  # (n, n): the colour step where strip i meets strip j
    tried = [_random_order(n, g) for _ in range(ORDERS_TRIED)]
    rejoined = [sum(abs(b - a) <= 1 for a, b in zip(o, o[1:])) for o in tried]
    orders = [o for o, r in zip(tried, rejoined) if r == min(rejoined)]
    cost = torch.stack([step[o[:-1], o[1:]].sum() for o in orders])
    spread = float(cost.median() - cost.min()) or 1.0
    return orders[int(torch.multinomial(torch.exp(-(cost - cost.min()) / spread), 1, generator=g))]


def _random_order(n: int, g: torch.Generator) -> list[int]:
    """Every strip once; each next one is drawn among the left-over strips that are not the last
    one's neighbours in the photo (any left-over if none)."""
    order: list[int] = []
    left = torch.randperm(n, generator=g).tolist()
    while left:
        ok = [i for i in left if not order or abs(i - order[-1]) > 1] or left
        pick = ok[int(torch.randint(len(ok), (1,), generator=g))]
        order.append(pick)
        left.remove(pick)
    return order
