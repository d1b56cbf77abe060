"""``ourgan-dist evaluate``: every figure is there and finite, the references order as they must,
reconstruction PSNR rises with training, the pictures have the sizes the rules give, and bad
inputs fail in one line. One evaluate run (through the CLI) on an untrained tiny model of a
360 x 240 photo (three generation levels: 23 x 15, 90 x 60, 360 x 240) feeds most tests."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import make_photo
from ourgan_dist.cli import main

ROCKET = os.path.join(os.path.dirname(__file__), "..", "ourgan_dist", "data", "rocket.jpg")
W, H = 360, 240


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def wide_photo(tmp_path_factory):
    return make_photo(tmp_path_factory.mktemp("photo") / "wide.png", W, H)


@pytest.fixture(scope="module")
def untrained(tmp_path_factory, wide_photo):
    from ourgan_dist.train import train_model

    out = str(tmp_path_factory.mktemp("model") / "untrained")
    train_model(wide_photo, out, preset="tiny", iterations=0, seed=1, device="cpu", progress=False)
    return out


@pytest.fixture(scope="module")
def report(tmp_path_factory, untrained, wide_photo):
    """(result, pictures folder) of ``evaluate --json --pictures`` through the CLI."""
    pictures = str(tmp_path_factory.mktemp("eval") / "pictures")  # does not exist yet: created
    r = run("evaluate", untrained, wide_photo, "--seeds", 2, "--json", "--pictures", pictures)
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout), pictures


def _numbers(x, path=""):
    if isinstance(x, dict):
        for k, v in x.items():
            yield from _numbers(v, f"{path}.{k}")
    elif isinstance(x, list):
        for i, v in enumerate(x):
            yield from _numbers(v, f"{path}[{i}]")
    elif isinstance(x, (int, float)) and not isinstance(x, bool):
        yield path, x


def test_every_figure_is_there_and_finite(report):
    r, _ = report
    bad = [(p, v) for p, v in _numbers(r) if not math.isfinite(v)]
    assert not bad, bad
    assert r["photo"]["is_training_photo"] and r["trained"] is False
    levels = r["detail"]["levels"]
    assert [lv["size"] for lv in levels] == [[23, 15], [90, 60], [W, H]]  # base_width * 4**l, over the photo
    assert [lv["final"] for lv in levels] == [False, False, True]
    for lv in levels:
        assert set(lv["swd"]) == {"render", "photo_floor", "blurred", "bicubic_x4"}, lv
        assert set(lv["band_rms"]) == {"render", "photo", "blurred", "bicubic_x4"}, lv
        assert lv["patches"] == min(8192, (lv["size"][0] - 6) * (lv["size"][1] - 6) // 2)
    assert "nothing to reconstruct" in r["reconstruction"]["note"]  # the patch base keeps the photo itself
    assert r["base"]["diversity"] > 0  # the seeds give different samples
    nv = r["base"]["novelty"]
    assert len(nv["per_seed"]) == 2 and len(nv["between_seeds"]) == 1
    assert nv["stretched_mirrored"] < nv["quarters_swapped"]
    assert r["sr"]["crops"] >= 1 and r["sr"]["scales"][-1]["psnr_sr_db"] == r["sr"]["psnr_sr_db"]


def test_references_order_as_they_must(report):
    """At every level the photo's own second sample is closer to it than a blurred copy and than
    bicubic x4 (both remove the finest band), and their band RMS is below the photo's."""
    for lv in report[0]["detail"]["levels"]:
        s, rms = lv["swd"], lv["band_rms"]
        assert s["photo_floor"] < s["blurred"] and s["photo_floor"] < s["bicubic_x4"], lv
        assert rms["blurred"] < rms["photo"] and rms["bicubic_x4"] < rms["photo"], lv
    final = report[0]["detail"]["levels"][-1]
    assert final["swd"]["photo_floor"] < 0.2 * final["swd"]["blurred"]  # 8192 patches: a low floor


def _size(path):
    import pyvips

    im = pyvips.Image.new_from_file(path)
    return im.width, im.height


def test_pictures_exist_with_the_right_sizes(report):
    from ourgan_dist.quality.pictures import GAP, LABEL_HEIGHT

    r, folder = report
    pics = r["detail"]["pictures"]
    assert pics["whole"] == os.path.join(folder, "photo_size.png")
    assert _size(pics["whole"]) == (3 * W + 2 * GAP, LABEL_HEIGHT + H)  # sample | photo | bicubic, 1:1 here
    side = min(256, W, H)
    assert _size(pics["crops"]) == (3 * side + 2 * GAP, 3 * (LABEL_HEIGHT + side) + 2 * GAP)
    # level | photo at its scale, small levels enlarged by a whole factor to >= 256 px wide
    want = []
    for w, h in ([23, 15], [90, 60], [W, H]):
        k = math.ceil(256 / w) if w < 256 else 1
        want.append((2 * k * w + GAP, LABEL_HEIGHT + k * h))
    assert [_size(p) for p in pics["levels"]] == want
    assert sorted(os.listdir(folder)) == [
        "level_0.png",
        "level_1.png",
        "level_2.png",
        "photo_size.png",
        "photo_size_crops.png",
        "seeds.png",
    ]
    from ourgan_dist.quality.sheet import GAP as SHEET_GAP, PANEL_WIDTH

    assert _size(pics["seeds"])[0] == 2 * PANEL_WIDTH + SHEET_GAP  # photo | seed 0, then seed 1


def test_the_seeds_sheet_shows_the_samples_whose_novelty_it_reports(report, untrained):
    """Seed 0's panel is the base sample the novelty figures were measured on (the base at the
    training size), not a base drawn at another size (another layout)."""
    import pyvips

    from ourgan_dist.models import checkpoint
    from ourgan_dist.quality.sheet import GAP as SHEET_GAP, PANEL_WIDTH, _panel, _pixels

    r, _ = report
    w, h = r["base"]["size"]
    sample = _pixels(checkpoint.load(untrained).base.generate(h, w, 0))

    def array(im):
        return np.frombuffer(im.write_to_memory(), dtype=np.uint8).reshape(im.height, im.width, im.bands)

    want = array(_panel(sample, "x"))
    got = array(pyvips.Image.new_from_file(r["detail"]["pictures"]["seeds"]))
    panel = got[: want.shape[0], PANEL_WIDTH + SHEET_GAP :, :3]
    label = want.shape[0] - round(PANEL_WIDTH * h / w)  # the caption's rows differ; the image's must not
    assert np.array_equal(panel[label:], want[label:])


def test_display_panels_are_bounded():
    import pyvips

    from ourgan_dist.quality.pictures import for_display

    assert for_display(pyvips.Image.black(3000, 40)).width == 1024
    assert (for_display(pyvips.Image.black(10, 5)).width, for_display(pyvips.Image.black(10, 5)).height) == (260, 130)
    assert for_display(pyvips.Image.black(700, 5)).width == 700


def test_crops_land_where_the_image_has_structure():
    from ourgan_dist.quality.pictures import crop_boxes

    img = np.full((3, 1000, 600), 128, np.uint8)  # plain grey, with three textured places
    rng = np.random.default_rng(0)
    for y, x in ((40, 300), (500, 20), (700, 330)):
        img[:, y : y + 200, x : x + 200] = rng.integers(0, 255, (3, 200, 200))
    boxes = crop_boxes(img)
    assert len(boxes) == 3 and all((b.height, b.width) == (256, 256) for b in boxes)
    for y, x in ((40, 300), (500, 20), (700, 330)):  # each textured place lies mostly inside one crop
        inside = [max(0, min(b.y1, y + 200) - max(b.y0, y)) * max(0, min(b.x1, x + 200) - max(b.x0, x)) for b in boxes]
        assert max(inside) >= 0.75 * 200 * 200, boxes
    small = crop_boxes(img[:, :240, :360])  # no room for three apart: they may overlap, never repeat
    assert len(small) == 3 and len({(b.y0, b.x0) for b in small}) == 3


def test_describe_has_a_row_per_level_and_the_paths(report):
    from ourgan_dist.quality.evaluate import describe

    r, _ = report
    text = "\n".join(describe(r))
    assert "untrained" in text and "nothing to reconstruct" in text and "layout novelty" in text
    for lv in r["detail"]["levels"]:
        assert f"{lv['size'][0]}x{lv['size'][1]}" in text
    for path in [r["detail"]["pictures"]["whole"], r["detail"]["pictures"]["crops"], *r["detail"]["pictures"]["levels"]]:
        assert path in text


def test_reconstruction_psnr_rises_with_training(untrained, wide_photo, tmp_path):
    """An untrained decoder reconstructs nothing; 20 steps per scale bring it well above that, and
    above the photo's coarsest scale merely upsampled."""
    from ourgan_dist.quality.evaluate import reconstruction
    from ourgan_dist.models import checkpoint
    from ourgan_dist.train import train_model

    from helpers import tiny_gan_config

    gan = tiny_gan_config()  # the paper's kind of base: the one with a reconstruction
    untrained_gan, trained = str(tmp_path / "untrained"), str(tmp_path / "trained")
    train_model(wide_photo, untrained_gan, config=gan, iterations=0, seed=1, device="cpu", progress=False)
    train_model(wide_photo, trained, config=gan, schedule=(20, 0), seed=1, device="cpu", progress=False, parallel=False)
    before = reconstruction(checkpoint.load(untrained_gan), wide_photo)
    after = reconstruction(checkpoint.load(trained), wide_photo)
    assert before["psnr_db"] < 16 < 26 < after["psnr_db"], (before, after)
    assert after["psnr_db"] > after["psnr_coarsest_photo_upsampled_db"]
    assert all(a["psnr_db"] > b["psnr_db"] for a, b in zip(after["scales"], before["scales"]))


def test_sr_psnr_on_held_out_crops(tmp_path):
    """On a photo big enough to hold crops out, SR and bicubic PSNR are both measured, at the
    photo's size and per SR training scale (where the held-out strip is wide enough)."""
    from ourgan_dist.quality.evaluate import sr_holdout
    from ourgan_dist.models import checkpoint
    from ourgan_dist.train import train_model
    from ourgan_dist.train.sr import holdout_columns, sr_scales

    out = str(tmp_path / "m")
    train_model(ROCKET, out, preset="tiny", schedule=(0, 20), seed=0, device="cpu", progress=False)
    model = checkpoint.load(out)
    r = sr_holdout(model, ROCKET)
    assert r["crops"] >= 1 and r["x0"] == model.meta["sr_holdout_x0"] == holdout_columns(640)
    assert 15 < r["psnr_bicubic_db"] < 60 and np.isfinite(r["psnr_sr_db"])
    bw = model.config.base.base_width  # the photo as the patch base keeps it: 48 px wide
    assert [s["width"] for s in r["scales"]][-1] == 640 and len(r["scales"]) == len(sr_scales(r["x0"], bw))
    small = r["scales"][0]  # 4 x 48 of the 576 trained columns: the strip is 21 px there, too narrow
    assert small["width"] == round(640 * 4 * bw / 576) and small["crops"] == 0 and "too narrow" in small["note"]


def test_swd_measures_distribution_distance():
    from ourgan_dist.quality.detail import disjoint_patches, laplacian_band, sliced_wasserstein

    rng = np.random.default_rng(0)
    a = rng.normal(0, 1, (4000, 12))
    b = rng.normal(0, 1, (4000, 12))
    c = rng.normal(0, 3, (4000, 12))
    assert sliced_wasserstein(a, b, rng) < 0.1 < sliced_wasserstein(a, c, rng)
    # the sampling floor's two samples share no patch position: on a band of distinct values, no
    # patch of one is a patch of the other
    band = laplacian_band(rng.normal(0, 1, (3, 20, 20)))
    p, q = disjoint_patches(band, 98, rng)  # 14 x 14 = 196 positions, all used
    assert p.shape == q.shape == (98, 147)
    assert not (set(map(bytes, p)) & set(map(bytes, q))) and len(set(map(bytes, np.vstack([p, q])))) == 196


def test_bad_inputs_give_one_line_errors(untrained, wide_photo, tmp_path):
    not_a_folder = tmp_path / "file.png"
    not_a_folder.write_bytes(b"x")
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [
        (untrained, tmp_path / "missing.jpg"),  # no such photo
        (untrained, not_a_folder),  # not an image
        (empty, wide_photo),  # not a model
        (untrained, wide_photo, "--pictures", not_a_folder),  # a file where the pictures' folder goes
        (untrained, wide_photo, "--seeds", 0),
    ]
    for args in cases:
        r = run("evaluate", *args)
        assert r.exit_code == 2, (args, r.output)
        lines = [ln for ln in r.stderr.splitlines() if ln.startswith("Error")]
        assert len(lines) == 1 and "Traceback" not in r.stderr, (args, r.stderr)
    assert not os.path.exists(tmp_path / "pictures")


def test_pictures_folder_that_is_a_file_or_holds_other_files_is_refused_before_any_work(untrained, wide_photo, tmp_path):
    from ourgan_dist.errors import UserError
    from ourgan_dist.quality.evaluate import evaluate

    f = tmp_path / "taken"
    f.write_text("")
    with pytest.raises(UserError, match="not a folder"):
        evaluate(untrained, wide_photo, seeds=1, pictures=str(f))
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "seeds.png").write_bytes(b"my own sheet")
    (mine / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="notes.txt"):
        evaluate(untrained, wide_photo, seeds=1, pictures=str(mine))
    assert (mine / "seeds.png").read_bytes() == b"my own sheet"


def test_a_photo_wider_than_max_width_is_shrunk_for_the_render(untrained, wide_photo):
    from ourgan_dist.quality.evaluate import fine_detail

    d = fine_detail(untrained, wide_photo, max_width=200)
    assert d["size"] == [200, 133] and d["photo_shrunk"] is True
    # the patch base keeps this photo at 48 x 32: the largest base no taller is 13 x 9, two x4 levels above
    assert [lv["size"][0] for lv in d["levels"]] == [13, 50, 200]
    assert "pictures" not in d
