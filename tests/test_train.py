"""One-shot training on tiny models in seconds: losses fall, SR beats bicubic, training is
seeded, trained models keep tiled == untiled, photos as users have them load or fail clearly."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from helpers import arrays, assert_same_arrays, do_render, environ, tiny_gan_config
from ourgan_dist import images
from ourgan_dist.config import PRESETS, SRConfig
from ourgan_dist.errors import UserError
from ourgan_dist.models import checkpoint
from ourgan_dist.models.base import BaseGenerator
from ourgan_dist.models.sr import SRNet, build_sr
from ourgan_dist.train import train_model
from ourgan_dist.train.base import train_base
from ourgan_dist.train.loop import torch_threads
from ourgan_dist.train.sr import downsample4, train_sr

ROCKET = os.path.join(os.path.dirname(__file__), "..", "ourgan_dist", "data", "rocket.jpg")


def first_last(v, n=10):
    return float(np.mean(v[:n])), float(np.mean(v[-n:]))


@pytest.mark.parametrize("vae_scales", [1, 2])
def test_base_losses_fall(photo, vae_scales):
    """Every scale learns, with one VAE scale and with VAE scales past the first (KL at each)."""
    torch.manual_seed(0)
    gen = BaseGenerator(dataclasses.replace(tiny_gan_config().base, vae_scales=vae_scales))
    x = torch.from_numpy(images.load_rgb(photo, max_width=32)).unsqueeze(0)
    cfg = dataclasses.replace(PRESETS["tiny"].train, base_iterations=60)
    with torch_threads(1):  # small tensors: one thread is fastest (see train/loop.py)
        hist = train_base(gen, x, cfg, seed=0)
    for s in range(gen.cfg.n_scales):
        a, b = first_last(hist[f"s{s}_rec"])
        assert b < a, f"scale {s} reconstruction did not improve: {a:.4f} -> {b:.4f}"
    assert (gen.noise_amps[gen.cfg.vae_scales :] > 0).all() and (gen.noise_amps[: gen.cfg.vae_scales] == 0).all()


def psnr(a, b):
    return float(10 * torch.log10(4 / F.mse_loss(a, b)))


def test_sr_beats_bicubic_on_its_photo():
    torch.manual_seed(0)
    photo = torch.from_numpy(images.load_rgb(ROCKET, max_width=256)).unsqueeze(0)
    net = SRNet(
        SRConfig(
            features=16,
            growth=8,
            blocks=1,
            rdbs_per_block=1,
            dense_convs=3,
            noise_amp=0.0,
            prior="",
            skip="bicubic",
        )
    )
    cfg = dataclasses.replace(PRESETS["tiny"].train, sr_iterations=150, sr_crop=48, sr_batch=4, lr=2e-3)
    with torch_threads(1):
        hist = train_sr(net, photo, cfg, seed=0)
    a, b = first_last(hist["l1"])
    assert b < a
    hr = photo[:, :, : photo.shape[2] // 4 * 4, : photo.shape[3] // 4 * 4]
    lr = downsample4(hr)
    with torch.no_grad():
        sr = net.eval()(lr)
    bic = F.interpolate(lr, scale_factor=4, mode="bicubic", align_corners=False).clamp(-1, 1)
    assert psnr(sr, hr) > psnr(bic, hr)


@pytest.fixture(scope="module")
def trained(photo, tmp_path_factory):
    d = tmp_path_factory.mktemp("trained")
    a = str(d / "a")
    train_model(photo, a, preset="tiny", seed=7, device="cpu", progress=False)
    return a


def test_same_seed_same_checkpoint_and_samples(photo, trained, tmp_path):
    b = str(tmp_path / "b")
    train_model(photo, b, preset="tiny", seed=7, device="cpu", progress=False)
    ma, mb = checkpoint.load(trained), checkpoint.load(b)
    for k, v in ma.sr.state_dict().items():
        assert torch.equal(v, mb.sr.state_dict()[k]), k
    for k, v in ma.base.state_dict().items():
        assert torch.equal(v, mb.base.state_dict()[k]), k
    assert torch.equal(ma.base.generate(21, 32, 3), mb.base.generate(21, 32, 3))
    c = str(tmp_path / "c")
    train_model(photo, c, preset="tiny", seed=8, device="cpu", progress=False)
    assert not torch.equal(checkpoint.load(c).sr.state_dict()["convs.0.weight"], ma.sr.state_dict()["convs.0.weight"])


def test_trained_model_meta_and_samples_differ_by_seed(trained, photo):
    m = checkpoint.load(trained)
    meta = m.meta
    assert meta["trained"] and meta["photo"]["width"] == 53 and meta["photo"]["height"] == 37
    assert meta["photo"]["sha256"] == images.file_sha256(photo)
    assert "final_losses" in meta and meta["train_config"]["base_iterations"] == PRESETS["tiny"].train.base_iterations
    a, b = m.base.generate(21, 32, 0), m.base.generate(21, 32, 1)
    assert not torch.equal(a, b)


def test_trained_model_still_tiled_equals_untiled(trained, tmp_path):
    do_render(trained, str(tmp_path / "u"), "301x187", tile=0)
    do_render(trained, str(tmp_path / "t"), "301x187", tile=32)
    assert_same_arrays(arrays(str(tmp_path / "u")), arrays(str(tmp_path / "t")))


def test_no_vertical_coord_ablation(photo, tmp_path):
    out = str(tmp_path / "noy")
    train_model(photo, out, preset="tiny", iterations=2, seed=1, vertical_coord=False, device="cpu", progress=False)
    m = checkpoint.load(out)
    assert m.config.base.vertical_coord is False and m.base.cfg.vertical_coord is False
    gan = str(tmp_path / "noy-gan")
    train_model(photo, gan, config=tiny_gan_config(), iterations=2, seed=1, vertical_coord=False, device="cpu", progress=False)
    assert checkpoint.load(gan).base.stages[0].convs[0].conv.in_channels == 3


# ---- photos as users have them ---------------------------------------------------------------


def _save(arr, path, **kw):
    import pyvips

    im = pyvips.Image.new_from_array(arr)
    if arr.dtype == np.uint16:
        im = im.copy(interpretation="rgb16" if arr.ndim == 3 and arr.shape[2] >= 3 else "grey16")
    im.write_to_file(str(path), **kw)
    return str(path)


def _gradient(h=40, w=60, bands=3, dtype=np.uint8):
    top = 255 if dtype == np.uint8 else 65535
    y = np.linspace(0, top, h)[:, None, None]
    arr = np.broadcast_to(y, (h, w, bands)).astype(dtype)
    return np.ascontiguousarray(arr)


def test_photo_kinds_load_as_rgb(tmp_path):
    cases = {
        "gray.png": _gradient(bands=1)[:, :, 0],
        "alpha.png": np.dstack([_gradient(), np.full((40, 60), 255, np.uint8)]),
        "rgb16.png": _gradient(dtype=np.uint16),
        "gray16.tif": _gradient(bands=1, dtype=np.uint16)[:, :, 0],
        "rgb.webp": _gradient(),
        "rgb.tif": _gradient(),
    }
    for name, arr in cases.items():
        path = _save(arr, tmp_path / name)
        x = images.load_rgb(path)
        assert x.shape == (3, 40, 60), name
        assert x[:, 0].mean() < -0.9 and x[:, -1].mean() > 0.9, name  # dark top, bright bottom kept


def test_cmyk_and_exif_rotation(tmp_path):
    import pyvips

    rgb = pyvips.Image.new_from_array(_gradient())
    cmyk = rgb.colourspace("cmyk") if hasattr(rgb, "colourspace") else None
    path = str(tmp_path / "cmyk.jpg")
    cmyk.write_to_file(path)
    assert pyvips.Image.new_from_file(path).bands == 4
    x = images.load_rgb(path)
    assert x.shape == (3, 40, 60) and x[:, 0].mean() < x[:, -1].mean()
    # EXIF orientation 6: stored landscape, shown portrait (rotated 90 degrees clockwise)
    rot = rgb.copy()
    rot.set_type(pyvips.GValue.gint_type, "orientation", 6)
    rpath = str(tmp_path / "rot.jpg")
    rot.write_to_file(rpath)
    info = images.probe(rpath)
    assert (info.width, info.height) == (40, 60)
    y = images.load_rgb(rpath)
    assert y.shape == (3, 60, 40)
    assert y[:, :, 0].mean() > y[:, :, -1].mean()  # the bright bottom turned to the left


def test_bad_photos_fail_with_one_line(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        images.probe(str(tmp_path / "none.jpg"))
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(UserError, match="not a readable image"):
        images.probe(str(tmp_path / "text.png"))
    good = _save(_gradient(200, 300), tmp_path / "full.jpg")
    data = open(good, "rb").read()
    (tmp_path / "trunc.jpg").write_bytes(data[: len(data) // 3])
    with pytest.raises(UserError):
        images.load_rgb(str(tmp_path / "trunc.jpg"))
    tiny = _save(_gradient(1, 1), tmp_path / "one.png")
    with pytest.raises(UserError, match="too small"):
        images.probe(tiny)
    with pytest.raises(UserError, match="directory"):
        images.probe(str(tmp_path))


def test_enormous_photo_is_shrunk_on_load(tmp_path):
    import resource

    import pyvips

    path = str(tmp_path / "huge.jpg")
    pyvips.Image.black(20000, 20000, bands=3).draw_rect([200, 100, 50], 0, 0, 20000, 8000, fill=True).write_to_file(path, Q=50)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with environ({"OURGAN_MAX_PHOTO_PIXELS": str(20000 * 20000)}):  # 400 Mpx: over the default limit, allowed
        x = images.load_rgb(path, max_width=256)
    grew_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert x.shape == (3, 256, 256)
    assert grew_mib < 400, f"decoding grew peak RSS by {grew_mib:.0f} MiB (the whole image is 1144 MiB)"


# ---- training run mechanics --------------------------------------------------------------------


def test_sr_never_sees_the_held_out_strip():
    """Poison the held-out strip with NaN: a single read of it would make the losses NaN."""
    from ourgan_dist.train.sr import HOLDOUT, holdout_columns

    torch.manual_seed(0)
    photo = torch.from_numpy(images.load_rgb(ROCKET, max_width=96)).unsqueeze(0)
    x0 = holdout_columns(photo.shape[3], HOLDOUT)
    assert 0.8 * photo.shape[3] < x0 < photo.shape[3]
    photo[:, :, :, x0:] = float("nan")
    net = build_sr(PRESETS["tiny"].sr)
    cfg = dataclasses.replace(PRESETS["tiny"].train, sr_iterations=25, sr_crop=32)
    with torch_threads(1):
        hist = train_sr(net, photo, cfg, seed=0, holdout=HOLDOUT)
        assert np.isfinite(hist["l1"]).all()
        with pytest.raises(AssertionError):  # the same run without the holdout does read it
            hist = train_sr(build_sr(PRESETS["tiny"].sr), photo, cfg, seed=0, holdout=0.0)
            assert np.isfinite(hist["l1"]).all()


def test_side_by_side_training_gives_the_same_bytes(photo, tmp_path):
    """On CPU the SR network may train in a second process; the checkpoint must not change."""
    a, b = str(tmp_path / "seq"), str(tmp_path / "par")
    gan = tiny_gan_config()  # only the GAN base trains beside the SR network
    ida = train_model(photo, a, config=gan, schedule=(6, 12), seed=4, device="cpu", progress=False, parallel=False)
    idb = train_model(photo, b, config=gan, schedule=(6, 12), seed=4, device="cpu", progress=False, parallel=True)
    assert ida == idb
    assert open(os.path.join(a, "model.pt"), "rb").read() == open(os.path.join(b, "model.pt"), "rb").read()
    import json

    log = json.load(open(os.path.join(b, "training.json")))
    assert log["parallel"] is True and log["model_id"] == idb and log["seconds"]["total"] > 0
    assert len(log["loss_curves"]["sr_l1"]) > 0


def test_checkpoint_round_trip_gives_identical_outputs(trained, tmp_path):
    m = checkpoint.load(trained)
    again = str(tmp_path / "again")
    assert checkpoint.save(m, again) == m.model_id  # same bytes, same id
    m2 = checkpoint.load(again)
    assert torch.equal(m.base.generate(25, 38, 5), m2.base.generate(25, 38, 5))
    x = m.base.generate(25, 38, 6)
    z = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(m.sr(x, z), m2.sr(x, z))
    assert torch.equal(m.base.photo, m2.base.photo) and m2.base.photo.dim() == 4


def test_cli_train_errors_are_one_line(tmp_path):
    from click.testing import CliRunner

    from ourgan_dist.cli import main

    (tmp_path / "notes.jpg").write_text("hello")
    for path, words in ((str(tmp_path / "missing.jpg"), "no such file"), (str(tmp_path / "notes.jpg"), "not a readable")):
        r = CliRunner().invoke(main, ["train", path, "--out", str(tmp_path / "m"), "--preset", "tiny"])
        assert r.exit_code == 2, r.output
        assert words in r.output and "Traceback" not in r.output and len(r.output.strip().splitlines()) == 1
    assert not (tmp_path / "m").exists()


# ---- demo and evaluation ---------------------------------------------------------------------


def test_demo_path_small(tmp_path):
    """The demo command end to end at a small size (the real one renders 4096 wide)."""
    from click.testing import CliRunner

    import ourgan_dist
    from ourgan_dist.cli import main

    out = tmp_path / "demo"
    r = CliRunner().invoke(
        main,
        [
            "demo",
            "--out",
            str(out),
            "--train",
            "--preset",
            "tiny",
            "--size",
            "300x200",
            "--workers",
            "1",
            "--base-steps",
            "3",
            "--sr-steps",
            "3",
        ],
    )
    assert r.exit_code == 0, r.output
    store = str(out / "render.zarr")
    assert os.path.abspath(store) in r.output and "ourgan_dist.open_result(" in r.output
    img = ourgan_dist.open_result(store)
    assert img.shape == (3, 200, 300) and img.dtype == np.uint8
    assert checkpoint.load(str(out / "model")).meta["photo"]["name"] == "picos_de_europa.jpg"
    snippet = [ln.strip() for ln in r.output.splitlines() if ln.startswith("    ") and "open_result" in ln][0]
    ns: dict = {}
    exec("import ourgan_dist\n" + snippet.split("#")[0], ns)  # the printed snippet works as printed
    assert ns["img"].shape == (3, 200, 300)


def test_demo_refuses_a_folder_it_does_not_own(tmp_path):
    """The demo replaces its own model, render and sheet when run again into one folder; a folder
    that also holds someone's files is refused before any work, and nothing in it changes."""
    from click.testing import CliRunner

    from ourgan_dist.cli import main

    out = tmp_path / "pictures"
    out.mkdir()
    (out / "seeds.png").write_bytes(b"an earlier demo's")
    (out / "holiday.jpg").write_bytes(b"mine")
    r = CliRunner().invoke(main, ["demo", "--out", str(out), "--preset", "tiny", "--size", "64x48", "--workers", "1"])
    assert r.exit_code == 2 and "holiday.jpg" in r.output and r.output.count("\n") == 1, r.output
    assert sorted(p.name for p in out.iterdir()) == ["holiday.jpg", "seeds.png"]
    assert (out / "seeds.png").read_bytes() == b"an earlier demo's"
    r = CliRunner().invoke(main, ["demo", "--out", str(out / "holiday.jpg"), "--preset", "tiny"])
    assert r.exit_code == 2 and "is a file" in r.output


def test_the_demo_replaces_only_a_sheet_it_wrote(tmp_path):
    """A folder holding a ``seeds.png`` of someone else's (no ourgan-dist mark) is refused like any
    other file; one the demo (or evaluate) wrote is replaced. ``evaluate --pictures`` likewise."""
    import pyvips
    import pytest

    from ourgan_dist.commands.demo import check_demo_folder
    from ourgan_dist.errors import UserError
    from ourgan_dist.quality.pictures import pictures_folder
    from ourgan_dist.quality.sheet import is_own_png, write_png

    out = tmp_path / "d"
    out.mkdir()
    image = (pyvips.Image.black(4, 4) + 9).cast("uchar").bandjoin([9, 9]).copy(interpretation="srgb")
    image.write_to_file(str(out / "seeds.png"))  # a PNG of that name, not written by ourgan-dist
    for check in (check_demo_folder, pictures_folder):
        with pytest.raises(UserError, match="seeds.png"):
            check(str(out))
    assert not is_own_png(str(out / "seeds.png"))
    write_png(image, str(out / "seeds.png"))
    assert is_own_png(str(out / "seeds.png"))
    check_demo_folder(str(out))
    pictures_folder(str(out))


def test_demo_defaults_are_4k():
    from ourgan_dist.commands.demo import DEMO_SIZE, ray_workers, sample_photo
    from ourgan_dist.planning.plan import parse_size

    assert parse_size(DEMO_SIZE)[0] >= 3840
    info = images.probe(sample_photo())
    assert info.width >= 2048 and parse_size(DEMO_SIZE) == (4096, 3072) and 4 * info.height == 3 * info.width
    assert ray_workers(2) == 2 and ray_workers(1) == 1  # the Ray executor is importable here
    lic = open(os.path.join(os.path.dirname(sample_photo()), "LICENSES.md")).read()
    assert "picos_de_europa.jpg" in lic and "CC-BY-4.0" in lic and "Aitzol Berasategi" in lic


def test_more_photo_kinds_and_shrink_on_load(tmp_path):
    import pyvips

    half = np.dstack([_gradient(), np.zeros((40, 60), np.uint8)])
    half[:, :30, 3] = 255  # left half opaque, right half transparent
    cases = {
        "alpha_half.png": (pyvips.Image.new_from_array(half), {}),
        "alpha_half.webp": (pyvips.Image.new_from_array(half), {"lossless": True}),
        "gray.jpg": (pyvips.Image.new_from_array(_gradient(bands=1)[:, :, 0]), {}),
        "palette.png": (pyvips.Image.new_from_array(_gradient()), {"palette": True}),
        "rgb16.tif": (pyvips.Image.new_from_array(_gradient(dtype=np.uint16)).copy(interpretation="rgb16"), {}),
    }
    for name, (im, kw) in cases.items():
        path = str(tmp_path / name)
        im.write_to_file(path, **kw)
        for max_width, shape in ((None, (3, 40, 60)), (30, (3, 20, 30))):
            x = images.load_rgb(path, max_width=max_width)
            assert x.shape == shape and x.dtype == np.float32, (name, max_width)
            assert -1 <= x.min() and x.max() <= 1
            assert x[:, -1].mean() > 0.9, name  # bright bottom row
            if name.startswith("alpha"):
                assert x[:, 0, : shape[2] // 2 - 2].mean() < -0.9, name  # opaque dark top-left stays dark
                assert x[:, 0, shape[2] // 2 + 2 :].mean() > 0.9, name  # transparent: flattened on white
            else:
                assert x[:, 0].mean() < -0.9, name
    # EXIF orientation also applies when shrinking on load
    rot = pyvips.Image.new_from_array(_gradient()).copy()
    rot.set_type(pyvips.GValue.gint_type, "orientation", 6)
    rpath = str(tmp_path / "rot.jpg")
    rot.write_to_file(rpath)
    y = images.load_rgb(rpath, max_width=20)
    assert y.shape == (3, 30, 20) and y[:, :, 0].mean() > y[:, :, -1].mean()


@pytest.mark.slow
def test_paper_preset_trains_and_renders_tiled_equal_untiled(tmp_path):
    """The GPU-scale preset through the CLI on CPU, shortened with --iterations: it trains every
    scale and fine-tunes the pre-trained RRDB prior, records its config and the prior's origin,
    and its SR (receptive radius 349) still gives tiled == untiled. Slow: the 16.7 M-parameter
    RRDB over a 520x344 render (one x4 level) is minutes on a CPU (tests/test_priors.py checks its exactness
    on small windows, also with the slow tests; small random RRDBs are checked in the default
    suite by tests/test_models.py)."""
    from click.testing import CliRunner

    from conftest import make_photo
    from ourgan_dist.cli import main

    photo = str(tmp_path / "photo.png")
    make_photo(photo, 384, 256)
    model = str(tmp_path / "paper")
    r = CliRunner().invoke(
        main, ["train", photo, "--out", model, "--preset", "paper", "--iterations", "2", "--device", "cpu", "--seed", "4"]
    )
    assert r.exit_code == 0, r.output
    m = checkpoint.load(model)
    assert m.config.preset == "paper" and m.config.base == PRESETS["paper"].base
    assert m.config.sr == PRESETS["paper"].sr and m.sr.receptive_radius == 349
    assert m.meta["sr_prior"]["licence"] == "BSD-3-Clause"
    assert (m.config.train.base_iterations, m.config.train.sr_iterations) == (2, 2)
    assert m.meta["trained"] and m.meta["photo"]["width"] == 384
    assert len(m.meta["noise_amps"]) == PRESETS["paper"].base.n_scales
    do_render(model, str(tmp_path / "u"), "520x344", tile=0, chunk=64)
    do_render(model, str(tmp_path / "t"), "520x344", tile=256, chunk=64)
    assert_same_arrays(arrays(str(tmp_path / "u")), arrays(str(tmp_path / "t")))


def test_shipped_demo_model_was_trained_on_the_bundled_photo():
    """The model `demo` uses by default: it loads, is the cpu preset, and records the bundled
    photo's hash and the SR prior's origin and licence."""
    from ourgan_dist.commands.demo import sample_photo, shipped_model

    path = shipped_model()
    assert path is not None, "ourgan_dist/data/demo-model/model.pt is missing"
    m = checkpoint.load(path)
    assert m.config.preset == "cpu" and m.meta["trained"]
    assert m.meta["photo"]["sha256"] == images.probe(sample_photo()).sha256
    assert m.meta["sr_prior"]["licence"] == "BSD-3-Clause"
    assert m.detail.ready and m.config.sr.detail > 0  # the photo's detail library, built by train
    # new scenes are drawn from the photo's patches: the photo is kept at base scale, its size in the config
    assert m.config.base.kind == "patches" and m.base.photo.dim() == 4
    assert tuple(m.base.photo.shape[2:]) == (m.config.base.base_height, m.config.base.base_width)
    assert tuple(m.base.photo.shape[2:]) == tuple(m.meta["base_photo_size"][::-1])
