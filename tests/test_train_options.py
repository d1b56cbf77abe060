"""Softened SR inputs (``sr_blur``): the blur keeps mass and has the asked width, and degraded
inputs are the bicubic quarter without it and softer with it."""

from __future__ import annotations


import pytest
import torch

from ourgan_dist.train.sr import degrade, downsample4, gaussian_blur


def test_gaussian_blur_keeps_mass_and_has_the_asked_width():
    img = torch.zeros(3, 3, 41, 41)
    img[:, :, 20, 20] = 1.0
    sigmas = torch.tensor([0.0, 1.0, 2.5])
    out = gaussian_blur(img, sigmas)
    assert torch.equal(out[0], img[0])  # std 0: unchanged
    yy = torch.arange(41, dtype=torch.float32).view(-1, 1) - 20
    for b, sd in ((1, 1.0), (2, 2.5)):
        mass = out[b, 0]
        assert float(mass.sum()) == pytest.approx(1.0, abs=1e-5)
        var_y = float((mass * yy**2).sum())
        assert var_y == pytest.approx(sd**2, rel=0.02)
        assert torch.allclose(mass, mass.T, atol=1e-7)  # the same in x and y
    flat = torch.full((2, 3, 16, 16), 0.3)
    assert torch.allclose(gaussian_blur(flat, torch.tensor([0.7, 3.0])), flat, atol=1e-6)  # edges reflected


def test_degrade_without_blur_is_bicubic_quarter_and_with_blur_is_softer():
    g = torch.Generator().manual_seed(0)
    hr = torch.rand(4, 3, 64, 64, generator=g) * 2 - 1
    assert torch.equal(degrade(hr, 0.0, torch.Generator().manual_seed(1)), downsample4(hr))
    soft = degrade(hr, 3.0, torch.Generator().manual_seed(1))
    assert soft.shape == (4, 3, 16, 16)
    # blurring before shrinking removes fine detail: less variance left than in the plain input
    assert float(soft.var()) < float(downsample4(hr).var())
