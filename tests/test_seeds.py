"""Seeds: the noise tells apart exactly the seeds 0 .. 2**64 - 1, so a larger seed (which would
render the same bytes as a smaller one) is refused by every command and by the library, with the
range and the reason; training seeds stop at 2**48 (training derives generator seeds from them)."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from ourgan_dist.planning import noise
from ourgan_dist.cli import main
from ourgan_dist.commands.shared import RENDER_SEED_LIMIT, TRAIN_SEED_LIMIT
from ourgan_dist.errors import PlanError
from ourgan_dist.planning.geometry import Box


def run(*args):
    r = CliRunner().invoke(main, [str(a) for a in args])
    return r.exit_code, r.output


def test_the_commands_limit_is_the_noise_counters():
    assert RENDER_SEED_LIMIT == noise.SEED_LIMIT == 2**64
    box = Box(0, 4, 0, 5)
    assert not np.array_equal(noise.normal(2**64 - 1, 1, 0, 3, box), noise.normal(0, 1, 0, 3, box))
    for bad in (2**64, 2**64 + 7, -1):  # 2**64 used to be keyed as 0, 2**64 + 7 as 7
        with pytest.raises(ValueError, match="2\\*\\*64 - 1"):
            noise.normal(bad, 1, 0, 3, box)


@pytest.mark.parametrize("seed", [2**64, 2**64 + 1, -1, 10**30])
def test_render_refuses_seeds_the_noise_cannot_tell_apart(tiny_model, tmp_path, seed):
    out = tmp_path / "r.zarr"
    code, text = run("render", tiny_model, "--out", out, "--size", "64x48", "--tile", "32", "--chunk", "16", "--seed", seed)
    assert code == 2 and "--seed" in text and "18446744073709551615" in text and "Traceback" not in text, text
    assert not out.exists()
    from ourgan_dist.engine.render import RenderRequest, prepare

    with pytest.raises(PlanError, match="seeds are 0 to 18446744073709551615"):
        prepare(RenderRequest(model=tiny_model, out=str(out), size="64x48", seed=seed, tile=32, chunk=16))


def test_the_largest_render_seed_is_accepted(tiny_model, tmp_path):
    code, text = run(
        "render",
        tiny_model,
        "--out",
        tmp_path / "r.zarr",
        "--size",
        "64x48",
        "--tile",
        "32",
        "--chunk",
        "16",
        "--seed",
        2**64 - 1,
    )
    assert code == 0, text  # rendered, not only planned: every generator seeded from it takes it
    assert (tmp_path / "r.zarr").is_dir()


@pytest.mark.parametrize("command", ["train", "demo"])
def test_train_and_demo_refuse_seeds_past_the_training_range(photo, tmp_path, command):
    args = (
        ["train", photo, "--out", tmp_path / "m", "--preset", "tiny", "--iterations", "0"]
        if command == "train"
        else ["demo", "--out", tmp_path / "d", "--preset", "tiny"]
    )
    for seed in (2**64, TRAIN_SEED_LIMIT, "seven"):
        code, text = run(*args, "--seed", seed)
        assert code == 2 and "--seed" in text and "Traceback" not in text, text
        assert ("not a whole number" in text) if seed == "seven" else (str(TRAIN_SEED_LIMIT - 1) in text)
    assert not (tmp_path / "m").exists() and not (tmp_path / "d").exists()
    if command == "train":
        code, text = run(*args, "--seed", TRAIN_SEED_LIMIT - 1)
        assert code == 0, text
