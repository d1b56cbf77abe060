"""The store at scale: one shard per task (I4 with sharding), completion records read by listing
them, odd canvas sizes, and stores of format 1 (unsharded, written before sharding) still
resumed, inspected and exported."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from helpers import arrays, assert_same_arrays, do_render
from ourgan_dist.store.canvas import STORE_FORMAT, Canvas, plan_to_info
from ourgan_dist.errors import StoreError
from ourgan_dist.planning.plan import PyramidKey, RenderPlan, TileKey

ODD = "101x77"  # one SR level, 6 x 7 tiles of 16 px with cut edges


def _objects(url: str, array: str) -> list[str]:
    """The storage objects of an image array's pixels (its chunk or shard files)."""
    import os

    root = os.path.join(url, array, "c")
    return [os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs]


def _partial_render(model: str, out: str, size: str, **kw) -> int:
    """Render half the tasks, then fail as a lost worker would; returns the tasks recorded."""
    from ourgan_dist.engine.executors.local import LocalExecutor
    from ourgan_dist.engine.render import RenderRequest, prepare, render

    class Dies(LocalExecutor):
        def run(self, job, plan, keys, on_done):
            super().run(job, plan, keys[: len(keys) // 2], on_done)
            raise RuntimeError("worker lost")

    with pytest.raises(RuntimeError, match="worker lost"):
        render(prepare(RenderRequest(model=model, out=out, size=size, **kw)), executor=Dies())
    return len(Canvas(out).done())


@pytest.mark.parametrize("size", ["53x37", ODD])
def test_odd_sizes_tiled_equals_untiled_with_one_shard_per_task(tiny_model, tmp_path, size):
    ref, out = str(tmp_path / "ref.zarr"), str(tmp_path / "t.zarr")
    do_render(tiny_model, ref, size, tile=0, chunk=8)
    s = do_render(tiny_model, out, size, tile=16, chunk=8)
    assert_same_arrays(arrays(out), arrays(ref))
    plan, g = s.plan, zarr.open_group(out, mode="r")
    final = plan.final_level
    assert g["0"].chunks == (3, 8, 8) and g["0"].shards == (3, 16, 16) == (3, *plan.level_shards(final))

    def shards(a) -> int:
        return -(-a.shape[1] // a.shards[1]) * -(-a.shape[2] // a.shards[2])

    for lv in plan.levels:  # one object per shard (edge shards cut, never missing); one shard per SR tile
        name = "0" if lv.index == final else f"generation/{lv.index}"
        assert len(_objects(out, name)) == shards(g[name])
        assert lv.index == 0 or shards(g[name]) == len(plan.tiles(lv.index))
    for k in range(1, len(plan.pyramid_shapes)):  # one object per pyramid block
        assert g[str(k)].shards == (3, *plan.pyramid_shards(k))
        assert len(_objects(out, str(k))) == shards(g[str(k)]) == len(plan.pyramid_tasks(k))
    assert zarr.open_group(ref, mode="r")["0"].shards is None  # --tile 0: plain chunks


def _plan_only_store(url: str, plan: RenderPlan) -> Canvas:
    info = {
        "name": "records",
        "model": "(none)",
        "model_id": "none",
        "model_preset": "none",
        "seed": 0,
        "size": [plan.width, plan.height],
        "plan": plan_to_info(plan),
        "exact": True,
        "precision": "fp32",
    }
    return Canvas.create(url, plan, info)


def test_done_is_one_listing_that_skips_what_is_not_a_record(tmp_path, monkeypatch):
    plan = RenderPlan(width=203, height=131, n_sr=1, base_height=33, base_width=51, tile=16, halo=0, receptive_radius=0, chunk=16)
    url = str(tmp_path / "r.zarr")
    c = _plan_only_store(url, plan)
    marked = {TileKey(0, 0, 0), TileKey(1, 0, 0), TileKey(1, 8, 12), PyramidKey(1, 0, 1)}
    for key in marked:
        c.mark_done(key)
    rec = tmp_path / "r.zarr" / "progress" / "L1" / "c" / "3"
    rec.mkdir(parents=True)
    (rec / "4.1f2e.partial").write_bytes(b"")  # a write that crashed before its rename
    (rec / "notes").write_bytes(b"")
    beyond = tmp_path / "r.zarr" / "progress" / "L1" / "c" / "99"
    beyond.mkdir()
    (beyond / "0").write_bytes(b"")  # outside the 9 x 13 tile grid

    def no_array(self, name):
        raise AssertionError(f"done() opened array {name!r}: records are listed, never read one by one")

    monkeypatch.setattr(Canvas, "array", no_array)
    assert Canvas(url).done() == marked
    progress = Canvas(url).progress()["tasks"]
    assert progress["level 1"] == (2, 9 * 13) and progress["pyramid"][0] == 1


def test_misaligned_shard_write_names_the_race(tmp_path):
    from ourgan_dist.errors import MisalignedWriteError
    from ourgan_dist.planning.geometry import Box

    plan = RenderPlan(width=53, height=37, n_sr=0, base_height=37, base_width=53, tile=32, halo=0, receptive_radius=0, chunk=16)
    c = _plan_only_store(str(tmp_path / "m.zarr"), plan)
    assert c.array("0").shards == (3, 32, 32)
    with pytest.raises(MisalignedWriteError, match="partial-shard write is a read-modify-write"):
        c.write("0", Box(0, 16, 0, 16), np.zeros((3, 16, 16), np.uint8))  # whole chunk, quarter of a shard
    with pytest.raises(MisalignedWriteError, match="shard grid"):
        c.write("0", Box(16, 37, 32, 53), np.zeros((3, 21, 21), np.uint8))
    c.write("0", Box(32, 37, 32, 53), np.full((3, 5, 21), 7, np.uint8))  # the cut corner shard: whole
    assert (c.read("0", Box(32, 37, 32, 53)) == 7).all()


def to_format_1(url: str) -> None:
    """Rewrite a store as ourgan-dist wrote it before sharding (store format 1): the same
    arrays, attributes and records, image arrays in plain chunks."""
    g = zarr.open_group(url, mode="r+")
    names = [n for n, _ in g.arrays()] + [f"generation/{n}" for n, _ in g["generation"].arrays()]
    for name in names:
        a = g[name]
        data, attrs = a[:], a.attrs.asdict()
        parent, _, leaf = name.rpartition("/")
        group = g[parent] if parent else g
        del group[leaf]
        b = group.create_array(
            leaf,
            shape=a.shape,
            chunks=a.chunks,
            dtype=a.dtype,
            fill_value=a.fill_value,
            dimension_names=a.metadata.dimension_names,
            attributes=attrs,
        )
        b[:] = data
    info = dict(g.attrs["ourgan_dist"], format=1)
    g.attrs["ourgan_dist"] = info


def test_format_1_store_resumes_inspects_and_exports(tiny_model, tmp_path):
    import ourgan_dist
    from ourgan_dist.outputs.export import export
    from ourgan_dist.outputs.inspect import describe

    old, new = str(tmp_path / "old.zarr"), str(tmp_path / "new.zarr")
    recorded = _partial_render(tiny_model, old, ODD, tile=16, chunk=8)
    to_format_1(old)
    assert zarr.open_group(old, mode="r")["0"].shards is None
    d = describe(old)
    assert sum(t["done"] for t in d["tasks"].values()) == recorded and not d["complete"]
    s = do_render(tiny_model, old, ODD, tile=16, chunk=8, resume=True)
    assert s.tasks_skipped == recorded and s.tasks_run > 0
    do_render(tiny_model, new, ODD, tile=16, chunk=8)
    assert_same_arrays(arrays(old), arrays(new))  # the old layout resumed: the same bytes
    c = Canvas(old)
    assert c.complete and c.info["format"] == 1 and STORE_FORMAT == 2
    assert np.array_equal(ourgan_dist.open_result(old).compute(), arrays(new)["0"])
    png = str(tmp_path / "old.png")
    export(old, png, progress=False)
    import pyvips

    img = pyvips.Image.new_from_file(png)
    assert (img.width, img.height) == (101, 77)


@pytest.mark.parametrize(
    "fmt, remedy", [(0, "render it again with --overwrite"), (3, "upgrade ourgan-dist"), (None, "render it again")]
)
def test_unknown_store_formats_are_refused_naming_the_remedy(tmp_path, fmt, remedy):
    plan = RenderPlan(width=53, height=37, n_sr=0, base_height=37, base_width=53, tile=0, halo=0, receptive_radius=0, chunk=16)
    url = str(tmp_path / "f.zarr")
    c = _plan_only_store(url, plan)
    c.set_info(format=fmt)
    with pytest.raises(StoreError, match=f"store format {fmt!r}, this version of ourgan-dist reads formats 1, 2; {remedy}"):
        Canvas(url)
