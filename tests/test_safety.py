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
from ourgan_dist.canvas import Canvas, foreign_entries
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
    assert run("render", tiny_model, "--out", out, "--size", "64x48", "--tile", "32", "--chunk", "16",
               "--quiet")[0] == 0
    assert foreign_entries(str(out)) == []  # a render's own entries only
    (out / "keep.txt").write_text("mine")
    (out / "photos").mkdir()
    (out / "photos" / "a.jpg").write_bytes(b"\xff\xd8 not a render's")
    before = tree(out)
    code, text = run("render", tiny_model, "--out", out, "--size", "64x48", "--tile", "32", "--chunk", "16",
                     "--seed", "3", "--overwrite", "--quiet")
    assert code == 2, text
    assert text.startswith("Error: ") and text.count("\n") == 1 and "Traceback" not in text
    assert "keep.txt" in text and "photos/" in text and "--overwrite" in text
    assert tree(out) == before  # nothing deleted, nothing written
    with pytest.raises(StoreError, match=r"keep\.txt, photos/"):  # the library refuses too, before the lease
        do_render(tiny_model, str(out), "64x48", tile=32, seed=3, overwrite=True)
    with pytest.raises(StoreError, match="keep.txt"):  # and so does the store's own clear()
        Canvas.clear(str(out))
    assert tree(out) == before


def test_overwrite_replaces_a_render_and_keeps_nothing_stale(tiny_model, tmp_path):
    out = str(tmp_path / "r.zarr")
    do_render(tiny_model, out, "101x77", tile=32, seed=0)
    before = arrays(out)
    do_render(tiny_model, out, "64x48", tile=32, seed=3, overwrite=True)  # fewer pyramid arrays than before
    after = arrays(out)
    assert after["0"].shape == (3, 48, 64) and not np.array_equal(after["0"][:, :48, :64], before["0"][:, :48, :64])
    assert set(after) < set(before) and sorted(os.listdir(out)) == sorted(
        ["zarr.json", "generation", "progress", "lease", *(str(k) for k in range(len(Canvas(out).plan.pyramid_shapes)))])
    assert foreign_entries(out) == []
