"""The command line: the contract in DESIGN.md, one-line errors for bad input, --dry-run writes
nothing, --help imports no torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from helpers import untrained
from click.testing import CliRunner

from ourgan_dist.cli import main


def run(*args):
    r = CliRunner().invoke(main, [str(a) for a in args])
    return r.exit_code, r.output


def receptive_radius(model_dir: str) -> int:
    with open(os.path.join(model_dir, "model.json")) as f:
        return json.load(f)["receptive_radius"]


def test_help_is_fast_and_imports_no_torch_or_ray():
    code = "import sys; from ourgan_dist.cli import main; print(any(m in sys.modules for m in ('torch', 'ray', 'zarr')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
    r = subprocess.run([sys.executable, "-m", "ourgan_dist.cli", "render", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "--tile" in r.stdout and "--halo" in r.stdout and "--dry-run" in r.stdout


COMMANDS = ("demo", "evaluate", "export", "inspect", "render", "train", "view")


def test_commands_import_without_the_cli_and_nothing_imports_the_cli():
    """No import cycle: no module of the package imports ``cli`` (only the entry point does), and
    in a fresh process each command module imports without loading the CLI group (nor torch,
    Ray or Zarr); the group then registers every command."""
    import ast
    import pathlib

    package = pathlib.Path(__file__).resolve().parents[1] / "ourgan_dist"
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""] + [a.name for a in node.names]
                assert not any(n == "cli" or n.endswith(".cli") for n in names), f"{path} imports the CLI"
            elif isinstance(node, ast.Import):
                assert not any(a.name.endswith(".cli") for a in node.names), f"{path} imports the CLI"
    code = (
        "import importlib, sys\n"
        "for name in sys.argv[1:]:\n"
        "    importlib.import_module('ourgan_dist.commands.' + name)\n"
        "    print(name, 'ourgan_dist.cli' in sys.modules, any(m in sys.modules for m in ('torch', 'ray', 'zarr')))"
    )
    r = subprocess.run([sys.executable, "-c", code, *COMMANDS], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-1500:]
    assert r.stdout.splitlines() == [f"{name} False False" for name in COMMANDS]
    assert sorted(main.commands) == sorted(COMMANDS)


def test_dry_run_prints_the_plan_and_writes_nothing(tiny_model, tmp_path):
    out = tmp_path / "r.zarr"
    code, text = run("render", tiny_model, "--out", out, "--size", "523x211", "--tile", "32", "--chunk", "16", "--dry-run")
    assert code == 0, text
    r = receptive_radius(tiny_model)
    assert "level 2" in text and "tile(s)" in text and "projected memory per task" in text and f"halo {r} px" in text
    assert not out.exists()


def test_render_and_inspect(tiny_model, tmp_path):
    out = tmp_path / "r.zarr"
    code, text = run("render", tiny_model, "--out", out, "--size", "101x77", "--tile", "32", "--chunk", "16", "--quiet")
    assert code == 0, text
    code, text = run("inspect", out, "--json")
    info = json.loads(text)
    assert info["complete"] and info["tasks"]["level 0"] == {"done": 1, "total": 1}
    assert info["info"]["size"] == [101, 77]
    code, text = run("inspect", tiny_model)
    assert code == 0 and "tiny" in text and f"receptive field {receptive_radius(tiny_model)}" in text


@pytest.fixture(scope="module")
def bicubic_model(tmp_path_factory):
    """The tiny preset with a bicubic x4 skip (2 px reach), untrained."""
    from dataclasses import replace

    from ourgan_dist.config import PRESETS
    from ourgan_dist.models import checkpoint

    cfg = PRESETS["tiny"]
    out = str(tmp_path_factory.mktemp("bicubic") / "m")
    checkpoint.save(untrained(replace(cfg, sr=replace(cfg.sr, skip="bicubic")), seed=1), out)
    return out


def test_every_halo_the_cli_accepts_renders(tiny_model, bicubic_model, tmp_path):
    """A halo narrower than the bicubic skip's 2 px reach made interior tiles fail mid-render
    (TileError: size of tensor a (0)); it is refused up front, and 2 px renders. A model without
    that skip renders any halo, 0 included."""
    args = ["--size", "301x187", "--tile", "48", "--chunk", "16", "--quiet"]
    for halo in ("0", "1"):
        code, text = run("render", bicubic_model, "--out", tmp_path / halo, *args, "--halo", halo)
        assert code == 2 and f"--halo {halo}: below 2 px" in text and "Traceback" not in text, text
        assert not (tmp_path / halo).exists()
    code, text = run("render", bicubic_model, "--out", tmp_path / "b2", *args, "--halo", "2")
    assert code == 0 and "NOT exact" in text, text
    code, text = run("render", tiny_model, "--out", tmp_path / "n0", *args, "--halo", "0")
    assert code == 0 and "NOT exact" in text, text


def test_tile_below_the_default_chunk_gets_a_fitting_chunk_unless_chunk_is_explicit(tiny_model, tmp_path):
    code, text = run("render", tiny_model, "--out", tmp_path / "c", "--size", "1999x1333", "--tile", "128", "--dry-run")
    assert code == 0, text
    assert "tile 128, chunk 128" in text and "chunk 128: --tile 128 is not a multiple of the default chunk 256" in text
    code, text = run(
        "render", tiny_model, "--out", tmp_path / "c", "--size", "1999x1333", "--tile", "128", "--chunk", "256", "--dry-run"
    )
    assert code == 2 and "multiple of the chunk size 256" in text and "Traceback" not in text


def test_small_halo_shows_its_measured_error(tiny_model, tmp_path):
    code, text = run(
        "render",
        tiny_model,
        "--out",
        tmp_path / "h",
        "--size",
        "301x187",
        "--tile",
        "32",
        "--chunk",
        "16",
        "--halo",
        "2",
        "--dry-run",
    )
    assert code == 0 and "NOT exact" in text and "max error" in text and "compound across levels" in text
    # every level one tile: no halo is ever cut, and the render says so instead of a meaningless 0/255
    code, text = run(
        "render",
        tiny_model,
        "--out",
        tmp_path / "h",
        "--size",
        "301x187",
        "--tile",
        "0",
        "--chunk",
        "16",
        "--halo",
        "2",
        "--dry-run",
    )
    assert code == 0 and "every level is a single tile" in text and "max error" not in text


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--size", "4096"], "--size '4096'"),
        (["--size", "0x10"], "--size"),
        (["--tile", "24"], "multiple of the chunk"),
        (["--tile", "big"], "--tile 'big'"),
        (["--halo", "-3"], "--halo"),
        (["--halo", "wide"], "--halo 'wide'"),
        (["--workers", "0"], "--workers"),
        (["--storage-options", "{not json"], "--storage-options"),
        (["--resume", "--overwrite"], "contradict"),
    ],
)
def test_bad_render_options_one_line_no_traceback(tiny_model, tmp_path, args, needle):
    base = ["render", tiny_model, "--out", tmp_path / "x", "--size", "300x200", "--chunk", "16"]
    code, text = run(*base, *[a for a in args])
    assert code == 2, text
    assert needle in text and "Traceback" not in text
    assert not (tmp_path / "x").exists()


def test_missing_and_bad_models_and_photos(tmp_path):
    code, text = run("render", tmp_path / "nope", "--out", tmp_path / "o", "--size", "300x200")
    assert code == 2 and "not found" in text and "ourgan-dist train" in text
    (tmp_path / "junk").mkdir()
    for text_file in (b"this is not a checkpoint", b"checkpoint notes: see README\n", b"# weights\n"):
        (tmp_path / "junk" / "model.pt").write_bytes(text_file)
        code, text = run("render", tmp_path / "junk", "--out", tmp_path / "o", "--size", "300x200")
        assert code == 2 and "no checkpoint at all" in text and "pickled" not in text, text
    import io

    import torch

    buf = io.BytesIO()
    torch.save({"format_version": 1, "hook": print}, buf)  # pickles a reference to a function
    (tmp_path / "junk" / "model.pt").write_bytes(buf.getvalue())
    code, text = run("render", tmp_path / "junk", "--out", tmp_path / "o", "--size", "300x200")
    assert code == 2 and "pickled objects or code" in text and "GLOBAL print" in text
    assert "weights_only" not in text and "PyTorch 2.6" not in text
    (tmp_path / "junk" / "model.pt").write_bytes(buf.getvalue()[:200])  # a truncated zip
    code, text = run("render", tmp_path / "junk", "--out", tmp_path / "o", "--size", "300x200")
    assert code == 2 and "not a readable checkpoint" in text
    code, text = run("train", tmp_path / "missing.jpg", "--out", tmp_path / "m", "--iterations", "0")
    assert code == 2 and "no such file" in text
    (tmp_path / "notes.jpg").write_text("hello")
    code, text = run("train", tmp_path / "notes.jpg", "--out", tmp_path / "m", "--iterations", "0")
    assert code == 2 and "not a readable image" in text
    assert not (tmp_path / "m").exists()


def test_existing_output_is_refused_untouched(tiny_model, tmp_path):
    out = tmp_path / "r.zarr"
    assert run("render", tiny_model, "--out", out, "--size", "101x77", "--chunk", "16", "--quiet")[0] == 0
    stamp = {p: os.path.getmtime(p) for p in out.rglob("*")}
    code, text = run("render", tiny_model, "--out", out, "--size", "101x77", "--chunk", "16")
    assert code == 2 and "--resume" in text and "--overwrite" in text
    assert text.startswith("Error: ") and "level 0" not in text  # refused before the plan is printed
    assert {p: os.path.getmtime(p) for p in out.rglob("*")} == stamp


def test_unwritable_output(tiny_model, tmp_path):
    if os.geteuid() == 0:
        target = "/proc/ourgan-cannot-write-here"  # even root cannot create files in /proc
    else:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        target = str(ro / "r.zarr")
    code, text = run("render", tiny_model, "--out", target, "--size", "101x77", "--chunk", "16")
    assert code == 2 and "--out" in text and "Traceback" not in text


def test_process_exit_code_and_no_traceback(tmp_path):
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "ourgan_dist.cli",
            "render",
            str(tmp_path / "none"),
            "--out",
            str(tmp_path / "o"),
            "--size",
            "10x10",
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("Error: ") and "Traceback" not in r.stderr


def test_readme_commands_block_lists_every_command():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    text = open(os.path.join(root, "README.md")).read()
    block = text.split("## Commands", 1)[1].split("```")[1]
    listed = {line.split()[1] for line in block.splitlines() if line.startswith("ourgan-dist ")}
    assert listed == set(main.commands), set(main.commands) ^ listed


def test_the_hint_after_training_suggests_a_size_of_the_photos_shape(tmp_path):
    from conftest import make_photo

    from ourgan_dist.commands.train import suggested_size

    assert suggested_size(str(make_photo(tmp_path / "wide.png", 80, 40))) == "4096x2048"
    assert suggested_size(str(make_photo(tmp_path / "tall.png", 40, 60))) == "2731x4096"
    assert suggested_size(str(tmp_path / "gone.png")) == "4096x2560"
