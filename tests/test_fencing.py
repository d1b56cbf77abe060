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
from ourgan_dist.store.canvas import Canvas
from ourgan_dist.config import PRESETS
from ourgan_dist.errors import PlanError, StoreError
from ourgan_dist.store.fencing import EnvironmentMismatch, runtime_environment
from ourgan_dist.models.layers import ExactConv2d, exact_only
from ourgan_dist.models.sr import build_sr
from ourgan_dist.models.window import run_window
from ourgan_dist.planning.geometry import Box


@pytest.fixture(scope="module")
def unfinished(tiny_model, tmp_path_factory):
    """A render's store with its info, as an interrupted render leaves it."""
    url = str(tmp_path_factory.mktemp("fence") / "r.zarr")
    do_render(tiny_model, url, "64x48", tile=32)
    return url


def test_info_records_the_environment_and_resume_refuses_another(tiny_model, unfinished):
    import ourgan_dist

    canvas = Canvas(unfinished, mode="r+")
    env = canvas.info["environment"]
    assert env == runtime_environment("cpu", "fp32")
    assert {"device", "precision", "ourgan_dist", "torch", "onednn", "cpu_capability"} <= env.keys()
    assert env["ourgan_dist"] == ourgan_dist.__version__
    other = next(c for c in ("AVX512", "AVX2", "DEFAULT") if c != env["cpu_capability"])  # not this machine's
    try:
        canvas.set_info(environment=dict(env, cpu_capability=other))
        with pytest.raises(StoreError, match=rf"another environment.*\(cpu_capability '{other}' there, .* --overwrite"):
            do_render(tiny_model, unfinished, "64x48", tile=32, resume=True)
        canvas.set_info(environment=dict(env, torch="2.0.0"))
        with pytest.raises(StoreError, match="torch '2.0.0' there"):
            do_render(tiny_model, unfinished, "64x48", tile=32, resume=True)
    finally:
        canvas.set_info(environment=env)
    assert do_render(tiny_model, unfinished, "64x48", tile=32, resume=True).tasks_run == 0


def test_resume_fails_closed_without_a_recorded_environment_or_version(tiny_model, unfinished):
    """A store whose environment, or the ourgan-dist version in it, is not recorded cannot show
    that it matches: a resume is refused (saying what is missing and that --overwrite renders it
    anew), by the library, the command line and a worker alike; another version is refused too."""
    from click.testing import CliRunner

    from ourgan_dist.cli import main
    from ourgan_dist.engine.tile import RenderJob, TileWorker

    canvas = Canvas(unfinished, mode="r+")
    env = canvas.info["environment"]
    without = {k: v for k, v in canvas.info.items() if k != "environment"}
    try:
        canvas.info = without
        canvas.group.attrs["ourgan_dist"] = without
        with pytest.raises(StoreError, match=r"no environment is recorded in the store.* --overwrite"):
            do_render(tiny_model, unfinished, "64x48", tile=32, resume=True)
        r = CliRunner().invoke(
            main,
            ["render", tiny_model, "--out", unfinished, "--size", "64x48", "--tile", "32", "--chunk", "16", "--resume", "--quiet"],
        )
        assert r.exit_code == 2 and "no environment is recorded" in r.output and "--overwrite" in r.output, r.output
        with pytest.raises(EnvironmentMismatch, match="no environment is recorded"):
            TileWorker(RenderJob(model=tiny_model, store=unfinished, seed=0))
        canvas.set_info(environment={k: v for k, v in env.items() if k != "ourgan_dist"})
        with pytest.raises(StoreError, match="ourgan_dist is not recorded in the store's environment"):
            do_render(tiny_model, unfinished, "64x48", tile=32, resume=True)
        canvas.set_info(environment=dict(env, ourgan_dist="0.0.1"))
        with pytest.raises(StoreError, match="ourgan_dist '0.0.1' there"):
            do_render(tiny_model, unfinished, "64x48", tile=32, resume=True)
    finally:
        canvas.set_info(environment=env)
    assert do_render(tiny_model, unfinished, "64x48", tile=32, resume=True).tasks_run == 0


def test_a_worker_refuses_another_model_or_environment(tiny_model, photo, unfinished, tmp_path):
    from ourgan_dist.engine.tile import RenderJob, TileWorker
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
    from ourgan_dist.engine.render import RenderRequest, prepare

    with pytest.raises(PlanError, match="no oneDNN"):
        prepare(RenderRequest(model=tiny_model, out=str(tmp_path / "x.zarr"), size="64x48", tile=32, chunk=16))
    prepare(
        RenderRequest(model=tiny_model, out=str(tmp_path / "x.zarr"), size="64x48", tile=32, chunk=16, halo="2")
    )  # not exact mode: allowed, with its error measured and shown


NET = build_sr(PRESETS["tiny"].sr).eval()


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    h=st.integers(5, 32),
    w=st.integers(5, 32),
    tile=st.integers(6, 24),
    threads=st.sampled_from([1, 2, 3]),
    seed=st.integers(0, 2**31 - 1),
    data=st.data(),
)
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
                    want = ref[:, :, 4 * core.y0 : 4 * core.y1, 4 * core.x0 : 4 * core.x1]
                    assert got.dtype == torch.float32 and torch.equal(got, want), (core, threads)
        finally:
            torch.set_num_threads(old)
