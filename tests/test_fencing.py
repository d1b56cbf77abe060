"""Fenced determinism: the render's arithmetic environment is in its info and a resume on another
one is refused; a worker refuses a different model at the model's path; exact mode refuses to run
without its exact convolutions; and, at the network level in float32 (not 8-bit, which hides most
differences), any tiling at any thread count equals the whole-level forward bit for bit."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import do_render
from ourgan_dist.canvas import Canvas
from ourgan_dist.config import PRESETS
from ourgan_dist.errors import PlanError, StoreError
from ourgan_dist.fencing import EnvironmentMismatch, runtime_environment
from ourgan_dist.models.layers import ExactConv2d, exact_only
from ourgan_dist.models.sr import build_sr, run_window
from ourgan_dist.plan import Box


@pytest.fixture(scope="module")
def unfinished(tiny_model, tmp_path_factory):
    """A render's store with its info, as an interrupted render leaves it."""
    url = str(tmp_path_factory.mktemp("fence") / "r.zarr")
    do_render(tiny_model, url, "64x48", tile=32)
    return url


def test_info_records_the_environment_and_resume_refuses_another(tiny_model, unfinished):
    canvas = Canvas(unfinished, mode="r+")
    env = canvas.info["environment"]
    assert env == runtime_environment("cpu", "fp32")
    assert {"device", "precision", "torch", "onednn", "cpu_capability"} <= env.keys()
    try:
        canvas.set_info(environment=dict(env, cpu_capability="AVX512"))
        with pytest.raises(StoreError, match=r"another environment \(cpu_capability 'AVX512' there, .* --overwrite"):
            do_render(tiny_model, unfinished, "64x48", tile=32, resume=True)
        canvas.set_info(environment=dict(env, torch="2.0.0"))
        with pytest.raises(StoreError, match="torch '2.0.0' there"):
            do_render(tiny_model, unfinished, "64x48", tile=32, resume=True)
    finally:
        canvas.set_info(environment=env)
    assert do_render(tiny_model, unfinished, "64x48", tile=32, resume=True).tasks_run == 0


def test_a_worker_refuses_another_model_or_environment(tiny_model, photo, unfinished, tmp_path):
    from ourgan_dist.tile import RenderJob, TileWorker
    from ourgan_dist.train import train_model

    other = str(tmp_path / "other")
    train_model(photo, other, preset="tiny", iterations=0, seed=9, device="cpu", progress=False)
    with pytest.raises(EnvironmentMismatch, match="a different model at the same path"):
        TileWorker(RenderJob(model=other, store=unfinished, seed=0))
    canvas = Canvas(unfinished, mode="r+")
    env = canvas.info["environment"]
    try:
        canvas.set_info(environment=dict(env, onednn="2.7.0"))
        with pytest.raises(EnvironmentMismatch, match="onednn '2.7.0' there"):
            TileWorker(RenderJob(model=tiny_model, store=unfinished, seed=0))
    finally:
        canvas.set_info(environment=env)
    assert TileWorker(RenderJob(model=tiny_model, store=unfinished, seed=0)).exact


def test_exact_mode_refuses_to_run_without_its_exact_convolutions(tiny_model, tmp_path, monkeypatch):
    conv = ExactConv2d(3, 4)
    x = torch.randn(1, 3, 9, 11, dtype=torch.float64)
    with torch.inference_mode():
        conv.double()(x)  # outside exact mode: the ordinary convolution, silently
        with exact_only(), pytest.raises(RuntimeError, match="exact mode"):
            conv(x)
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: False)
    from ourgan_dist.render import RenderRequest, prepare

    with pytest.raises(PlanError, match="no oneDNN"):
        prepare(RenderRequest(model=tiny_model, out=str(tmp_path / "x.zarr"), size="64x48", tile=32, chunk=16))
    prepare(RenderRequest(model=tiny_model, out=str(tmp_path / "x.zarr"), size="64x48", tile=32, chunk=16,
                          halo="2"))  # not exact mode: allowed, with its error measured and shown


NET = build_sr(PRESETS["tiny"].sr).eval()


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(h=st.integers(5, 32), w=st.integers(5, 32), tile=st.integers(6, 24), threads=st.sampled_from([1, 2, 3]),
       seed=st.integers(0, 2**31 - 1), data=st.data())
def test_tiled_forward_equals_the_whole_level_bit_for_bit_in_float32(h, w, tile, threads, seed, data):
    """Any grid of tiles (random tile size, random origin of the grid) over a random level, each
    tile run on its exact halo window at a random thread count, equals the whole level's forward
    in float32 exactly."""
    g = torch.Generator().manual_seed(seed)
    x, z = torch.rand(1, 3, h, w, generator=g) * 2 - 1, torch.randn(1, 3, h, w, generator=g)
    full_box, r = Box(0, h, 0, w), NET.receptive_radius
    old = torch.get_num_threads()
    with torch.inference_mode(), exact_only():
        ref = run_window(NET, x, z, window=full_box, core=full_box, level_size=(h, w))
        oy, ox = data.draw(st.integers(0, tile - 1)), data.draw(st.integers(0, tile - 1))
        torch.set_num_threads(threads)
        try:
            for y0 in range(-oy, h, tile):
                for x0 in range(-ox, w, tile):
                    core = Box(max(0, y0), min(h, y0 + tile), max(0, x0), min(w, x0 + tile))
                    if core.y0 >= core.y1 or core.x0 >= core.x1:
                        continue
                    win = core.expand(r).clip(h, w)
                    ys, xs = win.relative_to(full_box)
                    got = run_window(NET, x[:, :, ys, xs], z[:, :, ys, xs], window=win, core=core, level_size=(h, w))
                    want = ref[:, :, 4 * core.y0:4 * core.y1, 4 * core.x0:4 * core.x1]
                    assert got.dtype == torch.float32 and torch.equal(got, want), (core, threads)
        finally:
            torch.set_num_threads(old)
