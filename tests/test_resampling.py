"""One resampling function: the bicubic filter that training, evaluation and the SR degradation
share lives in images.py, and nothing outside train/ reaches into train/ for it."""

from __future__ import annotations

import ast
import pathlib

import torch

from ourgan_dist import images

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "ourgan_dist"
RESAMPLING = {"resize", "pyramid", "downsample4", "upsample4", "downsample_to"}


def test_quarter_resize_is_the_sr_degradation():
    """On a size that divides by 4, resizing to a quarter and ``downsample4`` are the same filter."""
    x = torch.rand(2, 3, 36, 52, generator=torch.Generator().manual_seed(0)) * 2 - 1
    assert torch.equal(images.resize(x, 9, 13), images.downsample4(x))


def test_pyramid_is_resize_at_each_size_and_stays_in_range():
    x = torch.rand(1, 3, 37, 53, generator=torch.Generator().manual_seed(1)) * 2 - 1
    sizes = [(5, 7), (19, 27), (37, 53)]
    levels = images.pyramid(x, sizes)
    assert [tuple(t.shape[2:]) for t in levels] == sizes
    for (h, w), t in zip(sizes, levels):
        assert torch.equal(t, images.resize(x, h, w))
        assert float(t.min()) >= -1 and float(t.max()) <= 1  # bicubic overshoot is clamped
    up = images.upsample4(images.downsample4(x[:, :, :36, :52]))
    assert up.shape == (1, 3, 36, 52) and float(up.abs().max()) <= 1


def test_no_module_outside_train_imports_resampling_from_train():
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if "train" in path.relative_to(PACKAGE).parts[:1]:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and "train" in node.module.split("."):
                offenders += [f"{path.name}: {a.name}" for a in node.names if a.name in RESAMPLING]
    assert not offenders, offenders
