"""The patch base generator (models/patches.py) and the layout-novelty measure (novelty.py):
same seed same bytes on any thread count, new layouts per seed that keep the vertical order,
checkpoints that carry the photo, levels that hold the photo's size, and a measure that calls a
stretched or mirrored photo a copy and a shuffled one new."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from ourgan_dist.quality import novelty
from ourgan_dist.config import PRESETS, PatchBaseConfig, from_dict, to_dict
from ourgan_dist.errors import ConfigError
from ourgan_dist.models import checkpoint, healing, patch_search, patches, regions
from ourgan_dist.models.directed import directed
from ourgan_dist.models.healing import fine_vote, heal, screened_poisson, vote
from ourgan_dist.models.patch_search import edge_rows, refine_field, upsample_field
from ourgan_dist.models.patches import PatchBase
from ourgan_dist.models.strips import _busy_columns, _cuts, _draw_order, reorder_strips, widen
from ourgan_dist.planning.plan import RenderPlan, choose_levels


def scene(h: int = 48, w: int = 72, seed: int = 0) -> torch.Tensor:
    """(1, 3, h, w) in [-1, 1]: blue sky with a white cloud, a grey ridge, green ground with dark
    rocks: objects at distinct heights and places."""
    g = np.random.default_rng(seed)
    y = np.linspace(0, 1, h)[:, None]
    img = np.zeros((h, w, 3))
    img[:] = np.array([0.3, 0.5, 0.9]) * (1 - y[..., None]) + np.array([0.7, 0.8, 1.0]) * y[..., None]
    ridge = (0.45 + 0.12 * np.sin(np.linspace(0, 3 * np.pi, w)))[None, :]
    img[(y > ridge) & (y < 0.6)] = [0.5, 0.5, 0.5]
    img[y[:, 0] >= 0.6] = [0.2, 0.55, 0.2]
    img[8:14, 10:24] = [1.0, 1.0, 1.0]  # the cloud
    for cx in (15, 40, 60):  # rocks
        img[int(0.75 * h) : int(0.75 * h) + 5, cx : cx + 6] = [0.15, 0.12, 0.1]
    img += g.normal(0, 0.03, img.shape)
    return torch.from_numpy(np.clip(img, 0, 1).transpose(2, 0, 1)).float().unsqueeze(0) * 2 - 1


def patch_base(**kw) -> PatchBase:
    cfg = dataclasses.replace(PRESETS["tiny"].base, **kw)
    pb = PatchBase(cfg)
    pb.set_photo(scene())
    return pb


def test_same_seed_same_bytes_on_any_thread_count_and_seeds_differ():
    pb = patch_base()
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        a = pb.generate(40, 64, seed=3)
        torch.set_num_threads(2)
        b = pb.generate(40, 64, seed=3)
    finally:
        torch.set_num_threads(old)
    assert a.shape == (1, 3, 40, 64) and torch.equal(a, b)
    assert float(a.min()) >= -1 and float(a.max()) <= 1
    c = pb.generate(40, 64, seed=4)
    assert not torch.equal(a, c)


def test_samples_keep_the_vertical_order_and_are_made_of_the_photos_colours():
    """Sky stays above ground: the mean colour of the top rows is blue, of the bottom rows green;
    every sample is a new arrangement, not the photo."""
    pb = patch_base()
    photo = pb.photo.float() / 127.5 - 1
    for seed in range(3):
        x = pb.generate(48, 72, seed)
        top, bottom = x[0, :, :8].mean(dim=(1, 2)), x[0, :, -8:].mean(dim=(1, 2))
        assert top[2] > top[1] and bottom[1] > bottom[2]  # blue above, green below
        assert float((x - photo).abs().mean()) > 0.02


def test_a_band_along_the_photos_bottom_keeps_its_height():
    """The image's edge rows follow the rows inside it (``edge_rows``), so its bottom rows are
    drawn from the photo's. Matched on their own, every scale drew them from rows further in, and
    the blocks above a 12-row dark band grew down over 7 of its rows."""
    g = torch.Generator().manual_seed(0)
    h, w = 96, 128
    img = torch.rand(1, 3, h // 8, w // 8, generator=g).repeat_interleave(8, 2).repeat_interleave(8, 3) * 0.6 + 0.3
    img = img + 0.1 * torch.rand(1, 3, h, w, generator=g)
    img[..., h - 12 :, :] = 0.0
    pb = PatchBase(PRESETS["cpu"].base)
    pb.set_photo(img * 2 - 1)
    for seed in (0, 1):
        rows = ((pb.generate(h, w, seed) + 1) / 2)[0].mean((0, 2))
        assert int((rows[h - 12 :] < 0.1).sum()) >= 10, rows[h - 16 :]
        assert float(rows[h - 16 : h - 12].min()) > 0.3  # and the blocks reach down to it


def test_round_objects_just_above_the_frame_are_not_stretched_down_to_it():
    """Bright discs on a dark ground, the lowest row of them ending 8 rows above the frame: the
    new image's bottom rows stay ground. With edge rows matched on their own, the lowest discs ran
    down to the frame as tall ovals (the brightest of the bottom 7 rows 0.47-0.53, the photo's
    0.18)."""
    h, w = 96, 128
    yy, xx = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing="ij")
    img = 0.15 + 0.05 * torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(0))
    for cy in (14, 40, 66, h - 16):
        for cx in range(12, w, 26):
            img[0, :, (yy - cy) ** 2 + (xx - cx) ** 2 <= 64] = 0.85
    pb = PatchBase(PRESETS["cpu"].base)
    pb.set_photo(img * 2 - 1)
    for seed in (0, 1):
        x = ((pb.generate(h, w, seed) + 1) / 2)[0]
        assert float(x[:, h - 7 :].mean((0, 2)).max()) < 0.3
        assert float(x[:, h - 24 : h - 8].mean((0, 2)).max()) > 0.4  # the lowest discs are still there


def test_edge_rows_follow_the_nearest_inner_row_moved_on_by_the_rows_between():
    sy = torch.tensor([[5, 6], [7, 9]])
    sx = torch.tensor([[10, 11], [12, 13]])
    ey, ex = edge_rows((sy, sx), 3, 3)  # an image 8 rows tall: the field of its rows 3 and 4
    assert ey[:, 0].tolist() == [2, 3, 4, 5, 7, 8, 9, 10]
    assert ey[:, 1].tolist() == [3, 4, 5, 6, 9, 10, 11, 12]
    assert ex.tolist() == [[10, 11]] * 4 + [[12, 13]] * 4
    ey, _ = edge_rows((sy, sx), 0, 3)  # the field of rows 0 and 1: only the bottom rows follow
    assert ey[:, 0].tolist() == [5, 7, 8, 9, 10]
    assert torch.equal(edge_rows((sy, sx), 0, 0)[0], sy)


def test_a_panorama_is_drawn_at_the_photos_height_and_any_width():
    pb = patch_base()
    x = pb.generate(48, 150, seed=1)
    assert x.shape == (1, 3, 48, 150)
    assert float(x[0, 2, :8].mean()) > float(x[0, 2, -8:].mean())  # sky across the whole width


def test_the_vertical_term_off_changes_the_draw():
    on, off = patch_base(), patch_base(vertical_coord=False)
    assert not torch.equal(on.generate(40, 60, 2), off.generate(40, 60, 2))


def test_strips_are_a_new_order_of_the_photos_columns():
    photo = scene()
    out = reorder_strips(photo, 72, 4, seed=5)
    assert out.shape == (1, 3, 48, 72)
    assert not torch.equal(out, photo) and not torch.equal(out, photo.flip(-1))
    assert torch.equal(reorder_strips(photo, 72, 4, seed=5), out)  # a function of the seed
    assert reorder_strips(photo, 50, 4, seed=5).shape == (1, 3, 48, 50)  # narrower: a window of it


def test_strip_orders_avoid_the_photos_joins_and_vary_with_the_seed():
    # five strips: orders exist with no strip beside itself or a photo neighbour (either way round)
    strips = [torch.full((1, 3, 8, 4), v) for v in (0.1, 0.3, 0.5, 0.7, 0.9)]
    drawn = set()
    for seed in range(8):
        order = _draw_order(strips, torch.Generator().manual_seed(seed))
        assert sorted(order) == [0, 1, 2, 3, 4]
        assert all(abs(b - a) > 1 for a, b in zip(order, order[1:])), order
        drawn.add(tuple(order))
    assert len(drawn) >= 4  # drawn, not the one cheapest order every time


def test_no_seed_gives_the_photo_back():
    # the photo's own order is never kept, nor its mirror image
    photo = scene(48, 96)
    for seed in range(12):
        out = reorder_strips(photo, 96, 4, seed)
        for ref in (photo, photo.flip(-1)):
            assert float((out - ref).abs().mean()) > 0.02, seed


def test_one_photo_width_shows_every_photo_column_at_most_once():
    # every column of this photo is its own random colour: a column of the collage that is not a
    # join's blend is one photo column, and none may come twice (an object shown twice)
    g = torch.Generator().manual_seed(0)
    photo = torch.rand(1, 3, 1, 90, generator=g).expand(1, 3, 30, 90).clone()
    for seed in range(12):
        out = reorder_strips(photo, 90, 4, seed)
        match = (out[0, :, 0, :, None] == photo[0, :, 0, None, :]).all(0)  # (out col, photo col)
        shown = match.nonzero()[:, 1]
        assert len(shown) >= 0.6 * 90, seed  # blends take a third of the narrowest strip a join
        assert len(set(shown.tolist())) == len(shown), seed


def test_a_collage_is_never_wider_than_the_photo():
    with pytest.raises(ValueError, match="widen"):
        reorder_strips(scene(), 73, 4, seed=0)


def bright_columns(w: int, lit: range, h: int = 24) -> torch.Tensor:
    """(1, 3, h, w): a calm grey with faint texture, every column its own shade, and a bright
    object (white) over the columns ``lit`` in the upper half."""
    g = torch.Generator().manual_seed(w)
    img = 0.4 + 0.05 * torch.rand(1, 3, 1, w, generator=g).expand(1, 3, h, w).clone()
    img[:, :, 2 : h // 2, lit.start : lit.stop] = 1.0
    return img


def test_widening_keeps_every_column_of_the_layout_and_lays_in_only_calm_ones():
    # the drawn layout: every column its own colour; the photo: one bright object in calm grey
    g = torch.Generator().manual_seed(1)
    x = 0.35 * torch.rand(1, 3, 1, 60, generator=g).expand(1, 3, 24, 60).clone()  # darker than all of the photo
    photo = bright_columns(80, range(30, 44))
    for seed in range(6):
        out = widen(x, photo, 130, seed)
        assert out.shape == (1, 3, 24, 130)
        assert torch.equal(widen(x, photo, 130, seed), out)  # a function of the seed
        row = out[0, :, 0]  # (3, 130)
        kept = (row[:, :, None] == x[0, :, 0, None, :]).all(0).nonzero()[:, 1].tolist()
        assert kept == sorted(kept) and len(set(kept)) == len(kept)  # the layout's order, each once
        assert len(kept) >= 60 - 4 * 8, seed  # a join's blend takes a few columns of each side
        assert float(out[0, :, 2:12].amax()) < 0.9, seed  # nothing of the object laid in
    assert torch.equal(widen(x, photo, 60, 0), x)  # as wide already: unchanged


def test_a_wide_base_is_drawn_at_the_photos_width_then_widened(monkeypatch):
    """The coarsest scale of an image wider than the photo is drawn at the photo's width (where
    completeness places each object once) and widened there; one as wide as the photo is not."""
    pb = patch_base()
    calls: list[tuple[int, int]] = []
    real = patches.widen

    def recording(x, photo, width, seed):
        calls.append((x.shape[-1], photo.shape[-1]))
        return real(x, photo, width, seed)

    monkeypatch.setattr(patches, "widen", recording)
    monkeypatch.setattr(patches, "KEPT_NOVELTY", 0.0)  # one layout drawn
    pb.generate(48, 72, seed=2)
    assert calls == []
    x = pb.generate(48, 150, seed=2)
    assert x.shape == (1, 3, 48, 150)
    assert len(calls) == 1 and calls[0][0] == calls[0][1]  # drawn exactly as wide as the photo there


def test_the_coarsest_scale_is_coarsest_on_its_shorter_side():
    # a portrait's first drawing is as narrow as its width: measured on rows, a patch would span
    # half of it and the passes rebuild the photo's own layout from any collage
    def coarsest(side: int) -> bool:  # within one pyramid step at or below ``coarsest``
        return 16 * 0.75 < side <= 16

    land = patch_base(coarsest=16)
    assert coarsest(land.scale_sizes(48, 72)[0][0]) and coarsest(land.scale_sizes(48, 150)[0][0])
    tall = PatchBase(dataclasses.replace(PRESETS["tiny"].base, coarsest=16))
    tall.set_photo(scene(72, 48))
    h, w = tall.scale_sizes(72, 48)[0]
    assert coarsest(w) and h > 16
    assert tall.scale_sizes(72, 96)[0][0] == h  # wider than the photo: its first drawing is the photo's width
    assert tall.generate(72, 48, seed=1).shape == (1, 3, 72, 48)


def test_a_wide_base_with_one_layout_scale_redraws_it_after_widening(monkeypatch):
    # with a single exact scale there is no finer one to heal the laid-in stretches: that scale is
    # searched again, so the field the finer scales refine matches the widened image
    pb = patch_base(layout_pixels=16)
    sizes = pb.scale_sizes(48, 150)
    assert sum(h * w <= 16 for h, w in sizes) == 0  # so the first scale alone is exact
    widths: list[int] = []
    real = PatchBase._exact

    def recording(self, x, *args):
        widths.append(x.shape[-1])
        return real(self, x, *args)

    monkeypatch.setattr(PatchBase, "_exact", recording)
    monkeypatch.setattr(patches, "KEPT_NOVELTY", 0.0)  # one layout drawn
    x, field = pb.generate_with_field(48, 150, seed=4)
    assert widths[0] < sizes[0][1] and widths[1:] == [sizes[0][1]]  # at the photo's width, then widened
    assert x.shape == (1, 3, 48, 150) and field.shape == (2, 48, 150)
    src_h, src_w = pb.source_size(48)
    assert int(field[0].min()) >= 0 and int(field[0].max()) < src_h
    assert int(field[1].min()) >= 0 and int(field[1].max()) < 2 * src_w  # past src_w: its mirror image
    assert torch.equal(pb.generate(48, 150, seed=4), x)


def test_the_field_points_at_the_pixels_drawn_mirrored_ones_in_the_mirror_image():
    pb = patch_base()
    x, field = pb.generate_with_field(48, 72, seed=2)
    src_h, src_w = pb.source_size(48)
    src = patches.resize(pb.photo.float() / 255, src_h, src_w)
    fy, fx = field.long()
    assert (fx >= src_w).any() and (fx < src_w).any()  # some of it drawn mirrored
    drawn = (x[0] + 1) / 2
    read = patches.doubled(src)[0][:, fy, fx]
    upright = src[0][:, fy, torch.where(fx >= src_w, fx - src_w, fx)]  # mirrored columns misread as the photo's
    mirrored = fx >= src_w
    assert float((read - drawn).abs()[:, mirrored].mean()) < 0.5 * float((upright - drawn).abs()[:, mirrored].mean())


def stripes(angle: float, h: int = 64, w: int = 96) -> torch.Tensor:
    """(1, 3, h, w) in [0, 1]: stripes whose lines run at ``angle`` degrees from level."""
    y, x = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    t = math.radians(angle)
    v = 0.5 + 0.4 * torch.sin((x * math.sin(t) - y * math.cos(t)) / 2)
    return v.float().expand(1, 3, h, w).clone()


def test_directed_finds_a_lean_or_a_lit_side_and_not_upright_level_or_mixed_detail():
    share = lambda img: float(directed(img).float().mean())  # noqa: E731
    assert share(stripes(45)) > 0.9 and share(stripes(-45)) > 0.9  # leaning either way
    assert share(stripes(90)) < 0.1 and share(stripes(0)) < 0.1  # upright or level: its own mirror image
    g = torch.Generator().manual_seed(0)
    ground = torch.rand(1, 3, 32, 96, generator=g)
    assert share(ground) < 0.1  # no direction
    for sky, lit_from_a_side in (
        (torch.linspace(0.5, 0.9, 96).expand(1, 3, 32, 96), True),  # brighter to the right
        (torch.linspace(0.5, 0.9, 32)[:, None].expand(1, 3, 32, 96), False),  # brighter downwards: its own mirror image
    ):
        d = directed(torch.cat([sky, ground], 2))
        top = float(d[:24].float().mean())
        assert top > 0.9 if lit_from_a_side else top < 0.1
        assert float(d[40:].float().mean()) < 0.1


def test_a_photo_with_a_direction_is_never_drawn_mirrored():
    pb = PatchBase(PRESETS["tiny"].base)
    pb.set_photo(stripes(60, 48, 72) * 2 - 1)
    for seed in range(2):
        _, field = pb.generate_with_field(48, 72, seed)
        assert int(field[1].max()) < pb.source_size(48)[1]


def test_cuts_go_round_a_sun_in_a_calm_sky():
    # a bright disc in a smooth sky over a textured ground: its centre column changes little
    # across, yet a cut there made two half suns that the passes completed into two
    rng = np.random.default_rng(1)
    h, w, cx, r = 96, 192, 100, 14
    y, x = np.mgrid[0:h, 0:w]
    img = np.zeros((3, h, w))
    img[:] = 0.4 + 0.4 * y / h
    img[:, h // 2 :] = rng.uniform(0.1, 0.6, (3, h - h // 2, w))  # ground
    sun = np.clip(1.5 - np.hypot(x - cx, y - 25) / r, 0, 1)
    img = np.maximum(img, sun[None] * (y[None] < h // 2))
    photo = torch.from_numpy(img).float().unsqueeze(0)
    cuts = [c for seed in range(30) for c in _cuts(_busy_columns(photo), 4, torch.Generator().manual_seed(seed))]
    assert len(cuts) >= 30
    assert not [c for c in cuts if abs(c - cx) < r]  # the disc outshines the sky (0.5) within r of its centre


def test_a_layout_the_passes_rebuilt_into_the_photos_is_drawn_again(monkeypatch):
    """When the exact passes turn a new collage back into the photo's layout, the seed draws
    another collage and noise; the redraw is itself a function of the seed."""
    pb = patch_base()
    first = pb.generate(40, 64, seed=3)
    real = patches.layout_distance_to
    measured: list[float] = []

    def first_draw_snapped_back(x, src):  # the first call of a draw measures its result
        measured.append(real(x, src))
        return 0.0 if len(measured) == 1 else measured[-1]

    monkeypatch.setattr(patches, "layout_distance_to", first_draw_snapped_back)
    redrawn = pb.generate(40, 64, seed=3)
    assert len(measured) >= 4  # a second draw was made and measured
    assert not torch.equal(redrawn, first)
    measured.clear()
    assert torch.equal(pb.generate(40, 64, seed=3), redrawn)


def test_a_seeds_further_layouts_are_keyed_apart_from_other_seeds():
    keys = {patches.layout_seed(seed, d) for seed in range(200) for d in range(1, patches.LAYOUT_DRAWS)}
    assert len(keys) == 200 * (patches.LAYOUT_DRAWS - 1)
    assert min(keys) > 2**40  # not the first draw of any everyday seed
    assert patches.layout_seed(7, 0) == 7


def test_the_largest_render_seed_draws_a_base():
    x = patch_base().generate(40, 64, seed=2**64 - 1)
    assert x.shape == (1, 3, 40, 64) and bool(torch.isfinite(x).all())


def test_completeness_spreads_matches_and_a_large_alpha_is_plain_nearest():
    # three queries all nearest to key 0; key 1 is a little further from each
    k = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    q = torch.tensor([[0.1, 0.0], [0.15, 0.0], [0.45, 0.0]])
    qy, ky = torch.zeros(3), torch.zeros(2)
    assert patch_search.nearest(q, k, qy, ky, 0.0, 1e6).tolist() == [0, 0, 0]
    # with strong completeness key 1, which no query holds, wins the query nearest to it
    assert patch_search.nearest(q, k, qy, ky, 0.0, 0.01).tolist() == [0, 0, 1]


def test_completeness_is_weaker_after_the_first_layout_scales(monkeypatch):
    pb = patch_base(complete_scales=2, iterations=2, alpha=0.05, fine_alpha=0.4)
    sizes = pb.scale_sizes(40, 64)
    n_layout = sum(h * w <= pb.cfg.layout_pixels for h, w in sizes)
    assert n_layout >= 3  # the test needs a layout scale after the complete ones
    passes: list[float] = []  # each exact pass's alpha, over its scale's patch variance
    variances: list[float] = []  # of every projection made, in order (a layout scale makes 2)
    real_nearest, real_projection = patches.nearest, patches.Projection

    class Recorded(real_projection):
        def __init__(self, *args):
            super().__init__(*args)
            variances.append(self.variance)

    def recording(q, k, qy, ky, vw, alpha, chunk=2048, **barring):
        passes.append(alpha / variances[-1])
        return real_nearest(q, k, qy, ky, vw, alpha, chunk, **barring)

    monkeypatch.setattr(patches, "nearest", recording)
    monkeypatch.setattr(patches, "Projection", Recorded)
    monkeypatch.setattr(patches, "KEPT_NOVELTY", 0.0)  # one layout drawn
    pb.generate(40, 64, seed=1)
    assert passes == pytest.approx([0.05] * 4 + [0.4] * 2 * (n_layout - 2))


def test_a_seam_between_two_shades_of_sky_is_spread_and_a_real_edge_is_kept():
    # a photo whose sky brightens from left to right, above a sharp dark ground
    h, w = 96, 192
    photo = torch.linspace(0.3, 0.7, w).view(1, 1, 1, w).expand(1, 3, h, w).clone()
    photo[..., 72:, :] = 0.05  # the ground: a real edge at row 72
    sy, sx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    sy = sy.clamp(3, h - 4)
    # the left half copies the photo's right end, the right half its left end: one seam at column 96
    sx = torch.where(sx < 96, sx + 90, sx - 90).clamp(3, w - 4)
    plain, healed = vote(photo, (sy, sx), 7), heal(photo, (sy, sx), 7)

    def jump(x):  # the largest change between neighbouring sky columns around the seam
        sky = x[..., 10:60, 76:116]
        return float((sky[..., 1:] - sky[..., :-1]).abs().max())

    assert jump(plain) > 0.04  # the vote steps from light to dark over its 7 px
    assert jump(healed) < 0.5 * jump(plain)  # healing spreads the step
    edge = lambda x: float((x[..., 69, 10:180] - x[..., 75, 10:180]).mean())  # noqa: E731
    assert edge(healed) > 0.8 * edge(plain) > 0.2  # the sky-ground edge stays


def test_screened_poisson_of_an_image_and_its_own_gradients_is_the_image():
    x = scene()[..., :24, :36]
    gx = torch.nn.functional.pad(x[..., 1:] - x[..., :-1], (0, 1))
    gy = torch.nn.functional.pad(x[..., 1:, :] - x[..., :-1, :], (0, 0, 0, 1))
    torch.testing.assert_close(screened_poisson(x, gx, gy, 5.0), x, atol=1e-4, rtol=0)


def test_vote_of_an_identity_field_gives_the_photo_back():
    photo = scene()[..., :30, :40]
    sy, sx = torch.meshgrid(torch.arange(30), torch.arange(40), indexing="ij")
    sy, sx = sy.clamp(3, 26), sx.clamp(3, 36)  # centres whose 7x7 patch lies inside
    out = vote((photo + 1) / 2, (sy, sx), 7)
    inner = (slice(None), slice(None), slice(6, 24), slice(6, 34))
    torch.testing.assert_close(out[inner], ((photo + 1) / 2)[inner])
    up = upsample_field((sy, sx), (60, 80), (60, 80), 7)
    assert up[0].shape == (60, 80) and int(up[0].min()) >= 3 and int(up[1].max()) <= 76


def test_a_local_pass_carries_a_neighbours_match_on_by_its_own_step():
    """Propagation: a column whose matches are 20 px off, between columns that match the photo
    exactly, takes its left or right neighbour's match moved by one column (the coherent
    continuation) in a single pass; a sign error here proposed the match two columns away and
    left such columns wrong (and locally stretched fields everywhere)."""
    g = torch.Generator().manual_seed(0)
    photo = torch.rand(3, 64, 64, generator=g)  # every patch unique
    sy, sx = torch.meshgrid(torch.arange(64), torch.arange(64), indexing="ij")
    sy, sx = sy.clamp(3, 60), sx.clamp(3, 60)
    wrong_x = sx.clone()
    wrong_x[:, 30] = 50
    qy = torch.linspace(-1, 1, 64)
    by, bx = refine_field(photo, photo, qy, qy, 0.0, (sy.clone(), wrong_x), 7, torch.Generator().manual_seed(1))
    assert torch.equal(bx[8:56, 30], sx[8:56, 30]) and torch.equal(by[8:56, 8:56], sy[8:56, 8:56])


def test_the_fine_vote_keeps_a_textures_contrast_where_matches_disagree():
    """Inside a texture neighbouring pixels match unrelated places: the full 7x7 vote averages
    them into grey, the fine scales' 3x3 vote keeps most of the contrast; where matches agree
    both give the photo back."""
    g = torch.Generator().manual_seed(0)
    texture = torch.rand(1, 3, 40, 40, generator=g)
    incoherent = (torch.randint(3, 37, (40, 40), generator=g), torch.randint(3, 37, (40, 40), generator=g))
    full, fine = vote(texture, incoherent, 7), vote(texture, incoherent, fine_vote(7))
    assert fine_vote(7) == 3 and fine_vote(1) == 1
    assert float(fine.std()) > 2 * float(full.std())
    sy, sx = torch.meshgrid(torch.arange(40), torch.arange(40), indexing="ij")
    same = vote(texture, (sy.clamp(3, 36), sx.clamp(3, 36)), fine_vote(7))
    torch.testing.assert_close(same[..., 4:36, 4:36], texture[..., 4:36, 4:36])


def test_a_patch_that_matched_well_outvotes_one_that_did_not():
    """Where matches disagree, the plain mean blends the patches into a ghost; weighed by how well
    each matched, a pixel takes the good patches' value. A field copying the photo, with every
    other column's patch matched badly (to a spot 8 px off): the weighted vote gives the photo
    back nearly exactly, the plain vote does not; equal distances weigh alike."""
    g = torch.Generator().manual_seed(0)
    photo = torch.rand(1, 3, 40, 40, generator=g)
    sy, sx = torch.meshgrid(torch.arange(40), torch.arange(40), indexing="ij")
    sy, sx = sy.clamp(1, 38), sx.clamp(1, 38)
    bad = (sx % 2 == 1) & (sx < 30)
    field = (sy, torch.where(bad, sx + 8, sx))
    cost = torch.where(bad, 10.0, 0.1)  # the distances the search measured
    plain = vote(photo, field, 3)[..., 2:38, 2:28]
    weighed = vote(photo, field, 3, healing.match_weights(cost))[..., 2:38, 2:28]
    truth = photo[..., 2:38, 2:28]
    assert float((weighed - truth).abs().mean()) < 0.01 < 0.1 < float((plain - truth).abs().mean())
    torch.testing.assert_close(healing.match_weights(torch.full((4, 4), 3.0)), torch.full((4, 4), math.exp(-1 / healing.SHARPNESS)))
    assert float(healing.match_weights(torch.tensor([0.0, 1.0, 1e9])).min()) > 0  # every pixel keeps a weight


def test_checkpoint_keeps_the_photo_and_renders_the_same(tmp_path, photo):
    from ourgan_dist.train import train_model

    train_model(photo, str(tmp_path / "m"), preset="tiny", iterations=0, seed=1, device="cpu", progress=False)
    model = checkpoint.load(str(tmp_path / "m"))
    assert model.config.base.kind == "patches"
    assert tuple(model.base.photo.shape[2:]) == (model.config.base.base_height, model.config.base.base_width)
    assert model.base.photo.dtype == torch.uint8
    again = checkpoint.load(str(tmp_path / "m"))
    assert torch.equal(model.base.generate(20, 30, 7), again.base.generate(20, 30, 7))


def test_levels_give_the_largest_base_no_taller_than_the_kept_photo():
    assert choose_levels(2560, 1600, 1024, 7, base_height=640) == (1, 400, 640)
    assert choose_levels(4096, 2560, 1024, 7, base_height=640) == (1, 640, 1024)
    assert choose_levels(16384, 10240, 1024, 7, base_height=640) == (2, 640, 1024)
    assert choose_levels(5120, 1600, 1024, 7, base_height=640) == (1, 400, 1280)  # a panorama: as tall, wider
    assert choose_levels(600, 400, 1024, 7, base_height=640) == (0, 400, 600)  # no SR level needed
    base = dataclasses.replace(PatchBaseConfig(), base_width=1024, base_height=640)
    plan = RenderPlan.create(2560, 1600, base=base, sr=PRESETS["cpu"].sr, tile=512)
    assert (plan.n_sr, plan.base_width, plan.base_height) == (1, 640, 400)


def test_config_kinds_round_trip_and_bad_values_name_the_field():
    for name in ("tiny", "cpu", "paper"):
        cfg = PRESETS[name]
        assert from_dict(type(cfg), to_dict(cfg)) == cfg
    assert PRESETS["cpu"].base.kind == "patches" and PRESETS["paper"].base.kind == "gan"
    with pytest.raises(ConfigError, match="patch"):
        PatchBaseConfig(patch=6)
    with pytest.raises(ConfigError, match="alpha"):
        PatchBaseConfig(alpha=-1)
    with pytest.raises(ConfigError, match="complete_scales"):
        PatchBaseConfig(complete_scales=-1)
    with pytest.raises(ConfigError, match="fine_alpha"):
        PatchBaseConfig(fine_alpha=-0.1)
    with pytest.raises(ConfigError, match="kind"):
        from_dict(type(PRESETS["cpu"]), {**to_dict(PRESETS["cpu"]), "base": {"kind": "diffusion"}})


def test_an_untrained_patch_base_says_so():
    with pytest.raises(RuntimeError, match="no photo"):
        PatchBase(PatchBaseConfig()).generate(20, 20, 0)


# ---- layout novelty ----------------------------------------------------------------------------


def test_novelty_calls_a_stretched_or_mirrored_photo_a_copy_and_a_shuffled_one_new():
    photo = (scene(60, 96).numpy()[0] + 1) * 127.5
    _, h, w = photo.shape
    xs = (np.linspace(0, 1, w) ** 1.3 * (w - 1)).round().astype(int)
    assert novelty.layout_distance(photo, photo) < 1e-9
    assert novelty.layout_distance(photo[:, :, ::-1], photo) < 1e-9
    stretched = novelty.layout_distance(photo[:, :, xs], photo)
    swapped = novelty.layout_distance(novelty.quarters_swapped(photo), photo)
    assert stretched < 8 and swapped > 3 * stretched
    wider = np.concatenate([photo, photo[:, :, ::-1]], axis=2)  # a panorama of two copies is no copy
    assert novelty.layout_distance(wider, photo) > stretched
    res = novelty.novelty([photo[:, :, xs], novelty.quarters_swapped(photo)], photo)
    assert res["per_seed"][0] < res["per_seed"][1] and len(res["between_seeds"]) == 1
    assert res["stretched_mirrored"] < res["quarters_swapped"]


def _copies(w: int, kw: int, blocks) -> torch.Tensor:
    """Queries of an image 8 rows by ``w`` that copy keys (a field ``kw`` wide): each block
    (query column x0, width, key column k0) copies keys k0.. at its own offset; the rest copy key column 0."""
    idx = torch.zeros(8, w, dtype=torch.long)
    for x0, width, k0 in blocks:
        for y in range(8):
            idx[y, x0 : x0 + width] = y * kw + k0 + torch.arange(width)
    return idx.reshape(-1)


def test_one_place_keeps_an_objects_main_copy_and_bars_a_second_one():
    kw, w = 40, 40
    cells = regions.key_cells(8, kw, regions.PLACE_CELL)
    # keys 20..27 copied twice: whole (with a wide block around it) at x 0..19, and again at x 30..37
    idx = _copies(w, kw, [(0, 28, 0), (30, 8, 20)])
    barred = regions.one_place(idx, cells, w, kw, places=1, far=20)
    second = torch.tensor([y * w + x for y in range(8) for x in range(30, 38)])
    first = torch.tensor([y * w + x for y in range(8) for x in range(20, 28)])
    for q in second:  # the second copy may no longer use the regions it copied
        assert barred[q, cells[idx[q]]]
    for q in first:  # the main copy keeps them
        assert not barred[q, cells[idx[q]]]
    # a wider image may draw the region again, far enough away
    again = regions.one_place(idx, cells, w, kw, places=2, far=5)
    assert not any(again[q, cells[idx[q]]] for q in second)
    assert all(regions.one_place(idx, cells, w, kw, places=2, far=20)[q, cells[idx[q]]] for q in second)


def test_one_place_takes_an_object_beside_its_own_mirror_image_for_two_copies():
    # one offset in the keys' coordinates (the photo, then its mirror image) runs from the photo's
    # columns 20..39 on into their mirror image: the object beside itself mirrored
    kh, kw, w = 8, 40, 40
    cells = regions.key_cells(kh, kw, regions.PLACE_CELL)
    flipped = torch.arange(kh * kw).view(kh, kw).flip(-1).reshape(-1)
    cells = torch.cat([cells, cells[flipped]])
    d = torch.arange(w) + 20  # each query column's key column, the mirror image's from kw on
    idx = torch.stack([torch.where(d < kw, y * kw + d, kh * kw + y * kw + d - kw) for y in range(kh)]).reshape(-1)
    barred = regions.one_place(idx, cells, w, kw, places=1, far=20, upright=kh * kw)
    q = torch.arange(kh * w)
    held = ~barred[q, cells[idx]]
    upright = idx < kh * kw
    for c in cells[idx].unique():  # no region kept by both the copy and its mirror image
        users = cells[idx] == c
        assert not ((held & users & upright).any() and (held & users & ~upright).any())
    assert (held & upright).any() or (held & ~upright).any()
    # the mirrored half beside the kept copy is barred from the regions around it as well (when
    # barred from one region it took the next); the copy kept is barred from nothing
    extra = barred.clone()
    extra[q, cells[idx]] = False
    assert extra[~upright].any() and not extra[upright].any()


def test_completeness_counts_a_patch_held_mirrored_as_held():
    # keys: a, a mirrored, b; one query is a itself, the other a little nearer a mirrored than b
    k = torch.tensor([[0.0, 0.0], [4.0, 0.0], [0.0, 4.2]])
    q = torch.tensor([[0.0, 0.0], [2.0, 2.0]])
    y = torch.zeros(3)
    assert patch_search.nearest(q, k, y[:2], y, 0.0, 0.01).tolist() == [0, 1]
    # a is held, so its mirror image is too: the second query takes what the image lacks
    assert patch_search.nearest(q, k, y[:2], y, 0.0, 0.01, twin=torch.tensor([1, 0, 2])).tolist() == [0, 2]


def test_nearest_never_returns_a_barred_region():
    torch.manual_seed(0)
    k = torch.randn(64, 4)
    q = k[:16] + 0.01 * torch.randn(16, 4)  # each query's nearest key is its own
    y = torch.zeros(64)
    cells = torch.arange(64) // 4
    barred = torch.zeros(16, 16, dtype=torch.bool)
    barred[torch.arange(16), cells[:16]] = True
    free = patch_search.nearest(q, k, y[:16], y, 0.0, 1e6)
    assert torch.equal(free, torch.arange(16))
    out = patch_search.nearest(q, k, y[:16], y, 0.0, 1e6, barred=barred, cells=cells)
    assert not barred[torch.arange(16), cells[out]].any()


def test_an_image_as_wide_as_the_photo_keeps_one_copy_of_each_region_at_every_scale(monkeypatch):
    # the scales' sizes and the photo's are rounded apart: at 48x72 three layout scales are a
    # column wider than the photo at their height (10 to 9, 17 to 16, 23 to 22), which counted as
    # room for a second copy of every region
    pb = patch_base(layout_pixels=2000)
    places: list[int] = []
    real = patches.one_place

    def recording(idx, cells, w, kw, n, far, **kw_):
        places.append(n)
        return real(idx, cells, w, kw, n, far, **kw_)

    monkeypatch.setattr(patches, "one_place", recording)
    pb.generate(48, 72, seed=0)
    assert places and set(places) == {1}
    places.clear()
    pb.generate(48, 144, seed=0)  # twice as wide: still one (a second copy would be under two photo widths away)
    assert places and set(places) == {1}
    places.clear()
    pb.generate(48, 216, seed=0)  # three times as wide: two copies, at the scales drawn at full width
    assert 2 in places and 3 not in places


def test_the_local_search_draws_a_region_of_the_photo_at_one_place():
    """The finer scales' local search bars a second copy of a photo region as the layout scales
    do: a field carrying the photo once and a stretch of it again 40 px on (an object whose meadow
    the layout drew twice) keeps the photo and moves the second copy off that stretch, while the
    same photo carried once comes back as it went in."""
    pb = patch_base()
    r = pb.cfg.patch // 2
    g = torch.Generator().manual_seed(0)
    src = torch.rand(1, 3, 32, 48, generator=g)  # every patch unique
    lean = torch.zeros(32, 48, dtype=torch.bool)
    sy, sx = torch.meshgrid(torch.arange(32), torch.arange(72), indexing="ij")
    sx = torch.where(sx < 48, sx, sx - 40)  # columns 48..71 copy the photo's 8..31 again
    carried = (sy.clamp(r, 31 - r), sx.clamp(r, 47 - r))
    x = vote(patches.doubled(src), carried, pb.cfg.patch)

    def kept(out, field, cols):  # the share of pixels whose match the search left where it was carried
        same = (out[0] == field[0]) & (out[1] == field[1])
        return float(same[r : 32 - r, cols].float().mean())

    out, _ = pb._local(x, src, src, carried, 0, 1, lean)
    assert kept(out, carried, slice(r, 48 - r)) > 0.95  # the photo's own layout stays
    assert kept(out, carried, slice(52, 68)) < 0.1  # the second copy moved off (unbarred, 0.98 of it stayed)
    alone = (sy[:, :48].clamp(r, 31 - r), sx[:, :48].clamp(r, 47 - r))
    assert kept(pb._local(src, src, src, alone, 0, 1, lean)[0], alone, slice(r, 48 - r)) > 0.95


def test_a_local_pass_never_takes_a_barred_region():
    g = torch.Generator().manual_seed(0)
    photo = torch.rand(3, 32, 32, generator=g)
    sy, sx = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
    sy, sx = sy.clamp(3, 28), sx.clamp(3, 28)
    cells = regions.key_cells(32, 16, regions.PLACE_CELL)
    cells = torch.cat([cells, cells])  # the keys image is read as a photo 16 wide and its "mirror image"
    barred = torch.zeros(32 * 32, int(cells.max()) + 1, dtype=torch.bool)
    q = torch.arange(32 * 32)
    barred[q, cells[regions.field_index((sy, sx), 32, 16)]] = True  # every query barred from its own match's region
    qy = torch.linspace(-1, 1, 32)
    by, bx = refine_field(photo, photo, qy, qy, 0.0, (sy, sx), 7, torch.Generator().manual_seed(1), barred=barred, cells=cells)
    taken = cells[regions.field_index((by, bx), 32, 16)]
    assert not barred[q, taken].any()


def test_copies_of_a_region_fit_two_photo_widths_apart():
    # a frame 1.2 photos wide with two copies drew the trail's bank at both edges; a panorama twice
    # the photo's width with two drew its one table two or three times
    widths = (100, 101, 120, 198, 200, 250, 297, 298, 300, 498, 500)
    assert [regions.copies(w, 100) for w in widths] == [1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 3]
    assert regions.copies(20, 100) == 1
