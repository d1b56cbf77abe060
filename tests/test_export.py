"""Exports: every format read back by a reader we did not write (tifffile, libvips, zipfile + libvips)
and compared with the store's own arrays; refusals of sizes, stores and names the formats cannot take."""

from __future__ import annotations

import os
import re
import shutil
import stat
import xml.etree.ElementTree as ET
import zipfile

import numpy as np
import pytest
import pyvips
import tifffile
from click.testing import CliRunner

from ourgan_dist.store.canvas import Canvas
from ourgan_dist.cli import main
from ourgan_dist.errors import StoreError, UserError
from ourgan_dist.outputs.export import export
from synthetic import noise_pattern, write_synthetic_store


def level(url: str, k: int) -> np.ndarray:
    """OME-Zarr array k of a store as (h, w, 3)."""
    c = Canvas(url)
    h, w = c.plan.pyramid_shapes[k]
    return c.array(str(k))[:].transpose(1, 2, 0)


@pytest.fixture(scope="module")
def store(small_render) -> str:
    """A real render of the tiny model: 300x200, chunk 16, so the store has a 6-level pyramid
    (shared with the viewer's tests; nothing here writes to it)."""
    assert Canvas(small_render).complete
    return small_render


def vips_pixels(path: str, **kw) -> np.ndarray:
    return pyvips.Image.new_from_file(path, **kw).numpy()


def test_tiff_equals_store_and_carries_its_pyramid(store, tmp_path):
    out = str(tmp_path / "r.tif")
    result = export(store, out, progress=False)
    shapes = Canvas(store).plan.pyramid_shapes
    assert result.levels == len(shapes) == 6 and result.compression == "deflate"
    with tifffile.TiffFile(out) as tif:
        assert tif.is_bigtiff
        assert [p.shape for p in tif.pages] == [(h, w, 3) for h, w in shapes]
        for k, page in enumerate(tif.pages):
            assert page.is_tiled and page.compression == tifffile.COMPRESSION.ADOBE_DEFLATE
            assert page.subfiletype == (1 if k else 0)  # reduced-resolution pages after the first
            np.testing.assert_array_equal(page.asarray(), level(store, k))
    np.testing.assert_array_equal(vips_pixels(out), level(store, 0))  # libvips: a second, independent reader
    np.testing.assert_array_equal(vips_pixels(out, page=2), level(store, 2))


def test_tiff_jpeg_is_close_to_the_store(store, tmp_path):
    out = str(tmp_path / "r.tif")
    export(store, out, compression="jpeg", progress=False)
    with tifffile.TiffFile(out) as tif:
        assert tif.pages[0].compression == tifffile.COMPRESSION.JPEG
    ref = level(store, 0)
    diff = np.abs(vips_pixels(out).astype(int) - ref)
    # lossy, but the same picture: no further from the store than libvips' own JPEG of the same
    # pixels at the same quality (the error depends on the content; a tiny untrained model's is noisy)
    jpeg = pyvips.Image.new_from_buffer(
        pyvips.Image.new_from_array(np.ascontiguousarray(ref)).jpegsave_buffer(Q=90, subsample_mode="on"), ""
    )  # 4:2:0, as TIFF JPEG
    baseline = np.abs(jpeg.numpy().astype(int) - ref).mean()
    assert diff.mean() < 1.25 * baseline + 1, (diff.mean(), baseline)


def test_png_equals_store_and_jpeg_webp_are_close(store, tmp_path):
    png = str(tmp_path / "r.png")
    export(store, png, progress=False)
    np.testing.assert_array_equal(vips_pixels(png), level(store, 0))
    for name in ("r.jpg", "r.webp"):
        export(store, str(tmp_path / name), progress=False)
        img = vips_pixels(str(tmp_path / name))
        assert img.shape == level(store, 0).shape
        assert np.abs(img.astype(int) - level(store, 0)).mean() < 12


def dzi_geometry(xml: bytes) -> tuple[int, int, int, int, str]:
    root = ET.fromstring(xml)
    size = root.find("{http://schemas.microsoft.com/deepzoom/2008}Size")
    return (
        int(size.get("Width")),
        int(size.get("Height")),
        int(root.get("TileSize")),
        int(root.get("Overlap")),
        root.get("Format"),
    )


def check_dzi_levels(read_tile, names: list[str], url: str, tile: int, overlap: int, fmt: str) -> None:
    """Every Deep Zoom level: its tiles are present, none more, and each tile of a level the
    store holds equals its window of that OME-Zarr array (level top - k is array k). Levels
    coarser than the store's last array have the Deep Zoom sizes, down to 1x1."""
    c = Canvas(url)
    shapes = c.plan.pyramid_shapes
    height, width = shapes[0]
    top = int(np.ceil(np.log2(max(width, height))))
    for lv in range(top + 1):
        k = top - lv
        h, w = -(-height // 2**k), -(-width // 2**k)
        rows, cols = -(-h // tile), -(-w // tile)
        want = {f"{lv}/{col}_{row}.{fmt}" for row in range(rows) for col in range(cols)}
        have = {n for n in names if n.startswith(f"{lv}/")}
        assert have == want, (lv, sorted(have ^ want)[:4])
        full = level(url, k) if k < len(shapes) else None
        for name in sorted(want):
            col, row = map(int, re.match(rf"{lv}/(\d+)_(\d+)", name).groups())
            y0, x0 = max(0, row * tile - overlap), max(0, col * tile - overlap)
            y1, x1 = min(h, (row + 1) * tile + overlap), min(w, (col + 1) * tile + overlap)
            px = read_tile(name)
            assert px.shape[:2] == (y1 - y0, x1 - x0), name
            if full is not None:
                np.testing.assert_array_equal(px, full[y0:y1, x0:x1], err_msg=name)


def dzi_tree(out) -> tuple[list[str], object]:
    files = out.parent / (out.stem + "_files")
    return [str(p.relative_to(files)) for p in files.rglob("*") if p.is_file()], files


def test_dzi_tree_opens_and_every_level_is_the_store_pyramid(store, tmp_path):
    out = tmp_path / "r.dzi"
    export(store, str(out), compression="png", progress=False)
    width, height, tile, overlap, fmt = dzi_geometry(out.read_bytes())
    assert (width, height, tile, overlap, fmt) == (300, 200, 254, 1, "png")
    names, files = dzi_tree(out)
    check_dzi_levels(lambda name: vips_pixels(str(files / name)), names, store, tile, overlap, fmt)
    # libvips opens the tree's coarsest level again as an image
    assert pyvips.Image.new_from_file(str(files / "0" / "0_0.png")).width == 1
    assert sorted(os.listdir(tmp_path)) == ["r.dzi", "r_files"]  # no temporary left behind
    umask = os.umask(0)
    os.umask(umask)
    for made in (files, files / "9", out):  # the usual permissions, not those of the private folder the tiles are cut in
        assert stat.S_IMODE(os.stat(made).st_mode) == (0o666 if made == out else 0o777) & ~umask, made


def test_dzi_in_narrow_bands_is_the_same_tree(tmp_path, monkeypatch):
    """Wide images are cut band by band; bands of one and of three tile columns give the store's
    pixels in every tile (the overlaps at band seams included)."""
    import ourgan_dist.outputs.export_dzi as ex

    url = str(tmp_path / "wide.zarr")
    write_synthetic_store(url, 1300, 300, chunk=64, pattern=noise_pattern())
    for per_band in (1, 3):
        monkeypatch.setattr(ex, "DZI_BAND_TILES", per_band)
        out = tmp_path / f"b{per_band}.dzi"
        export(url, str(out), compression="png", progress=False)
        names, files = dzi_tree(out)
        check_dzi_levels(lambda name: vips_pixels(str(files / name)), names, url, 254, 1, "png")
    a, b = (tmp_path / "b1_files" / "11", tmp_path / "b3_files" / "11")
    assert sorted(os.listdir(a)) == sorted(os.listdir(b)) and len(os.listdir(a)) == 6 * 2


def test_dzi_jpeg_tiles_are_close_to_the_store(store, tmp_path):
    out = tmp_path / "r.dzi"
    export(store, str(out), progress=False)
    assert dzi_geometry(out.read_bytes())[4] == "jpg"
    names, files = dzi_tree(out)
    tile = vips_pixels(str(files / "9" / "0_0.jpg"))
    assert tile.shape == (200, 255, 3)
    assert np.abs(tile.astype(int) - level(store, 0)[:200, :255]).mean() < 12


def test_dzi_zip_holds_the_same_tree(store, tmp_path):
    out = tmp_path / "r.zip"
    export(store, str(out), compression="png", progress=False)
    with zipfile.ZipFile(out) as z:
        names = z.namelist()
        assert "r.dzi" in names
        width, height, tile, overlap, fmt = dzi_geometry(z.read("r.dzi"))
        prefix = "r_files/"
        tiles = [n[len(prefix) :] for n in names if n.startswith(prefix)]
        assert len(tiles) + 1 == len(names)
        check_dzi_levels(
            lambda name: pyvips.Image.new_from_buffer(z.read(prefix + name), "").numpy(), tiles, store, tile, overlap, fmt
        )


def test_jpeg_and_webp_size_limits_are_refused_with_a_pointer_to_tif(tmp_path):
    # metadata only: the refusal comes before any pixel is read
    wide = str(tmp_path / "wide.zarr")
    write_synthetic_store(wide, 70000, 64, chunk=1024, fill=False)
    with pytest.raises(UserError, match=r"70000x64 .* 65535 px .*\.tif"):
        export(wide, str(tmp_path / "x.jpg"), progress=False)
    mid = str(tmp_path / "mid.zarr")
    write_synthetic_store(mid, 64, 16384, chunk=1024, fill=False)
    with pytest.raises(UserError, match=r"16383 px .*\.tif"):
        export(mid, str(tmp_path / "x.webp"), progress=False)
    assert not [p for p in os.listdir(tmp_path) if p.startswith("x.") or p.startswith(".x.")]


def test_incomplete_and_invalid_stores_are_refused(tmp_path, store):
    part = str(tmp_path / "part.zarr")
    write_synthetic_store(part, 64, 48, chunk=16, complete=False)
    with pytest.raises(StoreError, match="incomplete render .*--resume"):
        export(part, str(tmp_path / "a.tif"), progress=False)
    with pytest.raises(StoreError, match="no ourgan-dist render there|not an ourgan-dist render"):
        export(str(tmp_path / "nothing.zarr"), str(tmp_path / "a.tif"), progress=False)
    broken = str(tmp_path / "broken.zarr")
    shutil.copytree(store, broken)
    shutil.rmtree(os.path.join(broken, "2"))
    with pytest.raises(StoreError, match="array '2' is missing"):
        export(broken, str(tmp_path / "a.tif"), progress=False)
    assert not os.path.exists(tmp_path / "a.tif")


def test_names_and_options_the_formats_cannot_take(store, tmp_path):
    with pytest.raises(UserError, match=r"unknown file type '\.bmp'.*\.tif"):
        export(store, str(tmp_path / "a.bmp"), progress=False)
    with pytest.raises(UserError, match="no compression choice"):
        export(store, str(tmp_path / "a.png"), compression="jpeg", progress=False)
    with pytest.raises(UserError, match="choose one of deflate, jpeg, none"):
        export(store, str(tmp_path / "a.tif"), compression="png", progress=False)
    with pytest.raises(UserError, match="does not exist"):
        export(store, str(tmp_path / "no" / "a.tif"), progress=False)


def test_synthetic_gigapixel_class_sizes_stream_through_tiff_tiles(tmp_path):
    """A store wider than a strip buffer would like (20000 px): the TIFF comes out exact."""
    url = str(tmp_path / "wide.zarr")
    write_synthetic_store(url, 20000, 40, chunk=256, pattern=noise_pattern(5))
    export(url, str(tmp_path / "w.tif"), progress=False)
    np.testing.assert_array_equal(tifffile.imread(str(tmp_path / "w.tif")), level(url, 0))


def test_cli_export_and_its_one_line_errors(store, tmp_path):
    runner = CliRunner()
    out = str(tmp_path / "c.png")
    res = runner.invoke(main, ["export", store, out, "--quiet"])
    assert res.exit_code == 0, res.output
    assert "exported 300x200" in res.output
    np.testing.assert_array_equal(vips_pixels(out), level(store, 0))
    part = str(tmp_path / "part.zarr")
    write_synthetic_store(part, 32, 32, chunk=16, complete=False)
    res = runner.invoke(main, ["export", part, str(tmp_path / "p.tif")])
    assert res.exit_code == 2
    assert res.output.count("\n") == 1 and res.output.startswith("Error: ") and "Traceback" not in res.output


def test_allocator_settings_are_left_to_the_command_line(store, tmp_path, monkeypatch):
    """``export()`` as a library call leaves the calling program's malloc settings alone (glibc's
    are process-wide and cannot be given back); ``ourgan-dist export``, whose process ends with
    the export, sets them."""
    calls = []
    import ourgan_dist.engine.allocator as ex

    monkeypatch.setattr(ex, "_libc_mallopt", lambda: lambda param, value: calls.append((param, value)) or 1)
    export(store, str(tmp_path / "lib.png"), progress=False)
    assert calls == []
    res = CliRunner().invoke(main, ["export", store, str(tmp_path / "cli.png"), "--quiet"])
    assert res.exit_code == 0, res.output
    assert calls == [(ex.M_ARENA_MAX, 2), (ex.M_MMAP_THRESHOLD, 1 << 20)]


def test_render_with_export_flag(tiny_model, tmp_path):
    out, tif = str(tmp_path / "r.zarr"), str(tmp_path / "r.tif")
    res = CliRunner().invoke(
        main, ["render", tiny_model, "--out", out, "--size", "96x64", "--chunk", "16", "--tile", "32", "--export", tif, "--quiet"]
    )
    assert res.exit_code == 0, res.output
    np.testing.assert_array_equal(tifffile.imread(tif), level(out, 0))


def test_export_memory_benchmark_parses_sizes_without_eval():
    """benchmarks/export_memory.py reads --sizes as WIDTHxHEIGHT integers; an expression is refused
    (it used to be passed to ``eval``)."""
    import importlib.util

    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks", "export_memory.py")
    spec = importlib.util.spec_from_file_location("export_memory", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.parse_size("4096x2730") == (4096, 2730)
    for bad in ("__import__('os').system('true')x1", "4096*2", "0x10", "12x", "1x2x3", "-5x5"):
        with pytest.raises(SystemExit, match="not WIDTHxHEIGHT"):
            bench.parse_size(bad)
