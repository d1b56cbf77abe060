"""The patch base generator: new scenes drawn from the photo's own patches, coarse to fine.

Each new image is made by patch nearest-neighbour generation in the manner of GPNN (Granot et
al., "Drop the GAN", CVPR 2022), with OUR-GAN's vertical positional input kept as a term of the
patch distance. No weights are learned: the model is the photo itself, kept at base scale.

    x_0       = photo_0 (resized to the new image's coarsest size) + noise * z      (seeded)
    x_s       = up(x_{s-1}), then ``iterations`` times:
                each p x p patch of x_s is replaced by its nearest patch of the photo (or of
                its mirror image: ``doubled``),
                patches vote (mean) for every pixel (above the layout scales, only the
                3 x 3 patches around it: ``fine_vote``, each weighed by how well it
                matched: ``match_weights``); the scale's last vote is healed

A pyramid of scales (ratio ``pyramid_ratio``) runs from a coarsest about ``coarsest`` px on its
shorter side to the base itself; the photo is resized so that its height is the base's at every
scale, so the new image keeps the photo's vertical extent (sky above, ground below) at any width.
The search matches the image's patches that lie wholly inside it, as the photo's do, and its
top and bottom rows follow the rows inside (``edge_rows``; the top rows not on the coarsest
scale): a band along the photo's bottom keeps its height, and the objects standing on it their
shape.

Seven things make the samples new scenes and not copies or patch salad:

- **A new order of the photo's upright strips** (``pieces``, ``models/strips.py``): the photo is cut into strips where
  it is calm (between objects rather than through them), and the strips, each mirrored or not,
  are laid side by side in a new order that keeps the photo's neighbours apart, drawn among
  random orders with better-matching joins likelier, each strip once (nothing of the photo
  twice); this collage, shrunk to the coarsest scale
  (``coarsest``: 24 px on its shorter side, as at 16 a patch spanned half the image and the
  passes rebuilt the photo's own layout from any collage; a portrait counted in rows was 16 px
  wide and came back as the photo), is where the new image starts. Objects move and
  meet new neighbours; the nearest-neighbour passes heal the joins.
- **A wider image is drawn at the photo's width, then widened** (``strips.widen``): the
  coarsest scale is drawn no wider than the photo, where completeness (below) places each of
  its objects once, and calm stretches of the photo (sky, meadow) are then laid in between
  its objects; the finer layout scales heal the joins. Drawn at the full width, completeness
  filled the room with second suns, clouds and trails (docs/quality.md).
- **Noise at the coarsest scale** (``noise``, in units of the photo's own standard deviation)
  breaks the photo's layout; the nearest-neighbour passes redraw it from the photo's patches.
- **Completeness** (``alpha``): a photo patch's distance to a query is divided by
  ``alpha * scale + (its distance to the query nearest it)`` (GPNN's normalisation), so patches
  the current image already holds lose to ones it lacks: objects appear rather than one
  texture covering everything. ``scale`` is the photo's mean patch variance, so ``alpha`` means
  the same for a dim photo and a bright one. It acts at full strength on the first
  ``complete_scales`` layout scales, where the objects are placed, and weaker (``fine_alpha``)
  on the finer layout scales: at full strength there it forced in patches with no place left to
  go (a raised stretch of horizon pasted beside a lower one, a guard rail stepping with it);
  without it, small objects that only show at those scales (a photo's lights) were lost.
- **Each region of the photo at one place** (``one_place``): after every exact pass, the queries
  using each small region of the photo are grouped by their offset (query position - key
  position); the group whose offset the most queries of the image share keeps the region, and the
  others are barred from it for the rest of the scale, so they take their next best patch. An
  object copied whole moves all its patches by one offset, so its main copy keeps every region
  of it, while a second copy or a torn-off piece loses them (an image keeps a second copy only
  where it is two photo widths away: ``copies``). Completeness alone let an object be taken at
  several places at once: a small subject's head three times, a cloud twice. The local search
  of the finer scales keeps the rule (``_local``): an object too small to show on the layout
  scales (a boulder below a pixel there) is part of a region of meadow, which the layout may
  draw at several places; when the boulder showed, each of them grew one (four in one seed of a
  frame 1.2 photo widths wide). The local scales bar copies while they are small enough to
  list (query, region) pairs (``PLACE_PAIRS``: up to about 150 rows), where an object a few
  pixels across at the photo's full height has shown.
- **Patches from the photo's mirror image** (``doubled``): the keys are the photo's patches and
  its mirror image's, so a strip the collage mirrored is drawn as it lies (a trail climbing the
  other way, a cloud facing the other way, a snow field the frame cut given its other end), not
  turned back into the photo's direction. Not where the photo has a direction its mirror image
  would break (``directed``: grass blown one way, a cable, a sky lit from one side): mirrored
  there, it met the upright patches in a herringbone and in bands of light. A region held either
  way round counts as held for completeness (``nearest``'s ``twin``), and a mirrored copy is
  another copy for ``one_place``: otherwise an object came back beside its own mirror image.
- **The vertical term** (``vertical_weight``): ``weight * scale * (y_query - y_photo)**2`` is added
  to every distance (y from -1 at the top row to +1 at the bottom of each image), so a patch is
  drawn from near its own height: no rock in the sky, no cloud in the meadow.

**A layout that snapped back is drawn again** (``_layout``): from some collages the exact passes
rebuild the photo's own layout (a near copy of the photo). After the layout scales the
drawing's layout novelty against the photo (``quality/novelty.py``) is compared with its collage's;
below ``KEPT_NOVELTY`` of it, the seed draws another collage and noise (``layout_seed``), at most
``LAYOUT_DRAWS`` times, and keeps the draw that kept the most. The test is relative to the
collage, not to a fixed figure, so a photo of horizontal bands (little to rearrange) is not
pushed towards one "least like the photo" layout for every seed.

**Healing** (``heal``): where the correspondence jumps, two regions copied from different places
of the photo meet, and the plain vote steps between colours that never met there (a sky lighter
on one side of a line). Each scale's last vote is followed by a screened Poisson solve that keeps the photo's
own gradients and spreads such steps over ``HEAL_LENGTH`` of the height (at most ``HEAL_MAX`` px,
so an edge between rock and meadow at fine scales does not become a haze).

Exact search (every query against every photo patch, by matrix products on ``features``-
dimensional projections of the patches) runs while a scale has at most ``layout_pixels``
pixels: this draws the layout. Above it, a local search refines the correspondence carried up
from the scale below (PatchMatch-style: each pixel tries its own match +-1 px, its neighbours'
matches at 1, 4 and 16 px, and a few random jumps), so a 1024 px base costs seconds, not hours.

The pieces live beside this file: the searches (``Projection``, ``nearest``, ``refine_field``) in
models/patch_search.py, the one-place rule (``one_place``, ``copies``) in models/regions.py, the
vote and the healing in models/healing.py, the direction map (``directed``) in models/directed.py,
the collage and the widening in models/strips.py.

Determinism: the noise comes from ``noise.normal`` keyed by (seed, level 0, stream), random
jumps from a generator seeded by (seed, scale), and everything runs on one CPU thread, so a
base is a function of (photo, config, seed, size) alone (invariant I2).
"""

from __future__ import annotations

import contextlib
import functools
import math

import torch
import torch.nn.functional as F
from torch import nn

from ..planning import noise
from ..config import BaseConfig
from ..planning.geometry import Box
from ..quality.novelty import layout_distance
from .directed import DIRECTED_ROWS, at_size, directed
from .healing import fine_vote, heal, match_weights, vote
from .patch_search import Projection, edge_rows, field_cost, nearest, refine_field, upsample_field
from .regions import PLACE_FAR, PLACE_PAIRS, copies, field_index, one_place, regions
from .strips import reorder_strips, widen

NOISE_STREAM = 2000  # noise stream of level 0 for the coarsest scale's noise
LAYOUT_STREAM = 2100  # keys of the further layouts drawn for one seed (2101, 2102, ...)
WIDEN_STREAM = 2200  # key of the calm stretches laid into a layout wider than the photo
SEED_MASK = (1 << 63) - 1  # torch generators take 63-bit seeds; a render's seed has 64
LAYOUT_DRAWS = 4  # layouts drawn at most for one seed, while the passes rebuild the photo's layout
KEPT_NOVELTY = 0.75  # a layout is kept when it has at least this fraction of its collage's novelty


@contextlib.contextmanager
def one_thread():
    """One torch thread: matrix products and resampling round alike whatever the machine's
    thread count, so every worker draws the same base."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def resize(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(1, C, H, W) -> (1, C, h, w): bicubic, antialiased when shrinking."""
    if tuple(x.shape[-2:]) == (h, w):
        return x
    shrink = h < x.shape[-2] or w < x.shape[-1]
    return F.interpolate(x, size=(h, w), mode="bicubic", align_corners=False, antialias=shrink)


def rows(h: int) -> torch.Tensor:
    """(h,) the y coordinate of each row: -1 top .. +1 bottom."""
    return torch.linspace(-1.0, 1.0, h) if h > 1 else torch.zeros(1)


class _Projections:
    """A scale's two key images, projected once each: the blurred photo for the first pass, the
    sharp photo for the later ones, each beside its mirror image (``doubled``; the projection is
    fitted on both, so a mirrored patch is measured as well as an upright one). ``(pass) ->
    (Projection, key features)``: with ``pad``, a (k, h, 2w) feature image (every pixel of each
    half a centre, its edges repeated, so no patch runs over the seam); without, (k, 2n): the n
    centres whose patch lies inside the photo, then the n of its mirror image, each row-major."""

    def __init__(self, keys: torch.Tensor, src: torch.Tensor, p: int, k: int, seed: int, pad: bool):
        self.images, self.args, self.pad = (keys, src), (p, k, seed), pad
        self.done: dict[int, tuple[Projection, torch.Tensor]] = {}

    def __call__(self, it: int) -> tuple[Projection, torch.Tensor]:
        which = 0 if it == 0 else 1
        if which not in self.done:
            img = self.images[which]
            proj = Projection(doubled(img), *self.args)
            halves = [proj(img, pad=self.pad), proj(img.flip(-1), pad=self.pad)]
            self.done[which] = (proj, torch.cat(halves, -1) if self.pad else torch.cat([f.flatten(1) for f in halves], 1))
        return self.done[which]


def doubled(img: torch.Tensor) -> torch.Tensor:
    """(1, C, h, w) -> (1, C, h, 2w): the image beside its mirror image, the keys' coordinates:
    a match at column c >= w is the photo's column 2w - 1 - c, mirrored."""
    return torch.cat([img, img.flip(-1)], -1)


class PatchBase(nn.Module):
    """The photo kept at base scale, and the generator that draws new base images from it."""

    def __init__(self, cfg: BaseConfig):
        super().__init__()
        self.cfg = cfg
        self.register_buffer("photo", torch.zeros(0, dtype=torch.uint8))  # (1, 3, H, W), set by training

    def set_photo(self, x: torch.Tensor) -> None:
        """Keep the photo (1, 3, H, W) in [-1, 1] at base scale, as uint8."""
        self.photo = torch.clamp(torch.floor((x.detach().float().cpu() + 1) * 127.5 + 0.5), 0, 255).to(torch.uint8)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        if prefix + "photo" in state_dict:  # its shape is the photo's
            self.photo = torch.zeros_like(state_dict[prefix + "photo"])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @property
    def ready(self) -> bool:
        return self.photo.dim() == 4

    def scale_sizes(self, height: int, width: int) -> list[tuple[int, int]]:
        """(h, w) of every scale, coarsest first; the last is (height, width). The coarsest scale's
        shorter side is about ``coarsest``: its height, or for a portrait its width (the first
        drawing is at most the photo's width, so a portrait photo's width even in a wide image)."""
        c = self.cfg
        p = c.patch
        side = min(height, width, self.source_size(height)[1]) if self.ready else min(height, width)
        n = 1 if side <= c.coarsest else math.ceil(math.log(c.coarsest / side) / math.log(c.pyramid_ratio)) + 1
        sizes = []
        for s in range(n):
            f = c.pyramid_ratio ** (n - 1 - s)
            sizes.append((max(p, round(height * f)), max(p, round(width * f))))
        sizes[-1] = (height, width)
        return sizes

    @torch.no_grad()
    def generate(self, height: int, width: int, seed: int) -> torch.Tensor:
        """A new base image (1, 3, height, width) in [-1, 1], a function of (photo, config, seed, size)."""
        return self.generate_with_field(height, width, seed)[0]

    @torch.no_grad()
    def generate_with_field(self, height: int, width: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The new base image and where in the photo each of its pixels was drawn from: (2, height,
        width) int16 rows and columns of the photo resized to ``source_size(height)``; a column c
        at or past its width w is its mirror image's (the photo's column 2w - 1 - c: ``doubled``)."""
        if not self.ready:
            raise RuntimeError("the patch base holds no photo yet: train the model first")
        device = self.photo.device
        with one_thread():
            out, (fy, fx) = self._generate(height, width, seed)
        return out.to(device), torch.stack([fy, fx]).to(torch.int16)

    def source_size(self, height: int) -> tuple[int, int]:
        """(h, w) of the photo a base ``height`` rows tall is drawn from (its field's coordinates)."""
        ph, pw = self.photo.shape[2:]
        return height, max(self.cfg.patch, round(pw * height / ph))

    def _generate(self, height: int, width: int, seed: int) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        c = self.cfg
        photo = self.photo.cpu().float() / 255.0  # (1, 3, H, W) in [0, 1]
        src_width = self.source_size(height)[1]  # the photo at the new image's height
        sizes = self.scale_sizes(height, width)
        n_layout = max(1, sum(h * w <= c.layout_pixels for h, w in sizes))
        narrow = min(width, src_width)  # a wider image is drawn at the photo's width, then widened
        collage_of = functools.partial(reorder_strips, resize(photo, height, src_width), narrow, c.pieces)  # (seed) -> collage
        dh = min(DIRECTED_ROWS, height)  # where the photo has a direction: measured once, resized to each scale
        lean = directed(resize(photo, dh, max(1, round(src_width * dh / height))))
        x, nnf, src = self._layout(photo, sizes[:n_layout], (src_width, height), width, collage_of, seed, lean)
        for s, (h, w) in enumerate(sizes[n_layout:], start=n_layout):  # refine the layout's correspondence
            src, keys = self._photo_at(photo, src, h, (src_width, height))
            carried = upsample_field(nnf, (h, w), (src.shape[2], 2 * src.shape[3]), c.patch)
            nnf, weights = self._local(resize(x, h, w), keys, src, carried, seed, s, lean)
            x = heal(doubled(src), nnf, fine_vote(c.patch), weights)
        return (x * 2 - 1).clamp(-1, 1), nnf

    def _photo_at(self, photo, below, h: int, aspect: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """The photo at a scale ``h`` rows tall, and its keys: the photo as blurred as an image
        upsampled from the scale below (``below``, None at the first scale) is: GPNN's keys."""
        w = max(self.cfg.patch, round(aspect[0] * h / aspect[1]))  # aspect: (width, height)
        src = resize(photo, h, w)
        return src, (src if below is None else resize(below, h, w))

    def _layout(self, photo, sizes, aspect: tuple[int, int], width: int, collage_of, seed: int, lean):
        """The layout scales, exact search. The passes can rebuild the photo's own layout from a
        new collage (a jumble of strips snaps back); a drawing whose layout novelty fell below
        ``KEPT_NOVELTY`` x its collage's (both against the photo, at the last layout scale) is drawn
        again from another collage and noise, up to ``LAYOUT_DRAWS`` times, and the draw that kept
        the most of its collage's novelty is used. An image wider than the photo (``width``) is
        drawn at the photo's width at the first scale and widened there (``widen``). Returns
        (image, field, photo) at the last layout scale."""
        best = None
        for draw in range(LAYOUT_DRAWS):
            d = layout_seed(seed, draw)
            collage = collage_of(d)
            x = nnf = src = None
            for s, (h, w) in enumerate(sizes):
                src, keys = self._photo_at(photo, src, h, aspect)
                if x is None:  # the photo's strips in a new order, and noise, at most the photo's width
                    narrow = min(w, src.shape[-1]) if collage.shape[-1] < width else w
                    z = torch.from_numpy(noise.normal(d, 0, NOISE_STREAM, 3, Box(0, h, 0, narrow))).unsqueeze(0)
                    x = resize(collage, h, narrow) + self.cfg.noise * src.std() * z
                else:
                    x = resize(x, h, w)
                nnf = self._exact(x, keys, src, d, s, lean)
                x = heal(doubled(src), nnf, self.cfg.patch)
                if x.shape[-1] < w:  # each object placed once; calm stretches of the photo laid in
                    x = widen(x, src, w, noise.stream_key(d, 0, WIDEN_STREAM) & SEED_MASK)
                    if s == len(sizes) - 1:  # no finer layout scale to redraw the joins: this one again
                        nnf = self._exact(x, keys, src, d, s, lean)
                        x = heal(doubled(src), nnf, self.cfg.patch)
            kept = layout_distance_to(x, src) / max(layout_distance_to(resize(collage, *x.shape[2:]), src), 1e-6)
            if best is None or kept > best[0]:
                best = (kept, x, nnf, src)
            if kept >= KEPT_NOVELTY:
                break
        return best[1:]

    def _distance_terms(self, h: int, sh: int, proj: Projection) -> tuple[torch.Tensor, torch.Tensor, float]:
        r = self.cfg.patch // 2
        qy = rows(h)
        ky = rows(sh)[r : sh - r]
        weight = self.cfg.vertical_weight if self.cfg.vertical_coord else 0.0
        return qy, ky, weight * proj.variance

    def _exact(self, x, keys, src, seed, s, lean) -> tuple[torch.Tensor, torch.Tensor]:
        """Layout scales: every query patch against every photo patch, ``iterations`` times."""
        c = self.cfg
        p, r = c.patch, c.patch // 2
        h, w = x.shape[2:]
        sh, sw = src.shape[2:]
        projections = _Projections(keys, src, p, c.features, (seed * 7919 + s) & SEED_MASK, pad=False)
        kh, kw = sh - 2 * r, sw - 2 * r
        cells, flipped = regions(kh, kw)
        # the keys searched: every upright one, and the mirrored ones of regions with no direction
        # (no mirrored grass leaning the other way: ``directed``); ``keep``: their numbers of all 2n
        free = ~at_size(lean, sh, sw)[r : sh - r, r : sw - r].reshape(-1)  # centres whose patch lies inside
        keep = torch.cat([torch.ones(kh * kw, dtype=torch.bool), free[flipped]])
        place = torch.cumsum(keep, 0) - 1  # a kept key's row among the searched ones
        twin = torch.cat([flipped + kh * kw, flipped])
        twin = torch.where(keep[twin], place[twin], place)[keep]  # a key whose mirror image is not searched: itself
        keep = keep.nonzero()[:, 0]
        places = copies(w, sw)
        # the queries: the image's patches wholly inside it, as the photo's are, its edge rows
        # following the rows inside (``edge_rows``). On the coarsest scale (18-24 rows, where three
        # rows are an eighth of the height) the top rows are matched on their own: with both edges
        # following the rows inside there, the demo's seeds drew one central massif between two
        # clouds far more often (docs/quality.md, "Edge rows from the rows inside").
        top, bottom = (0 if s == 0 else r), r
        barred = None  # (query, photo region) pairs barred by one_place, for the rest of this scale
        for it in range(c.iterations):
            proj, kf = projections(it)
            kf = kf.reshape(proj.basis.shape[0], -1).T[keep]  # (nk, k)
            qf = proj(x, pad=True)[:, top : h - bottom].reshape(proj.basis.shape[0], -1).T  # (nq, k)
            qy, ky, vw = self._distance_terms(h, sh, proj)
            kyy = ky.view(-1, 1).expand(kh, kw).reshape(-1).repeat(2)[keep]
            qyy = qy[top : h - bottom].view(-1, 1).expand(h - top - bottom, w).reshape(-1)
            alpha = c.alpha if s < c.complete_scales else c.fine_alpha
            idx = keep[nearest(qf, kf, qyy, kyy, vw, alpha * proj.variance, barred=barred, cells=cells[keep], twin=twin)]
            at = idx % (kh * kw)
            ky_i, kx_i = at // kw + r, at % kw + r + sw * (idx >= kh * kw)  # the mirror image: right of the photo
            nnf = edge_rows((ky_i.view(-1, w), kx_i.view(-1, w)), top, bottom)
            if it < c.iterations - 1:  # the caller votes with the last field; bars serve the next pass
                more = one_place(idx, cells, w, kw, places, PLACE_FAR * sw, upright=kh * kw)
                barred = more if barred is None else barred | more
                x = vote(doubled(src), nnf, p)
        return nnf

    def _local(self, x, keys, src, nnf, seed, s, lean) -> tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor]:
        """Upper scales: refine the correspondence carried up from below by a local search. Before
        each pass, on scales with at most ``PLACE_PAIRS`` (query, photo region) pairs, ``one_place``
        bars the copies of a region beyond its main one, as on the layout scales. Returns the field
        and the weights its patches vote with (``match_weights``: the better a patch matched, the
        more it counts)."""
        c = self.cfg
        p, r = c.patch, c.patch // 2
        h, w = x.shape[2:]
        sh, sw = src.shape[2:]
        g = torch.Generator().manual_seed((seed * 1_000_003 + s) & SEED_MASK)
        projections = _Projections(keys, src, p, c.features, (seed * 7919 + s) & SEED_MASK, pad=True)
        shut = torch.cat([torch.zeros(sh, sw, dtype=torch.bool), at_size(lean, sh, sw).flip(-1)], -1)
        shut[:, sw - p // 2 : sw + p // 2] = True  # a patch over the seam: half the photo, half its mirror image
        cells = regions(sh, sw)[0]
        barred = None  # (query, photo region) pairs barred by one_place, while the scale is small enough
        bar = h * w * (int(cells.max()) + 1) <= PLACE_PAIRS
        places = copies(w, sw)
        for it in range(c.refine_iterations):
            if bar:
                more = one_place(field_index(nnf, sh, sw), cells, w, sw, places, PLACE_FAR * sw, upright=sh * sw)
                barred = more if barred is None else barred | more
            proj, kf = projections(it)  # kf (k, sh, 2 sw): every pixel of the photo and its mirror image a centre
            qf = proj(x, pad=True)  # (k, h, w)
            qy, _, vw = self._distance_terms(h, sh, proj)
            ky_all = rows(sh)
            ny, nx = refine_field(qf, kf, qy, ky_all, vw, nnf, p, g, shut=shut, barred=barred, cells=cells)
            nnf = edge_rows((ny[r : h - r], nx[r : h - r]), r, r)
            weights = match_weights(field_cost(qf, kf, qy, ky_all, vw, nnf))
            if it < c.refine_iterations - 1:
                x = vote(doubled(src), nnf, fine_vote(p), weights)
        return nnf, weights


def layout_seed(seed: int, draw: int) -> int:
    """The seed of a render seed's ``draw``-th layout: the seed itself first, then 63-bit keys of
    its own (no everyday seed's first draw)."""
    return seed if draw == 0 else noise.stream_key(seed, 0, LAYOUT_STREAM + draw) & SEED_MASK


def layout_distance_to(x: torch.Tensor, src: torch.Tensor) -> float:
    """The layout novelty (``quality/novelty.py``) of the image ``x`` against the photo ``src``,
    both (1, 3, h, w) in [0, 1], at the photo's own width."""
    a, p = (t[0].double().numpy() * 255 for t in (x, src))
    return layout_distance(a, p, p.shape[2])
