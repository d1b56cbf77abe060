"""One rule for errors the user can fix: exit status 2 and one line naming the input, never a
traceback-shaped line with exit status 1. Storage options the storage library refuses, an endpoint
that does not answer, an export or train target that cannot be written, a MODEL that is a file, a
malformed OURGAN_* variable, a tile that --tile auto cannot fit (named by the option that makes it
too big), an --out under a file."""

from __future__ import annotations

import json
import os

import pytest
from click.testing import CliRunner

from helpers import free_port
from ourgan_dist.cli import main


def run(*args, env=None):
    r = CliRunner().invoke(main, [str(a) for a in args], env=env)
    return r.exit_code, r.output


def one_line(code, text, *needles):
    assert code == 2, text
    assert len(text.strip().splitlines()[-1:]) == 1 and text.strip().splitlines()[-1].startswith("Error: "), text
    line = text.strip().splitlines()[-1]
    assert "Traceback" not in text and "--debug" not in line, text
    for n in needles:
        assert n in line, (n, line)
    return line


def unwritable(tmp_path, name):
    if os.geteuid() == 0:
        return f"/proc/{name}"  # even root cannot create files in /proc
    ro = tmp_path / "ro"
    ro.mkdir(exist_ok=True)
    ro.chmod(0o500)
    return str(ro / name)


def test_storage_options_the_library_refuses(tiny_model, s3_server):
    endpoint, _ = s3_server
    opts = json.dumps({"endpoint_url": endpoint, "region_name": 5})
    one_line(
        *run("render", tiny_model, "--out", "s3://nobucket/r.zarr", "--size", "64x48", "--storage-options", opts),
        "--storage-options",
        "region_name",
    )
    one_line(
        *run("inspect", "s3://no:such@bucket/r.zarr", "--storage-options", json.dumps({"endpoint_url": endpoint})),
        "refused the URL",
    )


def test_a_dead_endpoint(tiny_model):
    dead = f"http://127.0.0.1:{free_port()}"
    opts = json.dumps({"endpoint_url": dead, "config_kwargs": {"retries": {"max_attempts": 1}}})
    line = one_line(*run("inspect", "s3://bucket/r.zarr", "--storage-options", opts), "does not answer", dead)
    assert "endpoint_url" in line


def test_unwritable_export_and_train_targets(small_render, photo, tmp_path):
    target = unwritable(tmp_path, "x.png")
    one_line(*run("export", small_render, target), "export to", target)
    (tmp_path / "afile").write_text("x")
    one_line(*run("export", small_render, tmp_path / "afile" / "x.png"), "is a file")
    out = unwritable(tmp_path, "model")
    one_line(*run("train", photo, "--out", out, "--preset", "tiny", "--iterations", "0"), os.path.dirname(out))
    one_line(
        *run("train", photo, "--out", tmp_path / "afile" / "m", "--preset", "tiny", "--iterations", "0"),
        str(tmp_path / "afile"),
        "is a file",
    )


def test_a_model_that_is_a_file(tiny_model, tmp_path):
    card = os.path.join(tiny_model, "model.json")
    line = one_line(*run("render", card, "--out", tmp_path / "r.zarr", "--size", "64x48"), card, "is a file")
    assert f"render {tiny_model} " in line  # names the folder to give instead
    assert not (tmp_path / "r.zarr").exists()


@pytest.mark.parametrize(
    "name,value,command",
    [
        ("OURGAN_STORAGE_RETRIES", "0", "render"),
        ("OURGAN_STORAGE_RETRIES", "many", "render"),
        ("OURGAN_STORAGE_BACKOFF", "nan", "export"),
        ("OURGAN_STORAGE_BACKOFF", "-1", "render"),
        ("OURGAN_STALL_TIMEOUT_S", "0", "render"),
        ("OURGAN_NO_WORKER_TIMEOUT_S", "soon", "render"),
    ],
)
def test_malformed_variables(tiny_model, small_render, tmp_path, name, value, command):
    args = (
        ["render", tiny_model, "--out", tmp_path / "r.zarr", "--size", "64x48", "--chunk", "16", "--workers", "2"]
        if command == "render"
        else ["export", small_render, tmp_path / "x.png"]
    )
    one_line(*run(*args, env={name: value}), f"{name}={value!r}")
    assert not (tmp_path / "r.zarr").exists() and not (tmp_path / "x.png").exists()


def test_an_automatic_tile_that_cannot_fit_names_the_option_that_sized_it(tiny_model, tmp_path):
    base = ["render", tiny_model, "--out", tmp_path / "r.zarr", "--size", "4096x4096", "--dry-run"]
    line = one_line(*run(*base, "--workers", "2000"), "--workers 2000", "--tile auto")
    assert "smaller --tile" not in line
    line = one_line(*run(*base, "--halo", "3000", "--worker-memory", "1G"), "--halo 3000", "--worker-memory")
    assert "smaller --tile" not in line
    one_line(*run(*base, "--tile", "512", "--worker-memory", "0.1G"), "--tile 512", "smaller --tile")


def test_an_out_under_a_file(tiny_model, tmp_path):
    (tmp_path / "afile").write_text("x")
    for out in (tmp_path / "afile" / "r.zarr", tmp_path / "afile"):
        line = one_line(*run("render", tiny_model, "--out", out, "--size", "64x48", "--quiet"), f"{tmp_path / 'afile'}' is a file")
        assert "lease" not in line
    assert (tmp_path / "afile").read_text() == "x"
