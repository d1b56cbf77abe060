"""The coherent base generator: HP-VAE-GAN's multi-scale patch generator with OUR-GAN's
vertical positional convolution.

Scales run from coarsest (0) to finest (S-1). Scale 0 is a patch-VAE decoder of a latent map;
the next ``vae_scales - 1`` scales refine deterministically (trained with the VAE, they carry
its diversity up); the remaining scales are patch-GAN refinements with injected noise:

    x_0 = tanh(D_0(z_0))
    x_s = up(x_{s-1}) + G_s(up(x_{s-1}) + amp_s * z_s)        (amp_s = 0 on VAE scales)

Every conv also sees the global y channel of its scale. The base image is small and is always
generated whole (never tiled), so resizing between scales is an ordinary bilinear resize of the
whole image. Noise comes from ``noise.normal`` keyed by (seed, level 0, scale).

A new image draws its latent from the VAE's prior, N(0, 1) per latent pixel, keyed by the seed
(HP-VAE-GAN's sampling); the GAN scales add detail from their noise. This is the paper's base,
the ``paper`` preset's; the ``cpu`` and ``tiny`` presets draw new scenes from the photo's own
patches instead (``models/patches.py``; why: docs/quality.md).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from ..planning import noise
from ..config import BaseConfig
from ..planning.geometry import Box
from .layers import YConv, leaky


class Stage(nn.Module):
    """``convs`` 3x3 vertical positional convs: cin -> ch -> ... -> ch -> cout."""

    def __init__(self, cin: int, ch: int, cout: int, convs: int, vertical: bool):
        super().__init__()
        widths = [cin] + [ch] * (convs - 1) + [cout]
        self.convs = nn.ModuleList(YConv(a, b, vertical) for a, b in zip(widths[:-1], widths[1:]))

    @property
    def receptive_radius(self) -> int:
        return len(self.convs)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        for i, conv in enumerate(self.convs):
            x = conv(x, y)
            if i < len(self.convs) - 1:
                x = leaky(x)
        return x


@contextlib.contextmanager
def _one_thread(device: torch.device):
    """Run torch single-threaded on CPU. Torch's CPU resampling kernels round differently with
    different thread counts, so a worker with 1 thread and a process with 2 would make different
    base images (I2); the base image is small, so this costs little."""
    threads = torch.get_num_threads()
    if device.type != "cpu" or threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def resize_bilinear(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize that gives the same bits for any torch thread count."""
    with _one_thread(x.device):
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def y_channel(height: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """(1, 1, H, 1): rows of the whole image from -1 (top) to +1 (bottom)."""
    return torch.from_numpy(noise.y_coordinates(0, height, height)).to(device).view(1, 1, height, 1)


class BaseGenerator(nn.Module):
    def __init__(self, cfg: BaseConfig):
        super().__init__()
        self.cfg = cfg
        v = cfg.vertical_coord
        self.encoder = Stage(3, cfg.channels, 2 * cfg.latent_channels, cfg.convs_per_stage, v)  # training only
        self.decoder = Stage(cfg.latent_channels, cfg.channels, 3, cfg.convs_per_stage, v)
        self.stages = nn.ModuleList(Stage(3, cfg.channels, 3, cfg.convs_per_stage, v) for _ in range(cfg.n_scales - 1))
        # per-scale noise amplitude, set by training from the reconstruction error (0 on VAE scales)
        self.register_buffer("noise_amps", torch.zeros(cfg.n_scales))

    @property
    def receptive_radius(self) -> int:
        """Radius of one stage (the patch a scale sees is 2 * radius + 1 of that scale's pixels)."""
        return self.cfg.convs_per_stage

    def scale_sizes(self, height: int, width: int) -> list[tuple[int, int]]:
        """(h, w) of every scale, coarsest first, for a finest scale of ``height`` x ``width``."""
        c = self.cfg
        n = c.n_scales
        ratio = c.coarsest_width / c.base_width
        sizes = []
        for s in range(n):
            f = ratio ** ((n - 1 - s) / (n - 1)) if n > 1 else 1.0
            sizes.append((max(2, math.floor(height * f + 0.5)), max(2, math.floor(width * f + 0.5))))
        sizes[-1] = (height, width)
        return sizes

    def reconstruction_path(self, sizes: list[tuple[int, int]], latent: torch.Tensor) -> Iterator[torch.Tensor]:
        """The photo's reconstruction at each scale of ``sizes`` (the photo's scale sizes), coarsest
        first: its latent map (the encoder's posterior mean) through the scales with no noise, the
        path the GAN scales learn to reconstruct."""
        x = self.decode(latent, sizes[0])
        yield x
        for s in range(1, len(sizes)):
            x = self.refine(s, x, sizes[s], None if s < self.cfg.vae_scales else torch.zeros(1, 3, *sizes[s], device=x.device))
            yield x

    def reconstruct(self, sizes: list[tuple[int, int]], upto: int, latent: torch.Tensor) -> torch.Tensor:
        """The photo's reconstruction at scale ``upto`` of ``sizes``."""
        return list(self.reconstruction_path(sizes[: upto + 1], latent))[-1]

    def encode(self, x0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, h0, w0) coarsest image -> (mu, logvar), each (B, latent, h0, w0)."""
        h = self.encoder(x0, y_channel(x0.shape[2], x0.device))
        mu, logvar = h.chunk(2, dim=1)
        return mu, logvar.clamp(-10, 10)

    def decode(self, z0: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        """A latent map (B, latent, h0, w0) -> the coarsest image (B, 3, h0, w0)."""
        return torch.tanh(self.decoder(z0, y_channel(z0.shape[2], z0.device)))

    def refine(self, s: int, prev: torch.Tensor, size: tuple[int, int], z: torch.Tensor | None) -> torch.Tensor:
        """Scale s >= 1: x_s = up(x_{s-1}) + G_s(up(x_{s-1}) + amp_s * z_s)."""
        return self.refine_upsampled(s, resize_bilinear(prev, size), z, y_channel(size[0], prev.device))

    def refine_upsampled(self, s: int, up: torch.Tensor, z: torch.Tensor | None, y: torch.Tensor) -> torch.Tensor:
        """``refine`` on an already upsampled input, or on a crop of it: ``y`` (1, 1, h, 1) holds
        the crop's rows of the *whole* image's y channel, so a stage trained on crops learns the
        same vertical layout as one trained on the whole image."""
        inp = up if z is None else up + self.noise_amps[s] * z
        return up + self.stages[s - 1](inp, y)

    def scale_noise(self, seed: int, s: int, size: tuple[int, int], device) -> torch.Tensor | None:
        if s < self.cfg.vae_scales:
            return None
        z = noise.normal(seed, 0, 1 + s, 3, Box(0, size[0], 0, size[1]))
        return torch.from_numpy(z).unsqueeze(0).to(device)

    def latent(self, seed: int, size: tuple[int, int], device) -> torch.Tensor:
        """The latent of a new image whose coarsest scale is ``size``: a draw from the prior."""
        z = noise.normal(seed, 0, 0, self.cfg.latent_channels, Box(0, size[0], 0, size[1]))
        return torch.from_numpy(z).unsqueeze(0).to(device)

    @torch.no_grad()
    def generate(self, height: int, width: int, seed: int) -> torch.Tensor:
        """A new base image (1, 3, height, width) in [-1, 1], a function of (weights, seed, size)."""
        device = self.noise_amps.device
        sizes = self.scale_sizes(height, width)
        x = self.decode(self.latent(seed, sizes[0], device), sizes[0])
        for s in range(1, len(sizes)):
            x = self.refine(s, x, sizes[s], self.scale_noise(seed, s, sizes[s], device))
        return x.clamp(-1, 1)
