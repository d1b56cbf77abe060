"""Networks: exact receptive fields (impulse tests), tiling-exact convolution, the y channel,
self-describing checkpoints that never unpickle code."""

from __future__ import annotations

import io
import os
import pickle

import pytest
import torch

from ourgan_dist.config import PRESETS, ModelConfig, SRConfig, from_dict, to_dict
from ourgan_dist.errors import CheckpointError, ConfigError
from ourgan_dist.models import checkpoint
from ourgan_dist.models.base import BaseGenerator, y_channel
from ourgan_dist.models.layers import ExactConv2d
from ourgan_dist.models.sr import SRNet, build_sr
from ourgan_dist.models.sr_architecture import sr_architecture
from ourgan_dist.models.window import run_window
from ourgan_dist.planning.geometry import Box

from helpers import tiny_gan_config

TINY_GAN = tiny_gan_config()


def _measured_sr_radius(net: SRNet, h=45, w=49, at=(22, 24)) -> int:
    """Impulse response in float64: the input pixels whose unit impulse reaches the 4x4 output
    pixels of input pixel ``at`` (autograd gives the response of every input pixel at once, and
    in float64 no path's contribution is rounded away, unlike a float32 finite difference)."""
    net = net.double()
    torch.manual_seed(0)
    x = (torch.rand(1, 3, h, w, dtype=torch.float64) * 2 - 1).requires_grad_(True)
    y0, x0 = 4 * at[0], 4 * at[1]
    out = net(x)
    out[:, :, y0 : y0 + 4, x0 : x0 + 4].sum().backward()
    reach = x.grad.abs().sum(1)[0] > 0
    ys, xs = torch.nonzero(reach, as_tuple=True)
    return int(max((ys - at[0]).abs().max(), (xs - at[1]).abs().max()))


@pytest.mark.parametrize(
    "cfg",
    [
        PRESETS["tiny"].sr,
        PRESETS["cpu"].sr,
        SRConfig(features=8, growth=4, blocks=2, rdbs_per_block=2, dense_convs=2, prior=""),
        SRConfig(features=8, growth=4, blocks=1, rdbs_per_block=1, dense_convs=2, prior="", skip="bicubic"),
    ],
)
def test_sr_receptive_radius_matches_impulse(cfg):
    net = build_sr(cfg).eval()
    net.noise_amp.zero_()
    assert _measured_sr_radius(net) == sr_architecture(cfg).network_radius == net.receptive_radius


def test_base_stage_receptive_radius_matches_impulse():
    gen = BaseGenerator(TINY_GAN.base).eval()
    stage = gen.stages[0]
    x = torch.rand(1, 3, 31, 33)
    y = y_channel(31)
    with torch.no_grad():
        ref = stage(x, y)
        x2 = x.clone()
        x2[0, :, 15, 16] += 1.0
        ys, xs = torch.nonzero((stage(x2, y) - ref).abs().sum(1)[0] > 0, as_tuple=True)
    assert int(max((ys - 15).abs().max(), (xs - 16).abs().max())) == gen.receptive_radius


@pytest.mark.parametrize("threads", [1, 2])
def test_exact_conv_is_independent_of_window_size(threads):
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(1)
        for cin, cout in [(3, 16), (32, 32), (48, 16)]:
            conv = ExactConv2d(cin, cout)
            x = torch.randn(1, cin, 150, 170)
            with torch.no_grad():
                full = conv(x)
                for a, b, c, d in [(10, 30, 20, 41), (0, 150, 0, 9), (37, 150, 101, 170), (3, 7, 5, 8)]:
                    part = conv(x[:, :, a:b, c:d])
                    ia, ib, ic, id_ = int(a > 0), int(b < 150), int(c > 0), int(d < 170)
                    got = part[:, :, ia : part.shape[2] - ib, ic : part.shape[3] - id_]
                    assert torch.equal(got, full[:, :, a + ia : b - ib, c + ic : d - id_])
    finally:
        torch.set_num_threads(old)


def test_sr_window_forward_equals_whole_image_and_small_halo_differs():
    cfg = PRESETS["tiny"].sr
    net = build_sr(cfg).eval()
    H, W = 37, 53
    torch.manual_seed(3)
    x, z = torch.rand(1, 3, H, W) * 2 - 1, torch.randn(1, 3, H, W)
    with torch.no_grad():
        full = net(x, z)
        core = Box(10, 21, 30, 44)
        r = net.receptive_radius
        for halo, exact in ((r, True), (r + 5, True), (r - 1, False)):
            win = core.expand(halo).clip(H, W)
            ys, xs = win.relative_to(Box(0, H, 0, W))
            out = net.forward_window(x[:, :, ys, xs], z[:, :, ys, xs], window=win, core=core, level_size=(H, W))
            ref = full[:, :, 4 * core.y0 : 4 * core.y1, 4 * core.x0 : 4 * core.x1]
            assert torch.equal(out, ref) is exact


def test_y_channel_spans_the_whole_image():
    y = y_channel(5)
    assert y.shape == (1, 1, 5, 1)
    assert y.flatten().tolist() == [-1.0, -0.5, 0.0, 0.5, 1.0]


def test_vertical_coord_changes_the_architecture():
    from dataclasses import replace

    on = BaseGenerator(TINY_GAN.base)
    off = BaseGenerator(replace(TINY_GAN.base, vertical_coord=False))
    assert on.stages[0].convs[0].conv.in_channels == off.stages[0].convs[0].conv.in_channels + 1


def test_base_convs_repeat_the_edge_pixels():
    """A stage's output at the border is what it would be if the image went on with its edge
    pixels (no constant frame that draws bands along the sides)."""
    gen = BaseGenerator(TINY_GAN.base).eval()
    conv = gen.stages[0].convs[0]
    x, y = torch.rand(1, 3, 9, 12), y_channel(9)
    with torch.no_grad():
        out = conv(x, y)
        xy = torch.cat([x, y.expand(1, 1, 9, 12)], 1)
        want = torch.nn.functional.conv2d(
            torch.nn.functional.pad(xy, (1, 1, 1, 1), mode="replicate"), conv.conv.weight, conv.conv.bias
        )
    assert out.shape == (1, 8, 9, 12)
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-6)


def test_checkpoint_round_trip_gives_identical_outputs(tmp_path):
    model = checkpoint.build(TINY_GAN, seed=5)
    mid = checkpoint.save(model, str(tmp_path / "m"), {"note": "x"})
    loaded = checkpoint.load(str(tmp_path / "m"))
    assert loaded.model_id == mid and loaded.config == TINY_GAN and loaded.meta == {"note": "x"}
    a = model.eval().base.generate(21, 32, seed=9)
    b = loaded.base.generate(21, 32, seed=9)
    assert torch.equal(a, b)
    with torch.no_grad():
        assert torch.equal(model.sr(a), loaded.sr(b))


def test_a_retired_field_of_a_saved_config_is_dropped_and_an_unknown_one_refused():
    """Models saved before ``train.base_crop`` was retired still load, as the config without it;
    a key that never existed is still refused by name."""
    saved = to_dict(PRESETS["cpu"])
    old = {**saved, "train": {**saved["train"], "base_crop": 96}}
    assert from_dict(ModelConfig, old) == PRESETS["cpu"]
    with pytest.raises(ConfigError, match="base_crops"):
        from_dict(ModelConfig, {**saved, "train": {**saved["train"], "base_crops": 96}})
    with pytest.raises(ConfigError, match="base_crop"):  # retired for the train section only
        from_dict(ModelConfig, {**saved, "sr": {**saved["sr"], "base_crop": 96}})


def test_same_seed_same_weights_different_seed_different():
    a, b, c = (checkpoint.build(PRESETS["tiny"], seed=s) for s in (1, 1, 2))
    sa, sb, sc = (m.sr.state_dict()["convs.0.weight"] for m in (a, b, c))
    assert torch.equal(sa, sb) and not torch.equal(sa, sc)


def test_pickled_code_is_refused_and_never_executed(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    d = tmp_path / "evil"
    d.mkdir()
    buf = io.BytesIO()
    torch.save({"format_version": 1, "config": {}, "payload": Evil()}, buf)
    (d / "model.pt").write_bytes(buf.getvalue())
    with pytest.raises(CheckpointError, match="pickled"):
        checkpoint.load(str(d))
    assert not marker.exists()
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "model.pt").write_bytes(pickle.dumps(Evil()))
    with pytest.raises(CheckpointError):
        checkpoint.load(str(raw))
    assert not marker.exists()


def test_missing_corrupt_and_wrong_version_checkpoints(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        checkpoint.load(str(tmp_path / "nope"))
    model = checkpoint.build(PRESETS["tiny"], seed=0)
    checkpoint.save(model, str(tmp_path / "m"))
    data = (tmp_path / "m" / "model.pt").read_bytes()
    (tmp_path / "m" / "model.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        checkpoint.load(str(tmp_path / "m"))
    buf = io.BytesIO()
    torch.save({"format_version": 99, "config": {}}, buf)
    (tmp_path / "m" / "model.pt").write_bytes(buf.getvalue())
    with pytest.raises(CheckpointError, match="format 99"):
        checkpoint.load(str(tmp_path / "m"))


@pytest.mark.parametrize(
    "cfg", [PRESETS["tiny"].sr, SRConfig(features=8, growth=4, blocks=1, rdbs_per_block=1, dense_convs=2, prior="")]
)
def test_replicate_edge_leaves_no_frame_and_stays_exact_under_tiling(cfg):
    """The level's edge pixels repeated past it: a flat level gives a flat result right up to its
    borders (the network's own zero padding draws a dark frame there), and tiles at every edge and
    corner equal the whole level."""
    net = build_sr(cfg).eval()
    H, W = 23, 29
    full_box = Box(0, H, 0, W)
    flat = torch.full((1, 3, H, W), 0.3)
    with torch.no_grad():

        def periodic(y):  # a flat input gives the same 4x4 output block everywhere (pixel shuffle)
            block = y[:, :, 40:44, 48:52]
            return block.repeat(1, 1, H, W)

        out = run_window(net, flat, None, window=full_box, core=full_box, level_size=(H, W))
        assert torch.allclose(out, periodic(out), atol=1e-5)
        framed = net.forward_window(flat, None, window=full_box, core=full_box, level_size=(H, W))  # zero padding
        assert not torch.allclose(framed, periodic(framed), atol=1e-3)
        g = torch.Generator().manual_seed(2)
        x, z = torch.rand(1, 3, H, W, generator=g) * 2 - 1, torch.randn(1, 3, H, W, generator=g)
        ref = run_window(net, x, z, window=full_box, core=full_box, level_size=(H, W))
        r = net.receptive_radius
        for core in [Box(0, 7, 0, 9), Box(7, 16, 9, 20), Box(16, 23, 20, 29), Box(0, 23, 11, 12)]:
            win = core.expand(r).clip(H, W)
            ys, xs = win.relative_to(full_box)
            got = run_window(net, x[:, :, ys, xs], z[:, :, ys, xs], window=win, core=core, level_size=(H, W))
            assert torch.equal(got, ref[:, :, 4 * core.y0 : 4 * core.y1, 4 * core.x0 : 4 * core.x1]), core


def test_a_stage_on_a_crop_with_its_global_rows_of_y_equals_the_whole_image_inside():
    """A GAN stage is local: run on a crop with the crop's rows of the whole image's y channel, it
    gives, away from the crop's edges (one stage radius), exactly what it gives there on the
    whole image."""
    from ourgan_dist.models.base import resize_bilinear

    gen = BaseGenerator(TINY_GAN.base).eval()
    gen.noise_amps.fill_(0.1)
    g = torch.Generator().manual_seed(4)
    prev = torch.rand(1, 3, 20, 25, generator=g) * 2 - 1
    size = (40, 50)
    z = torch.randn(1, 3, *size, generator=g)
    r = gen.receptive_radius
    with torch.no_grad():
        whole = gen.refine(2, prev, size, z)
        up = resize_bilinear(prev, size)
        ys, xs = slice(9, 33), slice(14, 41)
        crop = gen.refine_upsampled(2, up[:, :, ys, xs], z[:, :, ys, xs], y_channel(size[0])[:, :, ys])
    inner = (slice(None), slice(None), slice(r, -r), slice(r, -r))
    assert torch.allclose(crop[inner], whole[:, :, ys, xs][inner], atol=1e-6)
    assert not torch.allclose(crop, whole[:, :, ys, xs], atol=1e-6)  # the crop's own edges differ
