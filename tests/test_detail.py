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
        assert arch.receptive_radius >= DETAIL_REACH and arch.receptive_radius >= arch.network_radius
    from ourgan_dist.models.guided_detail import CARRY

    assert DETAIL_REACH >= CARRY + 2  # guided detail's keys reach 2 past a block, its carry CARRY blocks before


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


def test_guided_detail_carries_a_repeated_place_on(big_photo, monkeypatch):
    """Where the base's field repeats one place for a run of pixels (it stretched the photo there),
    the band is read on from that place rather than laid again 4 pixels on: a run that the field
    then leaves where the photo goes on comes back as the photo. Not carried on (as before), the
    run lays one patch four times, a regular pattern the photo does not have."""
    from ourgan_dist.models import guided_detail
    from ourgan_dist.planning.geometry import Box

    photo = load_sr_photo(big_photo)[..., :192, :288]
    low, band = guided_detail.photo_band(photo, 192)
    x = low[None].float() / 127.5 - 1
    up = torch.nn.functional.interpolate(x, scale_factor=4, mode="bicubic", align_corners=False)
    sy, sx = torch.meshgrid(torch.arange(48), torch.arange(72), indexing="ij")
    stuck = sx.clone()
    stuck[:, 30:34] = 30  # columns 30 .. 33 all drawn from column 30, 34 on from where they belong
    whole = Box(0, 48, 0, 72)

    def err():
        y = guided_detail.apply_guided(
            up,
            x,
            torch.stack([sy, stuck]).to(torch.int16),
            low=low,
            band=band,
            window=whole,
            core=whole,
            level_size=(48, 72),
            source_size=(48, 72),
            strength=1.0,
        )
        return float((y - photo)[:, :, 16:176, 4 * 30 : 4 * 34].abs().mean())

    carried = err()
    monkeypatch.setattr(guided_detail, "CARRY_FLOOR", -1)  # every carry refused: the repeats stay
    monkeypatch.setattr(guided_detail, "CARRY_BUSIER", 0)
    repeated = err()
    bicubic = float((up - photo)[:, :, 16:176, 4 * 30 : 4 * 34].abs().mean())
    assert carried < 0.4 * bicubic and carried < 0.3 * repeated


def test_carry_on_follows_a_run_refuses_a_busier_place_and_reaches_no_further_than_carry():
    from ourgan_dist.models.guided_detail import CARRY, carry_on

    quiet = torch.full((30, 60), 10_000.0)  # every key place equally busy
    n = CARRY + 12
    bx = (torch.arange(n) + 5).repeat(CARRY + 2, 1)
    bx[:, CARRY + 3 : CARRY + 6] = CARRY + 7  # a run of three blocks repeating the block before them
    by = (torch.arange(CARRY + 2)[:, None] + 4).expand_as(bx).contiguous()  # each row a photo row on
    ry, rx = carry_on(by, bx, quiet)
    assert (rx == torch.arange(CARRY, n) + 5).all() and (ry == by[CARRY:, CARRY:]).all()  # the photo's columns in order
    busy = quiet.clone()
    busy[:, CARRY + 7 : CARRY + 10] = 1e9  # the places the run would carry on to (energy indexed by place - 1)
    _, rx = carry_on(by, bx, busy)
    assert (rx[:, 3:6] == CARRY + 7).all()  # refused: the repeat stays
    # down the columns likewise
    ry, rx = carry_on(bx.T.contiguous(), by.T.contiguous(), quiet.T.contiguous()[:, :30])
    assert (ry == (torch.arange(CARRY, n) + 5)[:, None]).all()
    # a block depends on the CARRY blocks before it only: any window with that margin gives the same
    g = torch.Generator().manual_seed(0)
    by = torch.randint(1, 20, (40, 50), generator=g)
    bx = (torch.arange(50) + torch.randint(-2, 2, (40, 50), generator=g)).clamp(1, 56)
    energy = torch.rand(30, 60, generator=g, dtype=torch.float64) * 1e5
    fy, fx = carry_on(by, bx, energy)
    wy, wx = carry_on(by[7:33, 11:40], bx[7:33, 11:40], energy)
    assert (wy == fy[7 : 33 - CARRY, 11 : 40 - CARRY]).all() and (wx == fx[7 : 33 - CARRY, 11 : 40 - CARRY]).all()


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
