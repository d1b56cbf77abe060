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

A new image starts from the photo (``latent_source="photo"``): the generator's own
reconstruction of the photo at scale k (``warp_scale``), read through a random warp of its rows
that is a function of the seed; the scales above k add new detail from their noise. With
``warp_at = 0`` it is the photo's latent map that is warped and decoded (checkpoints from before).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from .. import noise
from ..config import BaseConfig
from ..plan import Box
from .layers import YConv, leaky


class Stage(nn.Module):
    """``convs`` 3x3 vertical positional convs: cin -> ch -> ... -> ch -> cout."""

    def __init__(self, cin: int, ch: int, cout: int, convs: int, vertical: bool, padding: str = "replicate"):
        super().__init__()
        widths = [cin] + [ch] * (convs - 1) + [cout]
        self.convs = nn.ModuleList(YConv(a, b, vertical, padding) for a, b in zip(widths[:-1], widths[1:]))

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


PHOTO_BUFFERS = ("photo_latent", "photo_image", "photo_base")  # the photo's, set by training; empty before
WARP_STREAM = 1000  # noise streams of level 0 that draw the photo latent's warp (scales use 0 .. n_scales)
WARP_CELLS = 4  # the warp's random field has this many cells across the photo's width (3 down)


def warp_grid(seed: int, grid: tuple[int, int], photo_grid: tuple[int, int], strength: float,
              flip: bool) -> torch.Tensor:
    """Where each pixel of a latent map of ``grid`` (h, w) reads the photo's latent map of
    ``photo_grid``: (1, h, w, 2) ``grid_sample`` coordinates (x, y in [-1, 1] = the photo's
    first and last pixel centres), a function of the seed alone.

    Rows map straight to the photo's rows, so the vertical layout (sky above ground) stays.
    Along each row the photo is read through a smooth, strictly increasing random map: the
    density exp(strength * f) of a smooth Gaussian field f, integrated, widens some stretches
    of the row and narrows others, so objects move, widen and narrow, but never fold or repeat. A map
    wider than the photo (in the photo's aspect) reads past its edges mirrored; a narrower one a
    random window. Half the seeds (with ``flip``) mirror the whole map left-right."""
    h, w = grid
    ph, pw = photo_grid
    span = (w / h) / (pw / ph)  # the map's width in photo widths, at the photo's scale
    cells = (3, max(2, math.ceil(WARP_CELLS * span)) + 1)
    f = torch.from_numpy(noise.normal(seed, 0, WARP_STREAM, 1, Box(0, cells[0], 0, cells[1]))).unsqueeze(0)
    f = F.interpolate(f, size=(h, w), mode="bicubic", align_corners=True)[0, 0]  # (h, w), smooth
    c = torch.cumsum(torch.exp(strength * f.double()), dim=1)
    c = c - c[:, :1]
    along = c / c[:, -1:] if w > 1 else torch.full_like(c, 0.5)  # 0 .. 1 along each row, increasing
    extra = noise.normal(seed, 0, WARP_STREAM + 1, 2, Box(0, 1, 0, 1))[:, 0, 0]  # window position, flip
    centre = 0.0 if span >= 1 else (1 - span) * math.tanh(float(extra[0]))
    u = centre + span * (2 * along - 1)
    if flip and extra[1] > 0:
        u = -u
    v = torch.linspace(-1, 1, h, dtype=torch.float64).view(h, 1).expand(h, w) if h > 1 else torch.zeros(1, w, dtype=torch.float64)
    return torch.stack([u, v], dim=-1).float().unsqueeze(0)


def y_channel(height: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """(1, 1, H, 1): rows of the whole image from -1 (top) to +1 (bottom)."""
    return torch.from_numpy(noise.y_coordinates(0, height, height)).to(device).view(1, 1, height, 1)


class BaseGenerator(nn.Module):
    def __init__(self, cfg: BaseConfig):
        super().__init__()
        self.cfg = cfg
        v, pad = cfg.vertical_coord, cfg.padding
        self.encoder = Stage(3, cfg.channels, 2 * cfg.latent_channels, cfg.convs_per_stage, v, pad)  # training only
        self.decoder = Stage(cfg.latent_channels, cfg.channels, 3, cfg.convs_per_stage, v, pad)
        self.stages = nn.ModuleList(
            Stage(3, cfg.channels, 3, cfg.convs_per_stage, v, pad) for _ in range(cfg.n_scales - 1))
        # per-scale noise amplitude, set by training from the reconstruction error (0 on VAE scales)
        self.register_buffer("noise_amps", torch.zeros(cfg.n_scales))
        # the photo's own latent map (posterior mean) and the photo itself at base width, set by
        # training; empty until then. ``photo_image`` (the photo's reconstruction at
        # ``warp_scale``) is what checkpoints of the version before keep instead of ``photo_base``
        self.register_buffer("photo_latent", torch.zeros(0))
        self.register_buffer("photo_image", torch.zeros(0))
        self.register_buffer("photo_base", torch.zeros(0))

    def set_photo_latent(self, mu: torch.Tensor) -> None:
        """Keep the photo's posterior mean (1, latent, h, w): ``latent_source="photo"`` warps it."""
        self.photo_latent = mu.detach().clone()

    def set_photo_image(self, x: torch.Tensor) -> None:
        """Keep the photo's reconstruction at ``warp_scale`` (1, 3, h, w), as the version before
        did: new images warp it where no ``photo_base`` is kept."""
        self.photo_image = x.detach().clone()

    def set_photo_base(self, x: torch.Tensor) -> None:
        """Keep the photo at base width (1, 3, h, w): new images start from it, warped."""
        self.photo_base = x.detach().clone()

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # the photo latent's and images' shapes are the photo's: take them from the checkpoint first
        for name in PHOTO_BUFFERS:
            if prefix + name in state_dict:
                setattr(self, name, torch.zeros_like(state_dict[prefix + name], device=getattr(self, name).device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

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

    def warp_scale(self) -> int:
        """The scale a new image starts at (``warp_at`` > 0): the one whose width is nearest
        ``warp_at`` x the finest width. Scales are spaced by a fixed ratio, so it is the same
        index for the photo and for a base of any size."""
        c = self.cfg
        n = c.n_scales
        if c.warp_at <= 0 or n == 1:
            return 0
        ratio = c.coarsest_width / c.base_width
        return min(range(n), key=lambda s: abs((n - 1 - s) / (n - 1) * math.log(ratio) - math.log(c.warp_at)))

    def reconstruction_path(self, sizes: list[tuple[int, int]], latent: torch.Tensor | None = None) -> Iterator[torch.Tensor]:
        """The photo's reconstruction at each scale of ``sizes`` (the photo's scale sizes), coarsest
        first: a latent map (the kept ``photo_latent`` by default) through the scales with no
        noise, the path the GAN scales learn to reconstruct."""
        x = self.decode(self.photo_latent if latent is None else latent, sizes[0])
        yield x
        for s in range(1, len(sizes)):
            x = self.refine(s, x, sizes[s], None if s < self.cfg.vae_scales else torch.zeros(
                1, 3, *sizes[s], device=x.device))
            yield x

    def reconstruct(self, sizes: list[tuple[int, int]], upto: int) -> torch.Tensor:
        """The photo's reconstruction at scale ``upto`` of ``sizes``."""
        return list(self.reconstruction_path(sizes[:upto + 1]))[-1]

    def start(self, seed: int, sizes: list[tuple[int, int]], device) -> tuple[torch.Tensor, int]:
        """A new image's first scale: (its image at scale k of ``sizes``, k).

        With the photo kept (``warp_at`` > 0), it is read at scale k = ``warp_scale()`` through
        ``warp_grid``'s random stretch of its rows (``start_source``: the photo itself, or in a
        checkpoint of the version before, its reconstruction at k). Warping the latent instead
        (k = 0) smears what it stretches: the decoder turns a stretched latent into soft streaks,
        which the few scales above cannot sharpen (docs/quality.md)."""
        if self.cfg.latent_source == "photo" and self.cfg.warp_at > 0 and 4 in (self.photo_base.dim(),
                                                                                self.photo_image.dim()):
            k = self.warp_scale()
            with _one_thread(torch.device("cpu")):  # the grid from CPU resampling on one thread: the same bits anywhere
                source = self.start_source(sizes[k][0])
                grid = warp_grid(seed, sizes[k], tuple(source.shape[2:]), self.cfg.latent_warp,
                                 self.cfg.latent_flip).to(device)
            with _one_thread(torch.device(device)):
                x = F.grid_sample(source.to(device), grid, mode="bicubic", padding_mode="reflection",
                                  align_corners=True)
            return x.clamp(-1, 1), k
        return self.decode(self.latent(seed, sizes[0], device), sizes[0]), 0

    def start_source(self, height: int) -> torch.Tensor:
        """The image a start ``height`` rows tall is read from: the photo itself at base width
        (``photo_base``), shrunk to that height with an antialiased bicubic (a start taller than
        it reads it whole). Checkpoints of the version before keep only the photo's reconstruction
        at ``warp_scale`` (``photo_image``) and read that, at any height."""
        if self.photo_base.dim() != 4:
            return self.photo_image
        ph, pw = self.photo_base.shape[2:]
        if height >= ph:
            return self.photo_base
        size = (height, max(1, math.floor(pw * height / ph + 0.5)))
        return F.interpolate(self.photo_base.cpu(), size=size, mode="bicubic", antialias=True, align_corners=False)

    def latent_grid(self, size: tuple[int, int]) -> tuple[int, int]:
        """(h, w) of the latent map for a coarsest scale of ``size``: one latent pixel per
        ``latent_stride`` x ``latent_stride`` block, rounded up."""
        f = self.cfg.latent_stride
        return -(-size[0] // f), -(-size[1] // f)

    def encode(self, x0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, h0, w0) coarsest image -> (mu, logvar), each (B, latent, *latent_grid)."""
        h = self.encoder(x0, y_channel(x0.shape[2], x0.device))
        if self.cfg.latent_stride > 1:  # (B, 2 * latent, h0, w0) -> (B, 2 * latent, h0 / f, w0 / f)
            h = F.adaptive_avg_pool2d(h, self.latent_grid((x0.shape[2], x0.shape[3])))
        mu, logvar = h.chunk(2, dim=1)
        return mu, logvar.clamp(-10, 10)

    def decode(self, z0: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        """A latent map -> the coarsest image of ``size`` (the latent's own size when None); a
        coarser latent is first spread over the image by a bilinear resize, so that a draw from
        the i.i.d. prior is smooth at the image's scale, as the photo's own latent is."""
        if size is not None and tuple(z0.shape[2:]) != tuple(size):
            z0 = resize_bilinear(z0, size)  # (B, latent, h0 / f, w0 / f) -> (B, latent, h0, w0)
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
        """The latent of a new image whose coarsest scale is ``size``.

        "photo" (``latent_source``): the photo's own latent map, read through ``warp_grid``'s
        random stretch of its rows. The patch-VAE's prior is i.i.d. per pixel, while the latent
        of a real image is a smooth map; decoded, a prior draw is a blend of the photo's colours
        with no objects in it, which the GAN scales then turn into streaks (see
        docs/quality.md). A warped photo latent decodes to the photo's objects, moved and
        resized, and the GAN scales' noise makes their detail new.

        "prior": N(0, 1) scaled by the config's ``temperature`` (below 1 it draws from the
        prior's dense middle, nearer the latents the decoder knows). A generator that has not
        seen a photo yet (untrained, or before training's GAN scales) draws from the prior too."""
        gh, gw = self.latent_grid(size)
        if self.cfg.latent_source == "photo" and self.photo_latent.dim() == 4:
            with _one_thread(torch.device("cpu")):  # CPU resampling on one thread: the same bits anywhere
                grid = warp_grid(seed, (gh, gw), tuple(self.photo_latent.shape[2:]), self.cfg.latent_warp,
                                 self.cfg.latent_flip).to(device)  # resampled on the CPU
                return F.grid_sample(self.photo_latent.to(device), grid, mode="bilinear", padding_mode="reflection",
                                     align_corners=True)
        z = noise.normal(seed, 0, 0, self.cfg.latent_channels, Box(0, gh, 0, gw))
        z = torch.from_numpy(z).unsqueeze(0)
        if self.cfg.temperature != 1.0:
            z = z * self.cfg.temperature
        return z.to(device)

    @torch.no_grad()
    def generate(self, height: int, width: int, seed: int) -> torch.Tensor:
        """A new base image (1, 3, height, width) in [-1, 1], a function of (weights, seed, size)."""
        device = self.noise_amps.device
        sizes = self.scale_sizes(height, width)
        x, first = self.start(seed, sizes, device)
        for s in range(first + 1, len(sizes)):
            x = self.refine(s, x, sizes[s], self.scale_noise(seed, s, sizes[s], device))
        return x.clamp(-1, 1)
