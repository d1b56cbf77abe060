"""The CUDA path: renders on a GPU agree with the CPU's to rounding, tiles agree with the whole
level, half precision stays near fp32, and a model trained on the GPU loads and renders on a CPU.

Opt-in (``-m gpu``); skipped where no CUDA GPU is visible. Bit-exact tiling is promised on CPU
only; on a GPU the figures below are the tolerance, and each test prints what it measured."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import arrays, do_render

torch = pytest.importorskip("torch")

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU visible")]

SIZE = "640x480"  # the cpu preset: a base of 160x120 and one SR level


def _difference(a: dict[str, np.ndarray], b: dict[str, np.ndarray], name: str) -> tuple[float, float]:
    assert a.keys() == b.keys()
    x, y = a[name], b[name]
    assert x.shape == y.shape and x.dtype == y.dtype
    if x.dtype != np.uint8:  # generation levels: float in [-1, 1], compared in uint8 steps
        x, y = (x.astype(np.float32) + 1) * 127.5, (y.astype(np.float32) + 1) * 127.5
    d = np.abs(x.astype(np.float32) - y.astype(np.float32))
    return float(d.mean()), float(d.max())


def _render(model, tmp_path, name, **kw):
    out = str(tmp_path / f"{name}.zarr")
    do_render(model, out, size=kw.pop("size", SIZE), chunk=kw.pop("chunk", 32), **kw)
    return arrays(out)


@pytest.fixture(scope="module")
def cpu_reference(cpu_model, tmp_path_factory):
    return _render(cpu_model, tmp_path_factory.mktemp("ref"), "cpu", tile=0)


def test_gpu_fp32_agrees_with_cpu(cpu_model, cpu_reference, tmp_path):
    gpu = _render(cpu_model, tmp_path, "gpu", tile=0, device="cuda")
    mean, worst = _difference(cpu_reference, gpu, "0")
    print(f"fp32 GPU vs CPU, last level: mean {mean:.4f}, max {worst:.2f} (uint8 levels)")
    assert worst <= 2 and mean < 0.05


def test_gpu_tiles_agree_with_the_whole_level(cpu_model, tmp_path):
    whole = _render(cpu_model, tmp_path, "whole", tile=0, device="cuda")
    tiled = _render(cpu_model, tmp_path, "tiled", tile=128, device="cuda")
    for name in whole:
        mean, worst = _difference(whole, tiled, name)
        print(f"fp32 GPU, tile 128 vs untiled, {name}: mean {mean:.4f}, max {worst:.2f}")
        assert worst <= 1 and mean < 0.01, name


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_half_precision_stays_near_fp32(cpu_model, cpu_reference, tmp_path, precision):
    half = _render(cpu_model, tmp_path, precision, tile=128, device="cuda", precision=precision)
    mean, worst = _difference(cpu_reference, half, "0")
    print(f"{precision} GPU (tile 128) vs fp32 CPU, last level: mean {mean:.3f}, max {worst:.0f}")
    assert mean < 1.5 and worst < 64
    assert half["0"].std() > 5  # an image, not a flat or black canvas


def test_model_trained_on_the_gpu_renders_on_a_cpu(photo, tmp_path):
    from ourgan_dist.models import checkpoint
    from ourgan_dist.train import train_model

    out = str(tmp_path / "model")
    from helpers import tiny_gan_config

    train_model(photo, out, preset="tiny", iterations=4, seed=3, device="cuda", progress=False)
    model = checkpoint.load(out, device="cpu")
    assert model.base.photo.dim() == 4 and model.base.photo.device.type == "cpu"
    gan = str(tmp_path / "gan")  # the paper's kind of base, trained on the GPU, loads on a CPU
    train_model(photo, gan, config=tiny_gan_config(), iterations=4, seed=3, device="cuda", progress=False)
    assert checkpoint.load(gan, device="cpu").base.noise_amps.device.type == "cpu"
    cpu = _render(out, tmp_path, "trained_cpu", size="256x192", tile=0, chunk=16)
    gpu = _render(out, tmp_path, "trained_gpu", size="256x192", tile=0, chunk=16, device="cuda")
    mean, worst = _difference(cpu, gpu, "0")
    print(f"GPU-trained tiny model, GPU vs CPU render: mean {mean:.4f}, max {worst:.2f}")
    assert worst <= 2


def test_detail_stage_on_the_gpu_agrees_with_the_cpu(photo, tmp_path):
    """The detail library's search and sums run on the GPU too. A source pixel one uint8 step off
    can pick another patch, so single pixels may differ more than the network's rounding."""
    import dataclasses

    from ourgan_dist.config import PRESETS
    from ourgan_dist.models import checkpoint
    from ourgan_dist.train.sr import load_sr_photo

    cfg = PRESETS["tiny"]
    cfg = dataclasses.replace(cfg, sr=dataclasses.replace(cfg.sr, detail=1.0, detail_patches=256))
    from helpers import untrained

    model = untrained(cfg, seed=1)
    model.detail.build(load_sr_photo(photo), 256, seed=0)
    out = str(tmp_path / "model")
    checkpoint.save(model, out, {"note": "test"})
    cpu = _render(out, tmp_path, "detail_cpu", size="256x192", tile=0, chunk=16)
    gpu = _render(out, tmp_path, "detail_gpu", size="256x192", tile=64, chunk=16, device="cuda")
    mean, worst = _difference(cpu, gpu, "0")
    print(f"detail stage, GPU (tile 64) vs CPU: mean {mean:.4f}, max {worst:.0f}")
    assert mean < 1.0
