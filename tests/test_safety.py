"""Never delete what is not ours: ``render --overwrite`` deletes only a render's own entries and
refuses a folder that also holds other files; ``export`` replaces an existing file only with
``--overwrite`` and removes only a Deep Zoom tree of its own layout; seeds outside the noise
counter's range are refused."""

from __future__ import annotations

import os

import numpy as np
import pytest
from click.testing import CliRunner

from helpers import arrays, do_render
from ourgan_dist.store.canvas import Canvas, foreign_entries
from ourgan_dist.cli import main
from ourgan_dist.errors import StoreError


def run(*args):
    r = CliRunner().invoke(main, [str(a) for a in args])
    return r.exit_code, r.output


def tree(path) -> dict[str, bytes | None]:
    """Every entry under ``path``: files with their bytes, folders as None."""
    out = {}
    for d, dirs, files in os.walk(path):
        for name in dirs:
            out[os.path.relpath(os.path.join(d, name), path)] = None
        for name in files:
            with open(os.path.join(d, name), "rb") as f:
                out[os.path.relpath(os.path.join(d, name), path)] = f.read()
    return out


# ---- render --overwrite --------------------------------------------------------------------


def test_overwrite_refuses_a_render_folder_that_holds_other_files(tiny_model, tmp_path):
    out = tmp_path / "r.zarr"
    assert run("render", tiny_model, "--out", out, "--size", "64x48", "--tile", "32", "--chunk", "16", "--quiet")[0] == 0
    assert foreign_entries(str(out)) == []  # a render's own entries only
    (out / "keep.txt").write_text("mine")
    (out / "photos").mkdir()
    (out / "photos" / "a.jpg").write_bytes(b"\xff\xd8 not a render's")
    before = tree(out)
    code, text = run(
        "render",
        tiny_model,
        "--out",
        out,
        "--size",
        "64x48",
        "--tile",
        "32",
        "--chunk",
        "16",
        "--seed",
        "3",
        "--overwrite",
        "--quiet",
    )
    assert code == 2, text
    assert text.startswith("Error: ") and text.count("\n") == 1 and "Traceback" not in text
    assert "keep.txt" in text and "photos/" in text and "--overwrite" in text
    assert tree(out) == before  # nothing deleted, nothing written
    with pytest.raises(StoreError, match=r"keep\.txt, photos/"):  # the library refuses too, before the lease
        do_render(tiny_model, str(out), "64x48", tile=32, seed=3, overwrite=True)
    with pytest.raises(StoreError, match="keep.txt"):  # and so does the store's own clear()
        Canvas.clear(str(out))
    assert tree(out) == before


def test_a_folder_named_like_an_image_array_that_the_store_does_not_list_is_not_the_renders(tiny_model, tmp_path):
    """The image arrays are ``0``, ``1``, ...; a user's ``2024/`` in a render's folder is not one of
    them (the store's zarr.json does not list it): --overwrite refuses, and neither clear() nor
    delete() touches anything."""
    out = tmp_path / "r.zarr"
    do_render(tiny_model, str(out), "64x48", tile=32, seed=0)
    (out / "2024").mkdir()
    (out / "2024" / "trip.jpg").write_bytes(b"mine")
    before = tree(out)
    assert foreign_entries(str(out)) == ["2024/"]
    code, text = run("render", tiny_model, "--out", out, "--size", "64x48", "--tile", "32", "--overwrite", "--quiet")
    assert code == 2 and "2024/" in text, text
    for remove in (Canvas.clear, Canvas.delete):
        with pytest.raises(StoreError, match="2024/"):
            remove(str(out))
    assert tree(out) == before
    (out / "2024" / "trip.jpg").unlink()
    (out / "2024").rmdir()
    Canvas.delete(str(out))  # a render's own folder, and nothing else: deleted whole
    assert not out.exists()


def test_files_inside_a_renders_own_folders_that_no_render_writes_are_never_deleted(tiny_model, tmp_path):
    """--overwrite deletes the render's own folders (``0/``, ``generation/``, ``progress/``) whole,
    so a user's file put inside one of them is looked for there too: refused, nothing deleted; the
    arrays' metadata, chunks and zarr's temporaries of them are the render's."""
    out = tmp_path / "r.zarr"
    do_render(tiny_model, str(out), "64x48", tile=32, seed=0)
    (out / "0" / "c" / "0" / "0" / "0.0123456789abcdef0123456789abcdef.partial").write_bytes(b"a crashed write")
    assert foreign_entries(str(out)) == []
    mine = [out / "generation" / "notes.txt", out / "0" / "c" / "readme", out / "progress" / "L0" / "c" / "x" / "a.jpg"]
    for path in mine:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"mine")
    before = tree(out)
    assert foreign_entries(str(out)) == ["0/c/readme", "generation/notes.txt", "progress/L0/c/x/a.jpg"]
    code, text = run("render", tiny_model, "--out", out, "--size", "64x48", "--tile", "32", "--overwrite", "--quiet")
    assert code == 2 and "generation/notes.txt" in text and "--overwrite" in text, text
    for remove in (Canvas.clear, Canvas.delete):
        with pytest.raises(StoreError, match="notes.txt"):
            remove(str(out))
    assert tree(out) == before
    for path in mine:
        path.unlink()
    assert run("render", tiny_model, "--out", out, "--size", "64x48", "--tile", "32", "--overwrite", "--quiet")[0] == 0


def test_overwrite_replaces_a_render_and_keeps_nothing_stale(tiny_model, tmp_path):
    out = str(tmp_path / "r.zarr")
    do_render(tiny_model, out, "101x77", tile=32, seed=0)
    before = arrays(out)
    do_render(tiny_model, out, "64x48", tile=32, seed=3, overwrite=True)  # fewer pyramid arrays than before
    after = arrays(out)
    assert after["0"].shape == (3, 48, 64) and not np.array_equal(after["0"][:, :48, :64], before["0"][:, :48, :64])
    assert set(after) < set(before) and sorted(os.listdir(out)) == sorted(
        ["zarr.json", "generation", "progress", "lease", *(str(k) for k in range(len(Canvas(out).plan.pyramid_shapes)))]
    )
    assert foreign_entries(out) == []


# ---- export --------------------------------------------------------------------------------


def test_export_refuses_an_existing_file_without_overwrite(small_render, tmp_path):
    from ourgan_dist.errors import UserError
    from ourgan_dist.outputs.export import export

    for name in ("r.tif", "r.png", "r.zip"):
        target = tmp_path / name
        target.write_bytes(b"someone's file")
        code, text = run("export", small_render, target, "--quiet")
        assert code == 2 and text.startswith("Error: ") and text.count("\n") == 1, text
        assert name in text and "already exists" in text and "--overwrite" in text
        with pytest.raises(UserError, match="already exists"):
            export(small_render, str(target), progress=False)
        assert target.read_bytes() == b"someone's file"
        code, text = run("export", small_render, target, "--quiet", "--overwrite")
        assert code == 0, text
        assert target.read_bytes() != b"someone's file"
    assert sorted(os.listdir(tmp_path)) == ["r.png", "r.tif", "r.zip"]  # no temporary left behind


def test_a_file_that_appears_during_an_export_is_never_replaced(small_render, tmp_path, monkeypatch):
    """The target is checked before the export and taken at the end without replacing anything: a
    file someone writes there meanwhile is kept, the export is refused, and the finished export
    stays where the error says."""
    import re

    import ourgan_dist.outputs.export as export_module
    from ourgan_dist.errors import UserError

    checked = export_module.check_target

    def check_then_someone_writes(file, overwrite=False, compression=None):
        checked(file, overwrite, compression)
        with open(file, "wb") as f:
            f.write(b"someone's file")

    monkeypatch.setattr(export_module, "check_target", check_then_someone_writes)
    for name in ("r.tif", "r.png", "r.zip", "r.dzi"):
        target = tmp_path / name
        with pytest.raises(UserError, match="appeared while the export ran") as e:
            export_module.export(small_render, str(target), progress=False)
        assert target.read_bytes() == b"someone's file"
        (kept,) = re.findall(r"kept (?:as|in) '([^']+)'", str(e.value))[-1:]
        assert os.path.exists(kept), str(e.value)


def test_dzi_overwrite_replaces_only_a_deep_zoom_tree(small_render, tmp_path):
    out, files = tmp_path / "r.dzi", tmp_path / "r_files"
    assert run("export", small_render, out, "--quiet")[0] == 0
    tiles = tree(files)
    code, text = run("export", small_render, out, "--quiet")  # exists: refused without --overwrite
    assert code == 2 and "r.dzi" in text and "--overwrite" in text
    out.unlink()  # the tile folder alone is refused too
    code, text = run("export", small_render, out, "--quiet")
    assert code == 2 and "r_files" in text and "--overwrite" in text
    assert tree(files) == tiles
    for foreign, named in (
        (files / "notes.txt", "notes.txt"),
        (files / "9" / "holiday.jpg", "holiday.jpg"),
        (files / "drafts" / "0_0.jpg", "drafts'"),
        (files / "9" / "0_0.png", "0_0.png"),
    ):
        foreign.parent.mkdir(exist_ok=True)  # not a tile, a folder that is no level, a tile of another format
        foreign.write_bytes(b"keep me")
        code, text = run("export", small_render, out, "--quiet", "--overwrite")
        assert code == 2 and text.count("\n") == 1 and named in text and "refusing to delete" in text, text
        assert foreign.read_bytes() == b"keep me" and not out.exists()
        foreign.unlink()
        if foreign.parent.name == "drafts":
            foreign.parent.rmdir()
    assert tree(files) == tiles
    (files / "3" / "0_0.jpg").write_bytes(b"a stale tile")
    assert run("export", small_render, out, "--quiet", "--overwrite")[0] == 0
    assert tree(files) == tiles and out.exists()  # a Deep Zoom tree of its own format: replaced
    code, text = run("export", small_render, out, "--quiet", "--overwrite", "--compression", "png")
    assert code == 2 and "0_0.jpg" in text  # a .png export does not delete a tree of .jpg tiles


def test_render_export_follows_the_same_rule_before_rendering(tiny_model, tmp_path):
    store, tif = tmp_path / "r.zarr", tmp_path / "r.tif"
    tif.write_bytes(b"someone's file")
    base = ["render", tiny_model, "--out", store, "--size", "64x48", "--tile", "32", "--chunk", "16", "--quiet", "--export", tif]
    code, text = run(*base)
    assert code == 2 and "already exists" in text and "--overwrite" in text
    assert not store.exists() and tif.read_bytes() == b"someone's file"  # refused before anything was rendered
    code, text = run(*base, "--overwrite")
    assert code == 0, text
    import tifffile

    assert tifffile.imread(str(tif)).shape == (48, 64, 3)
