"""The photo's detail patches added to every SR level (models/detail.py) and the first level's
guided detail (models/guided_detail.py): the library, exact tiling with both, what they add, and
checkpoints with and without them."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from conftest import make_photo
from helpers import arrays, assert_same_arrays, do_render, untrained
from ourgan_dist.config import PRESETS, SRConfig
from ourgan_dist.models import checkpoint
from ourgan_dist.models.detail import DetailLibrary
from ourgan_dist.models.sr_architecture import DETAIL_REACH, sr_architecture
from ourgan_dist.train.sr import load_sr_photo


@pytest.fixture(scope="module")
def big_photo(tmp_path_factory):
    return make_photo(tmp_path_factory.mktemp("detail") / "photo.png", 300, 200, seed=4)


def _model_with_detail(photo: str, out: str, detail: float = 1.0, patches: int = 512) -> str:
    """An untrained tiny model plus the photo's detail library (what training appends)."""
    cfg = PRESETS["tiny"]
    cfg = dataclasses.replace(cfg, sr=dataclasses.replace(cfg.sr, detail=detail, detail_patches=patches))
    model = untrained(cfg, seed=1)
    model.detail.build(load_sr_photo(photo), patches, seed=0)
    checkpoint.save(model, out, {"note": "test"})
    return out


def test_library_keys_patches_and_scales(big_photo):
    lib = DetailLibrary()
    assert not lib.ready
    lib.build(load_sr_photo(big_photo), 256, seed=0)
    s = lib.keys.shape[0]
    assert lib.keys.shape == (s, 256, 48) and lib.keys.dtype == torch.uint8
    assert lib.patches.shape == (s, 256, 3, 8, 8) and lib.patches.dtype == torch.int8
    assert s == 2 and torch.allclose(lib.scales, torch.tensor([1.0, 0.5]), atol=0.02)  # 300 px, then 150; 75 < 64 * ...
    assert float(lib.patches.float().mean(dim=(3, 4)).abs().max()) <= 1.0  # no colour: each channel's mean removed
    assert lib.patches.float().abs().amax() > 5  # the photo's ground texture is there
    again = DetailLibrary()
    again.build(load_sr_photo(big_photo), 256, seed=0)
    assert torch.equal(again.keys, lib.keys) and torch.equal(again.patches, lib.patches)
    assert lib.scale_index(300) == 0 and lib.scale_index(150) == 1 and lib.scale_index(1200) == 0
    assert lib.scale_index(40) == 1


def test_receptive_radius_covers_the_keys():
    for cfg in (
        SRConfig(arch="srvgg", convs=1, skip="none", prior=""),
        SRConfig(arch="srvgg", convs=16, prior=""),
        SRConfig(blocks=1, rdbs_per_block=1, dense_convs=2, prior=""),
    ):
        arch = sr_architecture(cfg)
        assert arch.receptive_radius >= DETAIL_REACH and arch.receptive_radius == arch.network_radius


def test_tiled_equals_untiled_bit_for_bit_with_detail(big_photo, tmp_path, monkeypatch):
    from ourgan_dist.models import detail, guided_detail

    model = _model_with_detail(big_photo, str(tmp_path / "model"))
    whole, tiled = str(tmp_path / "whole.zarr"), str(tmp_path / "tiled.zarr")
    do_render(model, whole, size="301x187", tile=0)
    do_render(model, tiled, size="301x187", tile=32, chunk=16)
    assert_same_arrays(arrays(whole), arrays(tiled))
    field = arrays(whole)["generation/field"]
    assert field.any()  # the first level read the base's correspondence
    src_w = checkpoint.load(model).base.source_size(field.shape[1])[1]
    assert (field[1] >= src_w).any() and (field[1] < src_w).any()  # some of it read mirrored, some not
    # bands of block rows and search chunks cut elsewhere: the same bits
    monkeypatch.setattr(detail, "_BAND", 5)
    monkeypatch.setattr(detail, "_CHUNK", 7)
    monkeypatch.setattr(guided_detail, "_BAND_ROWS", 3)
    do_render(model, str(tmp_path / "t48.zarr"), size="301x187", tile=48, chunk=16)
    assert_same_arrays(arrays(whole), arrays(str(tmp_path / "t48.zarr")))


def test_detail_adds_the_photos_fine_band_without_moving_colours(big_photo, tmp_path):
    from ourgan_dist.planning.geometry import Box

    photo = load_sr_photo(big_photo)
    lib = DetailLibrary()
    lib.build(photo, 512, seed=0)
    x = torch.nn.functional.interpolate(photo, size=(50, 75), mode="area")  # an SR level's source
    whole = Box(0, 50, 0, 75)
    z = torch.randn(1, 3, 50, 75, generator=torch.Generator().manual_seed(0))
    band = (
        lib.apply(torch.zeros(1, 3, 200, 300), x, z, window=whole, core=whole, level_size=(50, 75), strength=1.0, choices=16)
        * 127.5
    )  # in uint8 steps
    assert float(band.std()) > 5  # the photo's ground texture
    assert float(torch.nn.functional.avg_pool2d(band, 16).abs().mean()) < 0.05 * float(band.std())  # no colour
    # through the renderer: a model with detail differs from the same model without by such a band
    a, b = str(tmp_path / "on.zarr"), str(tmp_path / "off.zarr")
    do_render(_model_with_detail(big_photo, str(tmp_path / "on"), detail=1.0), a, size="128x96", tile=0)
    do_render(_model_with_detail(big_photo, str(tmp_path / "off"), detail=0.0), b, size="128x96", tile=0)
    added = arrays(a)["0"].astype(np.float32) - arrays(b)["0"].astype(np.float32)
    assert float(added.std()) > 3


def test_a_library_survives_the_checkpoint(big_photo, tmp_path):
    out = _model_with_detail(big_photo, str(tmp_path / "model"))
    m = checkpoint.load(out)
    assert m.detail.ready and m.config.sr.detail == 1.0
    lib = DetailLibrary()
    lib.build(load_sr_photo(big_photo), 512, seed=0)
    assert torch.equal(m.detail.keys, lib.keys) and torch.equal(m.detail.patches, lib.patches)


def test_training_builds_the_library(photo, tmp_path):
    from ourgan_dist.train import train_model

    train_model(photo, str(tmp_path / "m"), preset="tiny", iterations=2, seed=0, device="cpu", progress=False)
    m = checkpoint.load(str(tmp_path / "m"))
    assert m.detail.ready and m.detail.keys.shape[1] == m.config.sr.detail_patches
    train_model(photo, str(tmp_path / "u"), preset="tiny", iterations=0, seed=0, device="cpu", progress=False)
    assert not checkpoint.load(str(tmp_path / "u")).detail.ready  # an untrained model has seen no photo


def test_guided_detail_gives_the_photo_back_where_the_base_copied_it(big_photo):
    """The first level reads the photo's band where the base was drawn from: a base that is the
    photo shrunk, with the identity correspondence, comes back as the photo at the level's size,
    far closer than bicubic; a wrong correspondence gives no such gain."""
    from ourgan_dist.models.guided_detail import apply_guided, photo_band
    from ourgan_dist.planning.geometry import Box

    photo = load_sr_photo(big_photo)[..., :192, :288]  # (1, 3, 192, 288)
    low, band = photo_band(photo, 192)
    assert low.shape == (3, 48, 72) and band.shape == (3, 192, 288)
    x = low[None].float() / 127.5 - 1  # the base: the photo shrunk x4, as the band's keys saw it
    up = torch.nn.functional.interpolate(x, scale_factor=4, mode="bicubic", align_corners=False)
    sy, sx = torch.meshgrid(torch.arange(48), torch.arange(72), indexing="ij")
    whole = Box(0, 48, 0, 72)

    def guided(field):
        return apply_guided(
            up, x, field, low=low, band=band, window=whole, core=whole, level_size=(48, 72), source_size=(48, 72), strength=1.0
        )

    inner = (slice(None), slice(None), slice(16, 176), slice(16, 272))
    err = lambda y: float((y - photo)[inner].abs().mean())  # noqa: E731
    same = guided(torch.stack([sy, sx]).to(torch.int16))
    assert err(same) < 0.4 * err(up)
    shifted = guided(torch.stack([(sy + 17) % 48, (sx + 29) % 72]).to(torch.int16))
    assert err(shifted) > 0.9 * err(up)
    # a base drawn from the photo's mirror image (field columns 72 .. 143: patches.doubled) gets
    # the mirror image's detail: the photo mirrored comes back
    x, up, photo = x.flip(-1), up.flip(-1), photo.flip(-1)
    assert err(guided(torch.stack([sy, sx + 72]).to(torch.int16))) < 0.4 * err(up)


def test_a_model_trained_before_guided_detail_loads_and_renders_with_its_library(big_photo, tmp_path):
    from ourgan_dist.engine.tile import guided_levels

    out = _model_with_detail(big_photo, str(tmp_path / "model"))
    m = checkpoint.load(out)
    assert m.detail.guided and guided_levels(m)
    payload = torch.load(f"{out}/model.pt", weights_only=False)
    del payload["detail"]["guide"]
    torch.save(payload, f"{out}/model.pt")
    old = checkpoint.load(out)
    assert old.detail.ready and not old.detail.guided and not guided_levels(old)
    store = str(tmp_path / "old.zarr")
    do_render(out, store, size="128x96", tile=0)
    assert not arrays(store)["generation/field"].any()  # nothing written where nothing is read
