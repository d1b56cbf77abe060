"""The headline invariants on the in-process executor: tiled == untiled bit for bit (I1),
deterministic (I2), shard-owned writes (I4), resume gives the same bytes (I6), and the store is
a valid OME-Zarr 0.5 image that dask reads."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from helpers import arrays, assert_same_arrays, do_render
from ourgan_dist.store.canvas import Canvas
from ourgan_dist.errors import MisalignedWriteError, StoreError
from ourgan_dist.planning.geometry import Box


@pytest.fixture(scope="module")
def reference(tiny_model, tmp_path_factory):
    """Untiled (--tile 0) renders: the reference every tiled render must equal."""
    refs = {}
    for size in ("301x187", "523x211"):
        out = str(tmp_path_factory.mktemp("ref") / "r.zarr")
        do_render(tiny_model, out, size, tile=0)
        refs[size] = arrays(out)
    return refs


@pytest.fixture(scope="module")
def tiled(tiny_model, tmp_path_factory):
    """A tiled render (301x187, tile 32) for the tests that only read it or change a copy."""
    out = str(tmp_path_factory.mktemp("tiled") / "t.zarr")
    do_render(tiny_model, out, "301x187", tile=32)
    return out


# two cases in the default suite (both sizes; a middle and a large tile; 301x187 at tile 32 is
# compared with the untiled render by the memory-store and OME-Zarr tests below), the other six
# with the slow tests
FAST_CASES = {("523x211", 48), ("301x187", 112)}


@pytest.mark.parametrize(
    "size, tile",
    [
        pytest.param(size, tile, marks=[] if (size, tile) in FAST_CASES else [pytest.mark.slow])
        for size in ("301x187", "523x211")
        for tile in (16, 32, 48, 112)
    ],
)
def test_tiled_equals_untiled_bit_for_bit(tiny_model, reference, tmp_path, size, tile):
    out = str(tmp_path / "t.zarr")
    s = do_render(tiny_model, out, size, tile=tile)
    assert s.plan.n_sr >= 2  # two or more SR levels are exercised
    assert len(s.plan.tiles(s.plan.final_level)) > 1
    assert_same_arrays(arrays(out), reference[size])


def test_cpu_preset_tiled_equals_untiled(cpu_model, tmp_path):
    """The cpu preset's SR levels (its patch base keeps the 106x74 test photo at 53x37, so 517x160
    draws a 33x10 base and two x4 levels), the last in 3 x 9 tiles."""
    a, b = str(tmp_path / "a.zarr"), str(tmp_path / "b.zarr")
    do_render(cpu_model, a, "517x160", tile=0)
    s = do_render(cpu_model, b, "517x160", tile=64)
    assert s.plan.n_sr == 2 and s.plan.tile_grid(2) == (3, 9)
    assert_same_arrays(arrays(a), arrays(b))


def test_halo_below_receptive_field_differs(tiny_model, reference, tmp_path):
    from ourgan_dist.engine.halo_error import measure_halo_error
    from ourgan_dist.engine.render import RenderRequest, prepare

    out = str(tmp_path / "h.zarr")
    do_render(tiny_model, out, "301x187", tile=32, halo="2")
    got = arrays(out)
    assert not np.array_equal(got["0"], reference["301x187"]["0"])
    err = measure_halo_error(prepare(RenderRequest(model=tiny_model, out=out, size="301x187", tile=32, chunk=16, halo="2")))
    assert err["max_abs_error_8bit"] > 0


def test_halo_error_is_measured_on_an_interior_tile_with_tiled_neighbours(tiny_model, reference, tmp_path):
    """Level 1 is a single tile here (it reads no halo, so it can show no error); the error is
    measured on the centre tile of the finest level, from an exact source that matches the
    untiled render."""
    import torch

    from ourgan_dist.planning.pixels import to_uint8
    from ourgan_dist.planning.plan import TileKey
    from ourgan_dist.engine.halo_error import describe_halo_error, exact_level, measure_halo_error
    from ourgan_dist.engine.render import RenderRequest, prepare

    p = prepare(RenderRequest(model=tiny_model, out=str(tmp_path / "none"), size="301x187", tile=80, chunk=16, halo="2"))
    plan = p.plan
    assert plan.tile_grid(1) == (1, 1) and plan.tile_grid(2) == (3, 4)
    err = measure_halo_error(p)
    assert err["tile"] == "L2/1.2" and err["tiled_levels"] == 1  # interior: tiled neighbours on every side
    assert err["max_abs_error_8bit"] > 0 and 0 < err["pixels_differing"] < 1
    line = describe_halo_error(plan, err)
    assert "L2/1.2" in line and "compound" in line
    core = plan.core(TileKey(2, 1, 2))
    with torch.inference_mode():
        exact = to_uint8(exact_level(p, 2, core, {}).numpy())
    assert np.array_equal(exact, reference["301x187"]["0"][:, core.y0 : core.y1, core.x0 : core.x1])


def test_same_seed_same_bytes_other_seed_differs(tiny_model, reference, tmp_path):
    do_render(tiny_model, str(tmp_path / "s0"), "301x187", tile=48, seed=0)
    do_render(tiny_model, str(tmp_path / "s1"), "301x187", tile=48, seed=1)
    assert np.array_equal(arrays(str(tmp_path / "s0"))["0"], reference["301x187"]["0"])
    assert not np.array_equal(arrays(str(tmp_path / "s1"))["0"], reference["301x187"]["0"])


def test_memory_store(tiny_model, reference):
    url = "memory://renders/test_memory_store.zarr"
    do_render(tiny_model, url, "301x187", tile=32)
    assert np.array_equal(arrays(url)["0"], reference["301x187"]["0"])
    Canvas.delete(url)


def test_existing_output_needs_resume_or_overwrite(tiny_model, tmp_path):
    out = str(tmp_path / "e.zarr")
    do_render(tiny_model, out, "101x77", tile=32)
    before = arrays(out)
    with pytest.raises(StoreError, match="already exists"):
        do_render(tiny_model, out, "101x77", tile=32)
    with pytest.raises(StoreError, match="seed"):
        do_render(tiny_model, out, "101x77", tile=32, seed=5, resume=True)
    with pytest.raises(StoreError, match="size"):
        do_render(tiny_model, out, "100x77", tile=32, resume=True)
    assert_same_arrays(arrays(out), before)
    s = do_render(tiny_model, out, "101x77", tile=32, resume=True)
    assert s.tasks_run == 0
    do_render(tiny_model, out, "101x77", tile=32, seed=3, overwrite=True)
    assert not np.array_equal(arrays(out)["0"], before["0"])


def test_overwrite_refuses_what_is_not_a_render(tiny_model, tmp_path):
    d = tmp_path / "precious"
    d.mkdir()
    (d / "thesis.txt").write_text("keep me")
    with pytest.raises(StoreError, match="not an ourgan-dist render"):
        do_render(tiny_model, str(d), "301x187", tile=32, overwrite=True)
    assert (d / "thesis.txt").read_text() == "keep me"


def test_resume_after_partial_render_gives_identical_bytes(tiny_model, reference, tmp_path):
    from ourgan_dist.engine.executors.local import LocalExecutor
    from ourgan_dist.engine.render import RenderRequest, prepare, render

    out = str(tmp_path / "p.zarr")

    class Dies(LocalExecutor):
        def run(self, job, plan, keys, on_done):
            super().run(job, plan, keys[: len(keys) // 2], on_done)
            raise RuntimeError("worker lost")

    p = prepare(RenderRequest(model=tiny_model, out=out, size="301x187", tile=32, chunk=16))
    with pytest.raises(RuntimeError):
        render(p, executor=Dies())
    c = Canvas(out)
    assert not c.complete
    with pytest.raises(StoreError, match="incomplete"):
        c.require_complete("reading")
    done_before = len(c.done())
    p2 = prepare(RenderRequest(model=tiny_model, out=out, size="301x187", tile=32, chunk=16, resume=True))
    s = render(p2)
    assert s.tasks_skipped == done_before and s.tasks_run > 0
    assert Canvas(out).complete
    assert_same_arrays(arrays(out), reference["301x187"])


def test_misaligned_write_is_refused_with_the_reason(tiled, tmp_path):
    import shutil

    out = str(tmp_path / "m.zarr")
    shutil.copytree(tiled, out)
    c = Canvas(out, mode="r+")
    before = c.read("0", Box(0, 64, 0, 64)).copy()
    assert c.array("0").chunks == (3, 16, 16) and c.array("0").shards == (3, 32, 32)  # a shard per tile
    with pytest.raises(MisalignedWriteError, match="read-modify-write"):
        c.write("0", Box(8, 24, 0, 16), np.zeros((3, 16, 16), np.uint8))
    with pytest.raises(MisalignedWriteError, match="shard grid"):
        c.write("0", Box(0, 20, 0, 16), np.zeros((3, 20, 16), np.uint8))
    with pytest.raises(MisalignedWriteError, match="partial-shard write"):  # whole chunks, part of a shard
        c.write("0", Box(0, 16, 0, 32), np.zeros((3, 16, 32), np.uint8))
    assert np.array_equal(c.read("0", Box(0, 64, 0, 64)), before)
    c.write("0", Box(160, 187, 288, 301), np.full((3, 27, 13), 9, np.uint8))  # edge shard, cut: allowed
    assert (c.read("0", Box(160, 187, 288, 301)) == 9).all()


def test_store_is_valid_ome_zarr_and_dask_reads_it(tiled, reference):
    import dask.array as da
    from ome_zarr_models.v05.image import Image

    import ourgan_dist

    out = tiled
    assert_same_arrays(arrays(out), reference["301x187"])  # every level, tiled at 32 == untiled
    group = zarr.open_group(out, mode="r")
    img = Image.from_zarr(group)
    ms = img.attributes.ome.multiscales[0]
    assert [a.name for a in ms.axes] == ["c", "y", "x"]
    assert [d.path for d in ms.datasets] == [str(k) for k in range(len(ms.datasets))]
    assert group["0"].metadata.dimension_names == ("c", "y", "x") and group["0"].dtype == np.uint8
    arr = da.from_zarr(out, component="0")
    assert arr.shape == (3, 187, 301)
    assert np.array_equal(arr.compute(), reference["301x187"]["0"])
    res = ourgan_dist.open_result(out)
    assert np.array_equal(res.compute(), reference["301x187"]["0"])
    xa = ourgan_dist.open_result(out, xarray=True)
    assert xa.dims == ("y", "x", "c") and xa.shape == (187, 301, 3)
    info = group.attrs["ourgan_dist"]
    assert info["seed"] == 0 and info["size"] == [301, 187] and info["complete"] is True


def test_pyramid_is_2x2_mean_of_the_level_below(tiny_model, reference):
    a = reference["301x187"]
    from ourgan_dist.planning.pixels import downsample2

    for k in range(1, len([n for n in a if n.isdigit()])):
        prev, cur = a[str(k - 1)], a[str(k)]
        assert np.array_equal(downsample2(prev, cur.shape[1], cur.shape[2]), cur)


def test_a_shared_model_is_not_cast_by_a_half_precision_render(tiny_model, tmp_path):
    """The local executor hands the driver's model to its worker: a fp16 render works on a copy."""
    import torch

    from ourgan_dist.engine.executors.local import LocalExecutor
    from ourgan_dist.models import checkpoint
    from ourgan_dist.engine.render import RenderRequest, prepare, render

    model = checkpoint.load(tiny_model)
    p = prepare(RenderRequest(model=tiny_model, out=str(tmp_path / "half.zarr"), size="128x96", tile=0, chunk=16, precision="fp16"))
    render(p, executor=LocalExecutor(model=model))
    assert {t.dtype for t in model.sr.parameters()} == {torch.float32}
    assert {t.device.type for t in model.sr.parameters()} == {"cpu"}
