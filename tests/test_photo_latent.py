"""A new image from the photo, warped (``latent_source="photo"``): the photo itself at
``warp_scale`` (``warp_at`` > 0), its reconstruction there (checkpoints of the version before),
or its latent map (``warp_at = 0``, checkpoints from before that)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from ourgan_dist.config import PRESETS, ModelConfig
from ourgan_dist.errors import ConfigError
from ourgan_dist.models import checkpoint
from ourgan_dist.models.base import BaseGenerator, warp_grid
from ourgan_dist.train.base import train_base
from ourgan_dist.train.loop import torch_threads


def test_warp_keeps_rows_and_reads_each_row_in_order_without_folding():
    for seed in range(6):
        g = warp_grid(seed, (6, 8), (6, 8), 1.0, True)[0]  # (h, w, 2): x, y
        assert g.shape == (6, 8, 2)
        assert torch.allclose(g[:, :, 1], torch.linspace(-1, 1, 6).view(6, 1).expand(6, 8))  # rows stay put
        steps = g[:, :, 0].diff(dim=1)
        assert bool((steps > 0).all()) or bool((steps < 0).all())  # strictly monotone: never folds or repeats
        # the photo's aspect: each row reads the whole photo, edge to edge
        assert torch.allclose(g[:, :, 0].abs().amax(dim=1), torch.ones(6), atol=1e-5)
        assert torch.allclose(g[:, [0, -1], 0].abs(), torch.ones(6, 2), atol=1e-5)
    flips = {bool(warp_grid(s, (6, 8), (6, 8), 1.0, True)[0, 0, :, 0].diff()[0] < 0) for s in range(12)}
    assert flips == {True, False}  # some seeds mirror the layout, some do not
    assert all(bool(warp_grid(s, (6, 8), (6, 8), 1.0, False)[0, 0, :, 0].diff().gt(0).all()) for s in range(12))


def test_warp_is_a_function_of_the_seed_and_its_strength():
    a, b = warp_grid(3, (6, 8), (6, 8), 1.0, True), warp_grid(3, (6, 8), (6, 8), 1.0, True)
    assert torch.equal(a, b)
    assert not torch.equal(a, warp_grid(4, (6, 8), (6, 8), 1.0, True))
    # strength 0 without flip: the identity map onto the photo's pixel centres
    ident = warp_grid(3, (6, 8), (6, 8), 0.0, False)[0]
    assert torch.allclose(ident[:, :, 0], torch.linspace(-1, 1, 8).expand(6, 8), atol=1e-6)
    # a stronger warp stretches more: its steps along a row vary more
    spread = [float(warp_grid(3, (6, 16), (6, 16), s, False)[0, :, :, 0].diff(dim=1).std()) for s in (0.5, 2.0)]
    assert spread[1] > spread[0]


def test_wider_and_narrower_maps_keep_the_photos_scale():
    wide = warp_grid(0, (6, 16), (6, 8), 0.0, False)[0, :, :, 0]  # twice the photo's aspect
    assert float(wide.min()) == pytest.approx(-2.0, abs=1e-5) and float(wide.max()) == pytest.approx(2.0, abs=1e-5)
    for seed in range(5):  # half the photo's aspect: a window of half its width, inside it
        narrow = warp_grid(seed, (6, 4), (6, 8), 1.0, False)[0, :, :, 0]
        assert float(narrow.max() - narrow.min()) == pytest.approx(1.0, abs=1e-5)
        assert -1 - 1e-6 <= float(narrow.min()) and float(narrow.max()) <= 1 + 1e-6


def test_photo_latent_is_read_through_the_warp_and_untrained_generators_draw_from_the_prior():
    cfg = dataclasses.replace(PRESETS["tiny"].base, latent_warp=0.0, latent_flip=False)
    torch.manual_seed(0)
    gen = BaseGenerator(cfg)
    prior = BaseGenerator(dataclasses.replace(cfg, latent_source="prior"))
    assert torch.equal(gen.latent(2, (6, 8), "cpu"), prior.latent(2, (6, 8), "cpu"))  # no photo seen yet
    mu = torch.randn(1, cfg.latent_channels, 6, 8, generator=torch.Generator().manual_seed(1))
    gen.set_photo_latent(mu)
    assert torch.allclose(gen.latent(2, (6, 8), "cpu"), mu, atol=1e-5)  # identity warp: the photo's own latent
    assert gen.latent(2, (6, 16), "cpu").shape == (1, cfg.latent_channels, 6, 16)
    warped = BaseGenerator(PRESETS["tiny"].base)
    warped.set_photo_latent(mu)
    z0, z1 = warped.latent(0, (6, 8), "cpu"), warped.latent(1, (6, 8), "cpu")
    assert not torch.equal(z0, z1) and torch.equal(z0, warped.latent(0, (6, 8), "cpu"))
    # every value is read from the photo's latent: none lies outside its range
    assert float(z0.min()) >= float(mu.min()) - 1e-5 and float(z0.max()) <= float(mu.max()) + 1e-5
    with torch_threads(2):
        two = warped.latent(0, (6, 8), "cpu")
    with torch_threads(1):
        assert torch.equal(warped.latent(0, (6, 8), "cpu"), two)  # the same bits on any thread count
    for bad in (dict(latent_source="posterior"), dict(latent_warp=-1), dict(latent_flip=1), dict(warp_at=1.5)):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            dataclasses.replace(cfg, **bad)


def test_warp_scale_is_the_scale_nearest_warp_at_of_the_width_for_any_base_size():
    assert BaseGenerator(PRESETS["cpu"].base).warp_scale() == 4  # 128 of 256 px
    assert BaseGenerator(PRESETS["paper"].base).warp_scale() == 6
    assert BaseGenerator(PRESETS["tiny"].base).warp_scale() == 1
    assert BaseGenerator(dataclasses.replace(PRESETS["cpu"].base, warp_at=0.0)).warp_scale() == 0
    assert BaseGenerator(dataclasses.replace(PRESETS["cpu"].base, warp_at=1.0)).warp_scale() == 6
    gen = BaseGenerator(PRESETS["cpu"].base)
    for h, w in ((192, 256), (170, 256), (300, 480)):  # the photo's base, and wider renders' bases
        assert gen.scale_sizes(h, w)[4][1] == pytest.approx(w / 2, abs=1)


def _identity_warp_generator() -> tuple[BaseGenerator, list[tuple[int, int]], int]:
    """A tiny generator whose warp is the identity and which keeps a photo latent: (gen, the
    scale sizes of a 24x32 photo, the start's scale)."""
    cfg = dataclasses.replace(PRESETS["tiny"].base, latent_warp=0.0, latent_flip=False)
    torch.manual_seed(0)
    gen = BaseGenerator(cfg).eval()
    gen.noise_amps.fill_(0.1)
    gen.set_photo_latent(torch.randn(1, cfg.latent_channels, 12, 16, generator=torch.Generator().manual_seed(1)))
    return gen, gen.scale_sizes(24, 32), gen.warp_scale()


def test_a_checkpoint_of_the_version_before_starts_from_the_photos_reconstruction_at_warp_scale():
    gen, sizes, k = _identity_warp_generator()
    assert 0 < k < len(sizes) - 1
    with torch.no_grad():
        latent_start = gen.start(2, sizes, "cpu")
        assert latent_start[1] == 0  # no reconstruction kept yet: the latent is warped, as before
        photo = gen.reconstruct(sizes, k)
        gen.set_photo_image(photo)
        x, first = gen.start(2, sizes, "cpu")
        assert first == k and torch.allclose(x, photo.clamp(-1, 1), atol=1e-5)  # identity warp: the kept image
        expected = x  # then the scales above k, with the seed's noise
        for s in range(k + 1, len(sizes)):
            expected = gen.refine(s, expected, sizes[s], gen.scale_noise(2, s, sizes[s], "cpu"))
        assert torch.equal(gen.generate(24, 32, 2), expected.clamp(-1, 1))
        warped = BaseGenerator(PRESETS["tiny"].base).eval()
        warped.load_state_dict(gen.state_dict())
        a, b = warped.start(0, sizes, "cpu")[0], warped.start(1, sizes, "cpu")[0]
        assert not torch.equal(a, b) and torch.equal(a, warped.start(0, sizes, "cpu")[0])
        with torch_threads(2):
            two = warped.generate(24, 48, 0)  # a wider image reads past the photo's edges, mirrored
        with torch_threads(1):
            assert torch.equal(warped.generate(24, 48, 0), two)  # the same bits on any thread count
        assert two.shape == (1, 3, 24, 48)


def test_a_new_image_reads_the_photo_at_base_width_shrunk_to_its_starts_height(tmp_path):
    gen, sizes, k = _identity_warp_generator()
    with torch.no_grad():
        gen.set_photo_image(gen.reconstruct(sizes, k))
    before = BaseGenerator(gen.cfg).eval()  # a checkpoint of the version before: the reconstruction only
    before.load_state_dict(gen.state_dict())
    gen.set_photo_base(torch.rand(1, 3, 24, 32, generator=torch.Generator().manual_seed(3)) * 2 - 1)

    def shrunk(size):
        return F.interpolate(gen.photo_base, size=size, mode="bicubic", antialias=True, align_corners=False)

    with torch.no_grad():
        # at the photo's base size (identity warp): the photo shrunk to the start's scale
        x, first = gen.start(4, sizes, "cpu")
        assert first == k and torch.allclose(x, shrunk(sizes[k]).clamp(-1, 1), atol=1e-5)
        # a base drawn wider than the photo's (a render size between two level counts)
        mid = gen.scale_sizes(30, 40)
        assert sizes[k][0] < mid[k][0] < 24
        assert torch.allclose(gen.start(4, mid, "cpu")[0], shrunk(mid[k]).clamp(-1, 1), atol=1e-5)
        big = gen.scale_sizes(39, 52)  # a start the photo's own height: the photo itself
        assert big[k] == (24, 32) and torch.allclose(gen.start(4, big, "cpu")[0], gen.photo_base.clamp(-1, 1), atol=1e-5)
        assert torch.equal(gen.start_source(40), gen.photo_base)  # taller still: read whole, enlarged by the warp
        # the reconstruction is not read once the photo is kept
        other = BaseGenerator(gen.cfg).eval()
        other.load_state_dict({**gen.state_dict(), "photo_image": torch.zeros_like(gen.photo_image)})
        assert torch.equal(other.generate(30, 40, 5), gen.generate(30, 40, 5))
        with torch_threads(2):
            two = gen.generate(30, 40, 5)
        with torch_threads(1):
            assert torch.equal(gen.generate(30, 40, 5), two)  # the same bits on any thread count
    model = checkpoint.build(ModelConfig(preset="tiny", base=gen.cfg, sr=PRESETS["tiny"].sr,
                                         train=PRESETS["tiny"].train), seed=0).eval()
    model.base = gen
    back = _as_written_before(model, tmp_path, config_key=None, buffers=("photo_base",))
    assert back.base.photo_base.numel() == 0  # the version before's checkpoint warps its reconstruction, as it did
    for h, w in ((24, 32), (30, 40)):
        assert torch.equal(back.base.generate(h, w, 5), before.generate(h, w, 5))


def test_training_keeps_the_photos_latent_and_base_and_a_checkpoint_carries_them(tmp_path, monkeypatch):
    cfg = ModelConfig(preset="tiny", base=PRESETS["tiny"].base, sr=PRESETS["tiny"].sr,
                      train=dataclasses.replace(PRESETS["tiny"].train, base_iterations=3))
    model = checkpoint.build(cfg, seed=0)
    photo = torch.rand(1, 3, 24, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    gen = model.base
    starts = []
    real_start = gen.start

    def start(seed, sizes, device):  # the GAN scales above k learn from starts made as rendering makes them
        out = real_start(seed, sizes, device)
        starts.append(out[1])
        return out

    monkeypatch.setattr(gen, "start", start)
    with torch_threads(1):
        train_base(gen, photo, cfg.train, 0)
    sizes, k = gen.scale_sizes(24, 32), gen.warp_scale()
    assert starts and set(starts) == {k} and len(starts) == (len(sizes) - 1 - k) * cfg.train.base_iterations
    assert gen.photo_latent.shape == (1, cfg.base.latent_channels, *gen.latent_grid(sizes[0]))
    with torch.no_grad():
        from ourgan_dist.train.base import pyramid

        assert torch.equal(gen.photo_latent, gen.encode(pyramid(photo, sizes)[0])[0])  # the posterior mean
        assert torch.equal(gen.photo_base, pyramid(photo, sizes)[-1])  # the photo itself, at base width
        assert gen.photo_image.numel() == 0  # the version before's start; not kept any more
    monkeypatch.undo()
    checkpoint.save(model.eval(), str(tmp_path / "m"), {"seed": 0})
    back = checkpoint.load(str(tmp_path / "m"))
    assert torch.equal(back.base.photo_latent, gen.photo_latent)
    assert torch.equal(back.base.photo_base, gen.photo_base)
    assert torch.equal(back.base.generate(24, 32, 5), model.base.generate(24, 32, 5))


@pytest.mark.parametrize("warp_at", [0.5, 0.0])
def test_gan_scales_up_to_the_start_learn_only_the_reconstruction_path(monkeypatch, warp_at):
    import ourgan_dist.train.base as base_training

    cfg = ModelConfig(preset="tiny", base=dataclasses.replace(PRESETS["tiny"].base, warp_at=warp_at),
                      sr=PRESETS["tiny"].sr, train=dataclasses.replace(PRESETS["tiny"].train, base_iterations=12))
    gen = checkpoint.build(cfg, seed=0).base
    photo = torch.rand(1, 3, 24, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    critics = []
    real_critic = base_training._critic

    def critic(cfg_, gen_, seed, s, device):
        critics.append(s)
        return real_critic(cfg_, gen_, seed, s, device)

    monkeypatch.setattr(base_training, "_critic", critic)
    with torch_threads(1):
        hist = train_base(gen, photo, cfg.train, 0)
    n, n_vae, k = cfg.base.n_scales, cfg.base.vae_scales, gen.warp_scale()
    if warp_at == 0:  # the latent is warped: every GAN scale draws new detail, and learns it
        assert critics == list(range(n_vae, n))
        return
    assert n_vae <= k < n - 1  # the preset has GAN scales on both sides of the start
    assert critics == list(range(k + 1, n))  # no critic for a scale whose noisy samples are never drawn
    sizes = gen.scale_sizes(24, 32)
    reals = base_training.pyramid(photo, sizes)
    for s in range(n_vae, k + 1):
        rec = hist[f"s{s}_rec"]
        assert f"s{s}_d" not in hist and len(rec) == cfg.train.base_iterations
        assert sum(rec[-5:]) < sum(rec[:5])  # it learns the photo at its scale
        with torch.no_grad():  # the last recorded loss is the kept reconstruction's, less one step
            err = float(torch.nn.functional.mse_loss(gen.reconstruct(sizes, s), reals[s]))
        assert err < rec[0]


def _as_written_before(model, tmp_path, *, config_key: str | None, buffers: tuple[str, ...]):
    """``model`` saved, then loaded from a checkpoint without the base config's ``config_key``
    and the base's ``buffers``, as a version before they existed wrote it."""
    path = str(tmp_path / "old")
    checkpoint.save(model, path, {"seed": 0})
    payload = torch.load(f"{path}/model.pt", weights_only=True)
    if config_key:
        del payload["config"]["base"][config_key]
    for buffer in buffers:
        del payload["base"][buffer]
    torch.save(payload, f"{path}/model.pt")
    return checkpoint.load(path)


def test_checkpoints_from_before_the_photo_image_keep_warping_the_latent(tmp_path):
    base = dataclasses.replace(PRESETS["tiny"].base, warp_at=0.0, latent_warp=1.0)
    cfg = ModelConfig(preset="tiny", base=base, sr=PRESETS["tiny"].sr, train=PRESETS["tiny"].train)
    model = checkpoint.build(cfg, seed=0).eval()
    model.base.set_photo_latent(torch.randn(1, base.latent_channels, 12, 16, generator=torch.Generator().manual_seed(2)))
    back = _as_written_before(model, tmp_path, config_key="warp_at", buffers=("photo_image", "photo_base"))
    assert back.config.base.warp_at == 0.0 and back.base.photo_image.numel() == 0
    assert torch.equal(back.base.generate(24, 32, 3), model.base.generate(24, 32, 3))


def test_checkpoints_from_before_the_photo_latent_keep_drawing_from_the_prior(tmp_path):
    cfg = ModelConfig(preset="tiny", base=dataclasses.replace(PRESETS["tiny"].base, latent_source="prior"),
                      sr=PRESETS["tiny"].sr, train=PRESETS["tiny"].train)
    model = checkpoint.build(cfg, seed=0).eval()
    back = _as_written_before(model, tmp_path, config_key="latent_source", buffers=("photo_latent", "photo_image", "photo_base"))
    assert back.config.base.latent_source == "prior"
    assert torch.equal(back.base.generate(24, 32, 3), model.base.generate(24, 32, 3))
