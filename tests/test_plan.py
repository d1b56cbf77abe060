"""Pure planning: property tests of levels, tiles, halos, chunk grid and dependencies."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ourgan_dist.config import BaseConfig, SRConfig
from ourgan_dist.errors import PlanError
from ourgan_dist.models.sr_architecture import sr_architecture
from ourgan_dist.planning.plan import SCALE, Box, RenderPlan, TileKey, choose_levels, chunk_for_tile, parse_size

BASE = BaseConfig(base_width=32, coarsest_width=12, n_scales=3, channels=8, convs_per_stage=3, vae_scales=1, latent_channels=4)
SR = SRConfig(features=8, growth=4, blocks=1, rdbs_per_block=1, dense_convs=3)


def make(w, h, tile, chunk, halo="exact"):
    return RenderPlan.create(w, h, base=BASE, sr=SR, tile=tile, halo=halo, chunk=chunk)


plans = st.builds(
    lambda w, h, k, c, halo: make(w, h, k * c, c, halo),
    st.integers(24, 700),
    st.integers(24, 700),
    st.integers(0, 6),
    st.sampled_from([4, 8, 16, 32]),
    st.one_of(st.just("exact"), st.integers(0, 40)),
)


@settings(max_examples=150, deadline=None)
@given(plans)
def test_tiles_cover_each_level_exactly_once(plan):
    for lv in plan.levels:
        count = np.zeros((lv.stored_height, lv.stored_width), np.int32)
        for key in plan.tiles(lv.index):
            c = plan.core(key)
            assert 0 <= c.y0 < c.y1 <= lv.stored_height and 0 <= c.x0 < c.x1 <= lv.stored_width
            count[c.y0 : c.y1, c.x0 : c.x1] += 1
        assert (count == 1).all()


@settings(max_examples=150, deadline=None)
@given(plans)
def test_levels_are_x4_and_cover_the_request(plan):
    assert plan.levels[0].height == plan.base_height
    for a, b in zip(plan.levels, plan.levels[1:]):
        assert (b.height, b.width) == (SCALE * a.height, SCALE * a.width)
    last = plan.levels[-1]
    assert (last.stored_width, last.stored_height) == (plan.width, plan.height)
    assert last.width >= plan.width and last.height >= plan.height
    assert last.width - plan.width < SCALE**plan.n_sr and last.height - plan.height < SCALE**plan.n_sr


@settings(max_examples=150, deadline=None)
@given(plans)
def test_halos_clip_at_borders_and_cover_the_receptive_field(plan):
    for lv in plan.levels[1:]:
        src = plan.levels[lv.index - 1]
        for key in plan.tiles(lv.index):
            core, win = plan.source_core(key), plan.source_window(key)
            assert 0 <= win.y0 and win.y1 <= src.height and 0 <= win.x0 and win.x1 <= src.width
            assert win.contains(core)
            # every side reaches halo px beyond the core, or stops at the level border
            assert win.y0 == max(0, core.y0 - plan.halo) and win.y1 == min(src.height, core.y1 + plan.halo)
            assert win.x0 == max(0, core.x0 - plan.halo) and win.x1 == min(src.width, core.x1 + plan.halo)
            # the x4 output of the source core covers the tile
            c = plan.core(key)
            assert SCALE * core.y0 <= c.y0 and c.y1 <= SCALE * core.y1


@settings(max_examples=40, deadline=None)
@given(plans)
def test_dependencies_are_exactly_the_tiles_that_cover_the_window(plan):
    for lv in plan.levels[1:]:
        below = [(k, plan.core(k)) for k in plan.tiles(lv.index - 1)]  # (key, core) of the level read
        for key in plan.tiles(lv.index):
            win = plan.source_window(key)
            deps = set(plan.dependencies(key))
            want = {k for k, core in below if core.intersects(win)}
            assert deps == want


@settings(max_examples=100, deadline=None)
@given(plans)
def test_tiles_write_whole_chunks(plan):
    for lv in plan.levels:
        ch, cw = plan.chunk_shape(lv.stored_height, lv.stored_width)
        for key in plan.tiles(lv.index):
            c = plan.core(key)
            assert c.y0 % ch == 0 and c.x0 % cw == 0
            assert c.y1 % ch == 0 or c.y1 == lv.stored_height
            assert c.x1 % cw == 0 or c.x1 == lv.stored_width


def _whole_objects(box, extent, side):
    """Whether ``box`` covers whole ``side`` objects of an array of ``extent`` (y, x)."""
    (h, w), (sh, sw) = extent, side
    return box.y0 % sh == 0 and box.x0 % sw == 0 and (box.y1 % sh == 0 or box.y1 == h) and (box.x1 % sw == 0 or box.x1 == w)


@settings(max_examples=150, deadline=None)
@given(plans)
def test_shards_are_whole_chunks_and_one_per_task(plan):
    """Every image array's shard is a whole number of its chunks; a tile of an SR level and a
    pyramid block are each exactly one shard (one storage object), the base writes whole shards."""
    for lv in plan.levels:
        extent = (lv.stored_height, lv.stored_width)
        chunks, shards = plan.chunk_shape(*extent), plan.level_shards(lv.index)
        if plan.tile == 0:
            assert shards is None
            continue
        assert shards[0] % chunks[0] == 0 and shards[1] % chunks[1] == 0
        for key in plan.tiles(lv.index):
            c = plan.core(key)
            assert _whole_objects(c, extent, shards)
            if lv.index > 0:
                assert (c.y0 // shards[0], c.x0 // shards[1]) == (key.ty, key.tx)
                assert c.height == min(shards[0], extent[0] - c.y0) and c.width == min(shards[1], extent[1] - c.x0)
    assert plan.array_shards(0) == plan.level_shards(plan.final_level)
    for s in range(1, len(plan.pyramid_shapes)):
        extent = plan.pyramid_shapes[s]
        chunks, shards = plan.chunk_shape(*extent), plan.pyramid_shards(s)
        assert plan.array_shards(s) == shards
        assert shards[0] % chunks[0] == 0 and shards[1] % chunks[1] == 0
        for key in plan.pyramid_tasks(s):
            b = plan.pyramid_block(key)
            assert (b.y0 // shards[0], b.x0 // shards[1]) == (key.ty, key.tx)
            assert b.height == min(shards[0], extent[0] - b.y0) and b.width == min(shards[1], extent[1] - b.x0)


def test_shards_of_odd_sizes():
    """A 53x37 request at tile 16, chunk 8: edge shards are cut at the array edge, never padded
    into a neighbour's; a level narrower than a tile is one shard rounded up to whole chunks."""
    plan = RenderPlan(width=53, height=37, n_sr=1, base_height=10, base_width=14, tile=16, halo=2, receptive_radius=2, chunk=8)
    assert plan.level_shards(1) == (16, 16) and plan.tile_grid(1) == (3, 4)
    assert plan.core(TileKey(1, 2, 3)) == Box(32, 37, 48, 53)
    assert plan.chunk_shape(10, 14) == (8, 8) and plan.level_shards(0) == (16, 16)  # base: 10x14 in one shard
    assert plan.pyramid_shapes == ((37, 53), (19, 27), (10, 14), (5, 7))
    assert plan.pyramid_shards(1) == (16, 16) and plan.pyramid_shards(3) == (5, 7)


@settings(max_examples=100, deadline=None)
@given(plans)
def test_pyramid_blocks_cover_each_scale_and_halve(plan):
    shapes = plan.pyramid_shapes
    assert shapes[0] == (plan.height, plan.width)
    assert max(shapes[-1]) <= plan.chunk
    for s in range(1, len(shapes)):
        assert shapes[s] == (-(-shapes[s - 1][0] // 2), -(-shapes[s - 1][1] // 2))
        total = sum(plan.pyramid_block(k).area for k in plan.pyramid_tasks(s))
        assert total == shapes[s][0] * shapes[s][1]
        for k in plan.pyramid_tasks(s):
            b = plan.pyramid_block(k)
            assert b.y0 % plan.chunk == 0 and b.x0 % plan.chunk == 0


def test_single_tile_halo_larger_than_tile_and_odd_sizes():
    plan = make(371, 533, tile=4, chunk=4, halo=30)  # halo far larger than a tile
    assert plan.halo > plan.tile
    key = plan.tiles(plan.final_level)[0]
    assert plan.source_window(key).y0 == 0  # clipped at the top border
    assert plan.n_sr >= 1
    one = make(371, 533, tile=0, chunk=4)
    assert all(len(one.tiles(lv.index)) == 1 for lv in one.levels)
    assert one.levels[-1].stored_width == 371 and one.levels[-1].stored_height == 533


def test_untiled_plan_has_one_task_per_level_and_exact_halo():
    plan = make(500, 333, 0, 16)
    assert plan.exact and plan.halo == sr_architecture(SR).receptive_radius
    assert plan.n_tiles == plan.n_sr + 1


def test_base_width_lands_near_trained_width():
    for w in (32, 100, 128, 500, 4096, 16384):
        n, bh, bw = choose_levels(w, w, 32)
        assert 16 <= bw <= 64 or n == 0


@pytest.mark.parametrize("text", ["4096", "4096x", "x100", "-5x4", "10x0", "axb", "1x1x1"])
def test_bad_sizes_are_refused(text):
    with pytest.raises(PlanError, match="--size"):
        parse_size(text)


def test_bad_tile_and_chunk_are_refused_with_the_rule():
    with pytest.raises(PlanError, match="multiple of the chunk"):
        make(300, 200, tile=24, chunk=16)
    with pytest.raises(PlanError, match="--chunk"):
        make(300, 200, tile=30, chunk=6)
    with pytest.raises(PlanError, match="--tile"):
        make(300, 200, tile=-16, chunk=16)
    with pytest.raises(PlanError, match="--halo"):
        make(300, 200, tile=32, chunk=16, halo="wide")
    with pytest.raises(PlanError, match="too small"):
        make(16000, 5, tile=32, chunk=16)
    elongated = make(16000, 24, tile=32, chunk=16)  # fewer levels rather than a sliver of a base
    assert min(elongated.base_height, elongated.base_width) >= 6


def test_owner_is_stable_across_levels():
    plan = make(1000, 700, 32, 16)
    for lv in plan.levels[1:]:
        for key in plan.tiles(lv.index):
            o = plan.owner(key, 4)
            assert 0 <= o < 4
    top = TileKey(plan.final_level, 0, 0)
    below = TileKey(plan.final_level - 1, 0, 0)
    assert plan.owner(top, 4) == plan.owner(below, 4) == 0


def test_plan_module_is_pure():
    import ourgan_dist.planning.plan  # noqa: F401

    src = open(ourgan_dist.planning.plan.__file__).read()
    for name in ("torch", "ray", "zarr", "fsspec"):
        assert f"import {name}" not in src
    assert Box(0, 2, 0, 3).area == 6 and "ray" not in {m.split(".")[0] for m in sys.modules if m.startswith("ourgan")}


@pytest.mark.parametrize("tile, chunk", [(0, 256), (512, 256), (1024, 256), (128, 128), (32, 32), (384, 192), (300, 100), (96, 96)])
def test_chunk_is_fitted_to_a_tile_when_not_given(tile, chunk):
    assert chunk_for_tile(tile) == chunk
    make(300, 200, tile=tile, chunk=chunk)  # a valid plan: every tile writes whole chunks


@pytest.mark.parametrize("tile, needle", [(130, "multiple of 4"), (1028, "too small")])
def test_tiles_no_good_chunk_divides_are_refused(tile, needle):
    with pytest.raises(PlanError, match=needle):
        chunk_for_tile(tile)


def test_the_planning_wing_imports_no_torch_ray_zarr_or_fsspec():
    import pkgutil
    import subprocess

    import ourgan_dist.planning as wing

    names = [m.name for m in pkgutil.iter_modules(wing.__path__)]
    assert {"plan", "geometry", "projection", "noise"} <= set(names)
    code = (
        "import importlib, sys\n"
        f"for m in {names!r}: importlib.import_module('ourgan_dist.planning.' + m)\n"
        "print(sorted({k.split('.')[0] for k in sys.modules} & {'torch', 'ray', 'zarr', 'fsspec', 'dask'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
