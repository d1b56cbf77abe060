"""The patch base generator: new scenes drawn from the photo's own patches, coarse to fine.

Each new image is made by patch nearest-neighbour generation in the manner of GPNN (Granot et
al., "Drop the GAN", CVPR 2022), with OUR-GAN's vertical positional input kept as a term of the
patch distance. No weights are learned: the model is the photo itself, kept at base scale.

    x_0       = photo_0 (resized to the new image's coarsest size) + noise * z      (seeded)
    x_s       = up(x_{s-1}), then ``iterations`` times:
                each p x p patch of x_s is replaced by its nearest patch of the photo (or of
                its mirror image: ``doubled``),
                patches vote (mean) for every pixel (above the layout scales, only the
                3 x 3 patches around it: ``fine_vote``); the scale's last vote is healed

A pyramid of scales (ratio ``pyramid_ratio``) runs from a coarsest about ``coarsest`` px on its
shorter side to the base itself; the photo is resized so that its height is the base's at every
scale, so the new image keeps the photo's vertical extent (sky above, ground below) at any width.

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
  of it, while a second copy or a torn-off piece loses them (an image keeps its width ratio of
  copies, rounded down, half the photo's width apart: ``copies``). Completeness alone let an object be taken at
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
from .strips import reorder_strips, widen

NOISE_STREAM = 2000  # noise stream of level 0 for the coarsest scale's noise
LAYOUT_STREAM = 2100  # keys of the further layouts drawn for one seed (2101, 2102, ...)
WIDEN_STREAM = 2200  # key of the calm stretches laid into a layout wider than the photo
SEED_MASK = (1 << 63) - 1  # torch generators take 63-bit seeds; a render's seed has 64
PCA_SAMPLES = 8000  # photo patches sampled to fit each scale's projection
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
            nnf = self._local(resize(x, h, w), keys, src, carried, seed, s, lean)
            x = heal(doubled(src), nnf, fine_vote(c.patch))
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
        barred = None  # (query, photo region) pairs barred by one_place, for the rest of this scale
        for it in range(c.iterations):
            proj, kf = projections(it)
            kf = kf.reshape(proj.basis.shape[0], -1).T[keep]  # (nk, k)
            qf = proj(x, pad=True).reshape(proj.basis.shape[0], -1).T  # (nq, k)
            qy, ky, vw = self._distance_terms(h, sh, proj)
            kyy = ky.view(-1, 1).expand(kh, kw).reshape(-1).repeat(2)[keep]
            qyy = qy.view(-1, 1).expand(h, w).reshape(-1)
            alpha = c.alpha if s < c.complete_scales else c.fine_alpha
            idx = keep[nearest(qf, kf, qyy, kyy, vw, alpha * proj.variance, barred=barred, cells=cells[keep], twin=twin)]
            at = idx % (kh * kw)
            ky_i, kx_i = at // kw + r, at % kw + r + sw * (idx >= kh * kw)  # the mirror image: right of the photo
            nnf = (ky_i.view(h, w), kx_i.view(h, w))
            if it < c.iterations - 1:  # the caller votes with the last field; bars serve the next pass
                more = one_place(idx, cells, w, kw, places, PLACE_FAR * sw, upright=kh * kw)
                barred = more if barred is None else barred | more
                x = vote(doubled(src), nnf, p)
        return nnf

    def _local(self, x, keys, src, nnf, seed, s, lean) -> tuple[torch.Tensor, torch.Tensor]:
        """Upper scales: refine the correspondence carried up from below by a local search. Before
        each pass, on scales with at most ``PLACE_PAIRS`` (query, photo region) pairs, ``one_place``
        bars the copies of a region beyond its main one, as on the layout scales."""
        c = self.cfg
        p = c.patch
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
            nnf = refine_field(qf, kf, qy, ky_all, vw, nnf, p, g, shut=shut, barred=barred, cells=cells)
            if it < c.refine_iterations - 1:
                x = vote(doubled(src), nnf, fine_vote(p))
        return nnf


DIRECTED = 0.5  # a region whose gradients lean one way this much is not drawn mirrored ...
DIRECTED_RAMP = 0.5  # ... nor a smooth one whose brightness ramps one way this much
DIRECTED_BOX = 1 / 8  # the lean measured over boxes this fraction of the height a side, the ramp over twice that
DIRECTED_ROWS = 256  # once, on the photo at most this many rows tall
DIRECTED_FLOOR = 0.1  # gradients weaker than this fraction of the photo's mean (a flat sky's noise) lean no way


def at_size(mask: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """A (H, W) bool map resized to (h, w) (nearest)."""
    return F.interpolate(mask[None, None].float(), size=(h, w), mode="nearest")[0, 0] > 0.5


def directed(img: torch.Tensor) -> torch.Tensor:
    """(h, w) bool: where the photo (1, 3, h, w) has a left-right direction that its mirror image
    reverses: a texture whose gradients lean one way (grass blown one way, a cable: twice the mean
    of gx * gy over the gradients' energy is 1 for lines all at 45 degrees, 0 for upright, level
    or mixed ones), or a smooth stretch whose brightness ramps one way (a sky lit from one side:
    the mean of gx over the mean of |gx|, where the energy is below the photo's mean). Mirrored
    patches from there met upright ones in a herringbone and in upright bands of light; mirrored
    rock, snow or cloud is a new view of the same place."""
    lum = img[0].mean(0)[None, None]
    gx = F.pad(lum[..., :, 2:] - lum[..., :, :-2], (1, 1, 0, 0), mode="replicate")
    gy = F.pad(lum[..., 2:, :] - lum[..., :-2, :], (0, 0, 1, 1), mode="replicate")

    def box(a, side):
        k = max(1, round(lum.shape[-2] * side)) // 2 * 2 + 1
        return F.avg_pool2d(F.pad(a, (k // 2,) * 4, mode="replicate"), k, 1)

    energy = box(gx * gx + gy * gy, DIRECTED_BOX)
    lean = 2 * box(gx * gy, DIRECTED_BOX).abs() / (energy + 1e-8) * (energy > DIRECTED_FLOOR * energy.mean())
    # over a box wider than a texture's grain, its steps up and down cancel; a ramp's add up
    ramp = box(gx, 2 * DIRECTED_BOX).abs() / (box(gx.abs(), 2 * DIRECTED_BOX) + 1e-8) * (energy < energy.mean())
    return ((lean > DIRECTED) | (ramp > DIRECTED_RAMP))[0, 0]


def layout_seed(seed: int, draw: int) -> int:
    """The seed of a render seed's ``draw``-th layout: the seed itself first, then 63-bit keys of
    its own (no everyday seed's first draw)."""
    return seed if draw == 0 else noise.stream_key(seed, 0, LAYOUT_STREAM + draw) & SEED_MASK


def layout_distance_to(x: torch.Tensor, src: torch.Tensor) -> float:
    """The layout novelty (``quality/novelty.py``) of the image ``x`` against the photo ``src``,
    both (1, 3, h, w) in [0, 1], at the photo's own width."""
    a, p = (t[0].double().numpy() * 255 for t in (x, src))
    return layout_distance(a, p, p.shape[2])


PLACE_CELL = 4  # key positions are grouped in cells this many a side: a photo region, for one_place
PLACE_NEAR = 4  # users of a region whose offsets (query - key) differ by at most this many px are one copy
PLACE_FAR = 0.5  # a wider image may draw a region again, at least this fraction of the photo's width away
PLACE_BESIDE = 4  # a copy the other way round within 1/4 of the photo's width of the kept one's users is beside it
PLACE_SLACK = 2  # an image this many px short of a whole number of photo widths counts as that many (copies)


def copies(w: int, sw: int) -> int:
    """How many copies of each photo region ``one_place`` keeps in an image ``w`` wide drawn from
    the photo ``sw`` wide at its height: the width ratio rounded down, an image ``PLACE_SLACK``
    px short of a whole number of photos counting as that many (a scale's size and the photo's
    are rounded apart). Rounded up, an image a column wider than the photo (29 px to 28) had room
    for two of every region, and a frame 1.2 photos wide drew the trail's bank at both edges."""
    return max(1, (w + PLACE_SLACK) // sw)


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


PLACE_PAIRS = 1 << 25  # local-search scales bar copies (one_place) while queries x photo regions are at most this


def field_index(nnf, sh: int, sw: int) -> torch.Tensor:
    """(h * w,) every pixel's match (a local field's: columns past ``sw`` are the mirror image's)
    as a row-major index into the photo's ``sh * sw`` pixels, then its mirror image's, as
    ``one_place`` and ``key_cells`` count them."""
    sy, sx = nnf
    mirrored = sx >= sw
    return (sy * sw + torch.where(mirrored, sx - sw, sx) + mirrored * (sh * sw)).reshape(-1)


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
        d = ((qf - kf[:, cy, cx]) ** 2).sum(0) + vw * (qy[:, None] - ky[cy]) ** 2
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


FINE_VOTE = 3  # side of the patches that vote on the local-search scales (see fine_vote)


def fine_vote(p: int) -> int:
    """The vote's patch side on the local-search scales: ``FINE_VOTE`` (at most ``p``). Where the
    correspondence is incoherent (neighbours matched to unrelated places, as across a texture like
    grass) a vote of all p x p patches averages unrelated pixels into flat grey smears that the
    finer scales keep; the 3 x 3 patches around each pixel keep the texture. The layout scales keep
    the full vote: a smaller one there let clouds spread over the massif."""
    return min(FINE_VOTE, p)


def vote(src: torch.Tensor, nnf, p: int) -> torch.Tensor:
    """(1, 3, h, w): every pixel the mean of the p x p photo patches that cover it, each placed
    by the correspondence ``nnf`` (photo row and column of every patch centre)."""
    sy, sx = nnf
    h, w = sy.shape
    r = p // 2
    img = src[0]
    acc = torch.zeros(img.shape[0], h, w)
    count = torch.zeros(1, h, w)
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            # pixel q + d receives the value at match(q) + d of the patch centred at q
            y0, y1, x0, x1 = max(0, dy), min(h, h + dy), max(0, dx), min(w, w + dx)
            cy = sy[y0 - dy : y1 - dy, x0 - dx : x1 - dx] + dy
            cx = sx[y0 - dy : y1 - dy, x0 - dx : x1 - dx] + dx
            acc[:, y0:y1, x0:x1] += img[:, cy, cx]
            count[:, y0:y1, x0:x1] += 1
    return (acc / count).unsqueeze(0)


HEAL_LENGTH = 1 / 8  # of the image's height: how far a seam's colour step is spread (screened Poisson) ...
HEAL_MAX = 12.0  # ... up to this many pixels (longer at fine scales turned rock-meadow seams into haze)


def heal(src: torch.Tensor, nnf, p: int) -> torch.Tensor:
    """The voted image with its seams healed: the image whose gradients are the photo's own
    (voted like the pixels) and whose colours stay near the vote's, at a length of ``HEAL_LENGTH``.

    Where the correspondence jumps (two regions copied from different places of the photo), the
    plain vote steps between two colours that never met in the photo: a sky lighter on one side
    of a line, a meadow's band changing tone at a column. The photo's gradients there are small,
    so the step is spread over the healing length instead; edges the photo has are kept."""
    gx = F.pad(src[..., :, 1:] - src[..., :, :-1], (0, 1))
    gy = F.pad(src[..., 1:, :] - src[..., :-1, :], (0, 0, 0, 1))
    v, vx, vy = vote(torch.cat([src, gx, gy], 1), nnf, p).split(src.shape[1], 1)
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
