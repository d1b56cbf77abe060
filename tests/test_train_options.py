"""Training options that shape the pictures: softened SR inputs (``sr_blur``), a patch-GAN on the
VAE scales' prior samples (``vae_adv_weight``) and critics that see the y channel
(``critic_vertical``)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from ourgan_dist import images
from ourgan_dist.config import PRESETS, TrainConfig
from ourgan_dist.errors import ConfigError
from ourgan_dist.models import checkpoint
from ourgan_dist.models.base import BaseGenerator, y_channel
from ourgan_dist.train.base import PatchCritic, gradient_penalty, train_base
from ourgan_dist.train.loop import torch_threads
from ourgan_dist.train.sr import degrade, downsample4, gaussian_blur


def test_gaussian_blur_keeps_mass_and_has_the_asked_width():
    img = torch.zeros(3, 3, 41, 41)
    img[:, :, 20, 20] = 1.0
    sigmas = torch.tensor([0.0, 1.0, 2.5])
    out = gaussian_blur(img, sigmas)
    assert torch.equal(out[0], img[0])  # std 0: unchanged
    yy = torch.arange(41, dtype=torch.float32).view(-1, 1) - 20
    for b, sd in ((1, 1.0), (2, 2.5)):
        mass = out[b, 0]
        assert float(mass.sum()) == pytest.approx(1.0, abs=1e-5)
        var_y = float((mass * yy ** 2).sum())
        assert var_y == pytest.approx(sd ** 2, rel=0.02)
        assert torch.allclose(mass, mass.T, atol=1e-7)  # the same in x and y
    flat = torch.full((2, 3, 16, 16), 0.3)
    assert torch.allclose(gaussian_blur(flat, torch.tensor([0.7, 3.0])), flat, atol=1e-6)  # edges reflected


def test_degrade_without_blur_is_bicubic_quarter_and_with_blur_is_softer():
    g = torch.Generator().manual_seed(0)
    hr = torch.rand(4, 3, 64, 64, generator=g) * 2 - 1
    assert torch.equal(degrade(hr, 0.0, torch.Generator().manual_seed(1)), downsample4(hr))
    soft = degrade(hr, 3.0, torch.Generator().manual_seed(1))
    assert soft.shape == (4, 3, 16, 16)
    # blurring before shrinking removes fine detail: less variance left than in the plain input
    assert float(soft.var()) < float(downsample4(hr).var())


def test_vertical_critic_judges_a_patch_for_its_rows():
    torch.manual_seed(0)
    critic = PatchCritic(8, 3, vertical=True)
    x = torch.rand(2, 3, 12, 12)
    top, bottom = y_channel(48)[:, :, :12], y_channel(48)[:, :, 36:]
    assert not torch.allclose(critic(x, top), critic(x, bottom))
    gp = gradient_penalty(critic, x, torch.rand(2, 3, 12, 12), torch.Generator().manual_seed(0), top)
    assert torch.isfinite(gp) and gp >= 0
    plain = PatchCritic(8, 3)
    assert plain.body[0].in_channels == 3 and critic.body[0].in_channels == 4


def _train(photo, **train):
    torch.manual_seed(0)
    gen = BaseGenerator(dataclasses.replace(PRESETS["tiny"].base, vae_scales=2))
    x = torch.from_numpy(images.load_rgb(photo, max_width=32)).unsqueeze(0)
    cfg = dataclasses.replace(PRESETS["tiny"].train, base_iterations=8, base_crop=16, **train)
    with torch_threads(1):
        hist = train_base(gen, x, cfg, seed=3)
    return gen, hist


def test_vae_adversarial_and_vertical_critics_train_reproducibly(photo):
    gen_a, hist = _train(photo, vae_adv_weight=1.0, critic_vertical=True)
    gen_b, _ = _train(photo, vae_adv_weight=1.0, critic_vertical=True)
    plain, _ = _train(photo)
    for (k, a), b in zip(gen_a.state_dict().items(), gen_b.state_dict().values()):
        assert torch.equal(a, b), f"{k} differs between two runs with the same seed"
    # the adversarial term on prior samples changes what the VAE scales learn
    assert not torch.equal(gen_a.decoder.convs[0].conv.weight, plain.decoder.convs[0].conv.weight)
    for s in range(PRESETS["tiny"].base.n_scales):
        assert all(torch.isfinite(torch.tensor(hist[f"s{s}_rec"])))


def test_option_values_are_checked_and_old_checkpoints_keep_their_training():
    with pytest.raises(ConfigError, match="sr_blur"):
        TrainConfig(sr_blur=-1)
    with pytest.raises(ConfigError, match="critic_vertical"):
        TrainConfig(critic_vertical=1)
    old = {"preset": "cpu", "base": {"padding": "replicate"}, "sr": {"arch": "srvgg"}, "train": {"lr": 1e-3}}
    train = checkpoint._upgrade_config(old)["train"]
    assert (train["sr_blur"], train["vae_adv_weight"], train["critic_vertical"]) == (0.0, 0.0, False)


def test_latent_temperature_scales_the_prior_draw_and_keeps_renders_seeded():
    cfg = dataclasses.replace(PRESETS["tiny"].base, latent_source="prior")
    torch.manual_seed(0)
    hot = BaseGenerator(cfg)
    cool = BaseGenerator(dataclasses.replace(cfg, temperature=0.5))
    cool.load_state_dict(hot.state_dict())
    z1, z5 = hot.latent(4, (6, 8), "cpu"), cool.latent(4, (6, 8), "cpu")
    assert torch.equal(z5, z1 * 0.5)
    assert torch.equal(cool.generate(24, 32, 4), cool.generate(24, 32, 4))
    assert not torch.equal(cool.generate(24, 32, 4), hot.generate(24, 32, 4))
    with pytest.raises(ConfigError, match="temperature"):
        dataclasses.replace(cfg, temperature=0)
    assert PRESETS["cpu"].base.temperature == 0.7 and PRESETS["paper"].base.temperature == 1.0


def test_latent_stride_draws_a_coarser_latent_that_the_decoder_spreads_smoothly():
    cfg = dataclasses.replace(PRESETS["tiny"].base, latent_stride=4, latent_source="prior")
    torch.manual_seed(0)
    gen = BaseGenerator(cfg)
    assert gen.latent_grid((9, 12)) == (3, 3)  # rounded up: every image pixel has a latent pixel
    z = gen.latent(4, (9, 12), "cpu")
    assert z.shape == (1, cfg.latent_channels, 3, 3)
    mu, logvar = gen.encode(torch.rand(2, 3, 9, 12) * 2 - 1)
    assert mu.shape == logvar.shape == (2, cfg.latent_channels, 3, 3)
    x = gen.decode(z, (9, 12))
    assert x.shape == (1, 3, 9, 12)
    # a coarse latent, spread bilinearly, varies less between neighbouring pixels than i.i.d. noise
    flat = gen.latent_grid((9, 12)) == (9, 12)
    assert not flat
    up = torch.nn.functional.interpolate(z, size=(9, 12), mode="bilinear", align_corners=False)
    iid = BaseGenerator(PRESETS["tiny"].base).latent(4, (9, 12), "cpu")
    assert float(up.diff(dim=3).abs().mean()) < 0.5 * float(iid.diff(dim=3).abs().mean())
    assert torch.equal(gen.generate(24, 32, 4), gen.generate(24, 32, 4))
    with pytest.raises(ConfigError, match="latent_stride"):
        dataclasses.replace(cfg, latent_stride=0)


def test_latent_stride_trains_and_round_trips_through_a_checkpoint(tmp_path):
    from ourgan_dist.config import ModelConfig

    cfg = ModelConfig(preset="tiny", base=dataclasses.replace(PRESETS["tiny"].base, latent_stride=2),
                      sr=PRESETS["tiny"].sr, train=dataclasses.replace(PRESETS["tiny"].train, base_iterations=3))
    model = checkpoint.build(cfg, seed=0)
    photo = torch.rand(1, 3, 24, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch_threads(1):
        hist = train_base(model.base, photo, cfg.train, 0)
    assert all(len(v) == 3 for k, v in hist.items() if k.endswith("_rec"))
    assert all(torch.isfinite(torch.tensor(v)).all() for v in hist.values())
    checkpoint.save(model.eval(), str(tmp_path / "m"), {"seed": 0})
    back = checkpoint.load(str(tmp_path / "m"))
    assert back.config.base.latent_stride == 2
    assert torch.equal(back.base.generate(24, 32, 5), model.base.generate(24, 32, 5))


def test_local_phase_statistics_see_the_grids_an_adversarial_loss_draws_and_not_random_texture():
    from ourgan_dist.train.sr import local_phase_deviation, phase_loss

    g = torch.Generator().manual_seed(0)
    smooth = F.interpolate(torch.rand(2, 3, 8, 8, generator=g), size=(64, 64), mode="bicubic", align_corners=False)
    crop = smooth + 0.03 * torch.randn(smooth.shape, generator=g)  # the photo: detail with no preferred position
    good = smooth + 0.03 * torch.randn(smooth.shape, generator=g)  # an output with other detail of the same kind
    dots = good.clone()  # + a dot of random sign at one position of every 4x4 cell: the star lattice
    dots[:, :, ::4, ::4] += 0.1 * (torch.randint(0, 2, (2, 1, 16, 16), generator=g) * 2 - 1)
    signed = good.clone()  # + a grid whose sign follows the content: brighter on the left, darker on the right
    signed[:, :, ::4, 0:32:4] += 0.05
    signed[:, :, ::4, 32::4] -= 0.05
    local = {k: float(phase_loss(x, crop, 4)) for k, x in (("good", good), ("dots", dots), ("signed", signed))}
    batch = {k: float(phase_loss(x, crop, 0)) for k, x in (("good", good), ("dots", dots), ("signed", signed))}
    assert local["dots"] > 1.3 * local["good"] and local["signed"] > 1.25 * local["good"]
    # the batch-wide means (block 0, the default) barely see either
    assert batch["dots"] < 1.2 * batch["good"] and batch["signed"] < 1.1 * batch["good"]
    dev = local_phase_deviation(smooth, 4)
    assert dev.shape == (2, 6, 16, 4, 4)  # means and detail RMS of 3 colours, 16 positions, 4x4 blocks
    assert float(dev.mean(dim=2).abs().max()) < 1e-6  # deviations from the block's average over positions
