"""`render --dry-run`: the projections it prints (load per worker, halo overhead, memory per task,
store size, time and where the time comes from), the warning a huge request gets before anything
runs, refusals before any plan output, and --worker-memory."""

from __future__ import annotations

import time

from click.testing import CliRunner

from ourgan_dist.cli import main


def run(*args):
    r = CliRunner().invoke(main, [str(a) for a in args])
    return r.exit_code, r.output


def test_dry_run_projects_load_memory_store_and_time(tiny_model, tmp_path):
    out = tmp_path / "r.zarr"
    code, text = run("render", tiny_model, "--out", out, "--size", "1999x1333", "--workers", "2", "--dry-run")
    assert code == 0, text
    assert "tile 512 (auto)" in text or "(auto): sized for 2 worker(s)" in text
    for needle in (
        "load on 2 worker(s)",
        "worker(s) busy",
        "utilisation",
        "halo overhead:",
        "projected memory per task:",
        "store on disk: about",
        "time: about",
        "measured now:",
        "dry run: nothing written",
    ):
        assert needle in text, (needle, text)
    assert "WARNING" not in text and not out.exists()


def test_ten_gigapixels_warn_with_store_size_and_time_and_plan_at_once(tiny_model, tmp_path):
    t0 = time.perf_counter()
    code, text = run("render", tiny_model, "--out", tmp_path / "huge.zarr", "--size", "100000x100000", "--dry-run")
    assert code == 0, text
    assert time.perf_counter() - t0 < 30  # nothing is rendered: the plan is arithmetic (plus a short probe)
    warning = next(line for line in text.splitlines() if line.startswith("WARNING"))
    assert "10.0 gigapixels" in warning and "on disk" in warning and "GiB" in warning and "worker" in warning


def test_refusal_comes_before_any_plan_output(tiny_model, tmp_path):
    out = tmp_path / "r.zarr"
    out.mkdir()
    (out / "notes.txt").write_text("something already here")
    code, text = run("render", tiny_model, "--out", out, "--size", "301x187", "--tile", "64", "--quiet")
    assert code == 2 and "already exists" in text and "level" not in text and "tile(s)" not in text, text
    code, text = run("render", tiny_model, "--out", out, "--size", "301x187", "--tile", "64", "--dry-run")
    lines = text.splitlines()
    assert code == 0 and lines[0].startswith("note: a real run would be refused") and "already exists" in lines[0]


def test_worker_memory_sizes_the_auto_tile_and_is_checked(tiny_model, tmp_path):
    code, text = run("render", tiny_model, "--out", tmp_path / "a", "--size", "4096x2730", "--worker-memory", "lots", "--dry-run")
    assert code == 2 and "--worker-memory 'lots'" in text
    code, text = run(
        "render",
        tiny_model,
        "--out",
        tmp_path / "a",
        "--size",
        "4096x2730",
        "--tile",
        "4096",
        "--worker-memory",
        "300M",
        "--dry-run",
    )
    assert code == 2 and "over the" in text and "use a smaller --tile" in text, text
    code, text = run("render", tiny_model, "--out", tmp_path / "a", "--size", "4096x2730", "--worker-memory", "2GiB", "--dry-run")
    assert code == 0 and "of 2.0 GiB per worker" in text, text


def test_a_worker_too_small_for_the_patch_base_is_told_that_the_base_is_the_largest_task(tmp_path):
    from ourgan_dist.commands.demo import shipped_model

    model = shipped_model()
    code, text = run("render", model, "--out", tmp_path / "a", "--size", "4096x3072", "--worker-memory", "1.2GiB", "--dry-run")
    assert code == 2 and "the largest task is the base image (1024x768" in text, text
    code, text = run("render", model, "--out", tmp_path / "b", "--size", "4096x3072", "--worker-memory", "3GiB", "--dry-run")
    assert code == 0, text
