"""Projections before a render: network arithmetic, memory per task, time on N workers, store
size, and the automatic tile sized for the workers. Pure arithmetic, so these are quick."""

from __future__ import annotations

import sys
import time

import pytest

from ourgan_dist.planning import footprint as fp
from ourgan_dist.planning import projection as pj
from ourgan_dist.config import PRESETS
from ourgan_dist.planning.plan import RenderPlan, TileKey

CPU, PAPER, TINY = PRESETS["cpu"], PRESETS["paper"], PRESETS["tiny"]
GB80 = 80 * 10**9


def test_network_arithmetic_matches_the_architectures():
    # a tile's arithmetic grows with its halo, and with no halo is the level's density x its pixels
    assert pj._tile_macs(CPU.sr, 100, 100, 0) < pj._tile_macs(CPU.sr, 100, 100, 18)
    bare = pj.sr_macs_per_pixel(CPU.sr) * 100 * 100
    assert pj._tile_macs(CPU.sr, 100, 100, 0) == pytest.approx(bare, rel=0.05)


def test_task_groups_stand_for_every_task():
    plan = RenderPlan.create(5000, 3001, base=CPU.base, sr=CPU.sr, tile=768)
    work = pj.Work(plan, CPU.sr, CPU.base)
    for level in [*range(plan.n_sr + 1), None]:
        keys = plan.tiles(level) if level is not None else list(plan.all_pyramid_tasks())
        groups = pj.task_groups(plan, level)
        assert sum(n for _, n in groups) == len(keys)
        assert sum(work.seconds(k) * n for k, n in groups) == pytest.approx(sum(work.seconds(k) for k in keys))


def test_more_workers_finish_sooner_and_spread_thinner():
    plan = RenderPlan.create(8192, 5460, base=CPU.base, sr=CPU.sr, tile=1024)
    one, eight = (pj.estimate(plan, CPU.sr, CPU.base, workers=w, throughput=pj.CPU_REFERENCE) for w in (1, 8))
    assert eight.seconds < one.seconds and eight.work_s == pytest.approx(one.work_s)
    assert one.utilisation == pytest.approx(1.0) and 0 < eight.utilisation <= 1.0
    base = eight.levels[0]
    assert base.tasks == base.busy == 1  # one base image keeps one worker busy


def test_memory_projection_grows_with_the_tile_not_the_canvas():
    small, big = (RenderPlan.create(w, h, base=CPU.base, sr=CPU.sr, tile=1024) for w, h in ((4096, 2730), (65536, 43690)))
    assert fp.task_bytes(small, CPU.sr, CPU.base) == fp.task_bytes(big, CPU.sr, CPU.base)
    wider = RenderPlan.create(4096, 2730, base=CPU.base, sr=CPU.sr, tile=2048)
    grown, kept = fp.task_bytes(wider, CPU.sr, CPU.base), fp.task_bytes(small, CPU.sr, CPU.base)
    assert grown["sr_body"] > kept["sr_body"] and grown["patch_base"] == kept["patch_base"]
    assert fp.CPU_MEMORY.task_peak(wider, CPU.sr, CPU.base) >= fp.CPU_MEMORY.task_peak(small, CPU.sr, CPU.base)
    assert fp.CPU_MEMORY.task_peak(small, CPU.sr, CPU.base) > fp.CPU_MEMORY.runtime_bytes


def test_a_gpu_holds_the_sr_tiles_but_not_the_patch_base_which_runs_on_the_host():
    plan = RenderPlan.create(4096, 3072, base=CPU.base, sr=CPU.sr, tile=1024)
    terms = fp.task_bytes(plan, CPU.sr, CPU.base)
    assert terms["patch_base"] > max(terms["sr_body"], terms["sr_output"]) and terms["base"] == 0  # in host memory
    assert fp.GPU_MEMORY.counted(plan, CPU.sr, CPU.base) == max(terms["sr_body"], terms["sr_output"])
    assert fp.CPU_MEMORY.counted(plan, CPU.sr, CPU.base) == terms["patch_base"]


def test_store_size_estimate_scales_with_the_image():
    a = sum(fp.store_bytes(RenderPlan.create(4096, 4096, base=CPU.base, sr=CPU.sr, tile=1024)))
    b = sum(fp.store_bytes(RenderPlan.create(16384, 16384, base=CPU.base, sr=CPU.sr, tile=1024)))
    assert 15 < b / a < 17
    assert 3 * 4096 * 4096 * 0.3 < a < 3 * 4096 * 4096 * 2  # about 4/3 x 3 bytes per pixel, compressed


@pytest.mark.parametrize("size", [(16384, 12288), (36864, 27648)])
def test_auto_tile_for_gpus_fits_memory_keeps_gpus_busy_and_bounds_the_halo(size):
    tiles = {}
    for gpus in (8, 32, 100):
        c = pj.choose_tile(*size, base=PAPER.base, sr=PAPER.sr, chunk=256, workers=gpus, worker_memory=GB80, device="cuda")
        plan = RenderPlan.create(*size, base=PAPER.base, sr=PAPER.sr, tile=c.tile)
        assert c.tile % 256 == 0 and c.task_peak <= GB80
        assert pj.Work(plan, PAPER.sr, PAPER.base).compute_overhead() <= pj.MAX_COMPUTE_OVERHEAD
        tiles[gpus] = c.tile
        last = plan.tile_grid(plan.final_level)
        assert last[0] * last[1] >= min(gpus, 12)  # the old fixed 4096 px tile gave 12 at 16K
    assert tiles[8] >= tiles[32] >= tiles[100]  # more GPUs: smaller tiles, more of them


def test_auto_tile_respects_a_small_worker_and_is_instant_for_ten_gigapixels():
    roomy = pj.choose_tile(16384, 12288, base=PAPER.base, sr=PAPER.sr, chunk=256, workers=8, worker_memory=GB80, device="cuda")
    tight = pj.choose_tile(16384, 12288, base=PAPER.base, sr=PAPER.sr, chunk=256, workers=8, worker_memory=8 << 30, device="cuda")
    assert tight.tile <= roomy.tile and tight.task_peak <= 8 << 30
    t0 = time.perf_counter()
    c = pj.choose_tile(100000, 100000, base=CPU.base, sr=CPU.sr, chunk=256, workers=1, worker_memory=16 << 30)
    assert time.perf_counter() - t0 < 3.0 and c.tile % 256 == 0


def test_projection_module_is_pure():
    import ourgan_dist.planning.footprint as footprint_mod
    import ourgan_dist.planning.projection as mod

    for m in (mod, footprint_mod):
        src = open(m.__file__).read()
        for name in ("torch", "ray", "zarr", "fsspec"):
            assert f"import {name}" not in src
    assert "torch" not in {m.split(".")[0] for m in sys.modules if m.startswith("ourgan_dist.planning.projection")}


def test_the_guided_band_is_counted_on_the_host_and_bounded_by_the_first_level():
    import dataclasses

    plan = RenderPlan.create(4096, 3072, base=CPU.base, sr=CPU.sr, tile=1024)
    terms = fp.task_bytes(plan, CPU.sr, CPU.base)
    assert terms["guided"] == fp.GUIDED_BYTES * 4096 * 3072  # level 1 is the render here
    huge = RenderPlan.create(65536, 49152, base=CPU.base, sr=CPU.sr, tile=1024)
    assert fp.task_bytes(huge, CPU.sr, CPU.base)["guided"] == terms["guided"]  # the base is capped, so is level 1
    off = dataclasses.replace(CPU.sr, detail=0.0)
    assert fp.task_bytes(plan, off, CPU.base)["guided"] == 0
    assert "guided" in fp.CPU_MEMORY.kinds and "guided" not in fp.GPU_MEMORY.kinds


def test_the_first_level_of_a_patch_base_is_counted_at_the_guided_detail_cost():
    import dataclasses

    plan = RenderPlan.create(16384, 12288, base=CPU.base, sr=CPU.sr, tile=1024)
    work = pj.Work(plan, CPU.sr, CPU.base)
    one, two = (work.macs(TileKey(lv, 0, 0)) for lv in (1, 2))
    c1, c2 = plan.source_core(TileKey(1, 0, 0)), plan.source_core(TileKey(2, 0, 0))
    assert (c1.height, c1.width) == (c2.height, c2.width)  # the same full-size tile on both levels
    library = pj.detail_macs_per_pixel(CPU.sr) * (c1.height + 2) * (c1.width + 2)
    assert two - one == library - pj.detail_macs_per_pixel(CPU.sr, guided=True) * (c1.height + 2) * (c1.width + 2)
    off = dataclasses.replace(CPU.sr, detail=0.0)
    bare = pj.Work(plan, off, CPU.base)
    assert bare.macs(TileKey(1, 0, 0)) == bare.macs(TileKey(2, 0, 0))


def test_a_cpu_workers_io_scales_with_its_measured_rate():
    """Store I/O and the pyramid's averaging were recorded beside the reference rate on the same
    machine: a worker probed twice as fast as that does them in half the time."""
    ref_worker = pj.CPU_REFERENCE.macs_per_s / pj.CPU_REFERENCE_WORKERS
    same, fast = pj.cpu_throughput(ref_worker, "a"), pj.cpu_throughput(2 * ref_worker, "b")
    assert same.io_s_per_px == pytest.approx(pj.CPU_REFERENCE.io_s_per_px)
    assert fast.io_s_per_px == pytest.approx(same.io_s_per_px / 2)
    assert fast.pyramid_s_per_px == pytest.approx(same.pyramid_s_per_px / 2)
    assert fast.task_s == same.task_s and fast.macs_per_s == 2 * ref_worker
