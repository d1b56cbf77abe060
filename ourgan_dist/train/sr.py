"""Fine-tuning the x4 super-resolution network on the photo, at every scale the renderer feeds it.

The network starts from a pre-trained prior when its config names one (``models/priors.py``;
OUR-GAN fine-tunes a pre-trained ESRGAN the same way), else from scratch with its residual at
zero. Each step takes ``sr_batch`` random crops of ``sr_crop`` pixels from one level of the photo's
x4 pyramid (``sr_scales``: the photo at base width x 4, x 16, ... and at its own size, so that level
1 of a render, whose input is at the base generator's scale, sees what it learned), makes their
low-resolution input by bicubic 1/4 downsampling (antialiased), adds input noise
(SR(x + amp * z)) and minimises L1 to the crop plus a consistency term (the output shrunk x4
must give back its input, and no position of the 4x4 pixel-shuffle cell may differ on average).
The paper adds a patch-GAN loss; here it drew a dot grid level after level (docs/quality.md).

A strip at the photo's right edge (``HOLDOUT`` of its width, full height so that it spans sky to
ground) is never trained on: ``evaluate`` measures the network's PSNR there.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from .. import images
from ..images import downsample4, resize, upsample4
from ..config import TrainConfig
from ..errors import UserError

HOLDOUT = 0.1  # fraction of the photo's width (right edge) kept out of SR training
MAX_SIDE = 8192  # the SR network learns from the photo at up to this many pixels a side
MIN_SIDE = images.MIN_SIDE  # below this there is nothing to learn x4 super-resolution from


def load_sr_photo(image: str) -> torch.Tensor:
    """The photo at full resolution (shrunk to ``MAX_SIDE`` on load if larger): (1, 3, H, W)."""
    photo = torch.from_numpy(images.load_rgb(image, max_width=MAX_SIDE, max_height=MAX_SIDE)).unsqueeze(0)
    if min(photo.shape[2:]) < MIN_SIDE:
        raise UserError(
            f"photo {image!r}: {photo.shape[3]}x{photo.shape[2]} is too small to learn x4 "
            f"super-resolution from; use a photo at least {MIN_SIDE} px on each side"
        )
    return photo


def holdout_columns(width: int, holdout: float = HOLDOUT) -> int:
    """First column of the held-out strip (a multiple of 4); ``width`` when nothing is held out."""
    if holdout <= 0:
        return width
    return max(4, (int(width * (1 - holdout)) // 4) * 4)


def random_crops(photo: torch.Tensor, size: int, n: int, gen: torch.Generator) -> torch.Tensor:
    """(n, 3, size, size) crops at random positions of a (1, 3, H, W) photo."""
    _, _, h, w = photo.shape
    size = min(size, (min(h, w) // 4) * 4)
    ys = torch.randint(0, h - size + 1, (n,), generator=gen).tolist()
    xs = torch.randint(0, w - size + 1, (n,), generator=gen).tolist()
    return torch.cat([photo[:, :, y : y + size, x : x + size] for y, x in zip(ys, xs)])


def phase_means(img: torch.Tensor) -> torch.Tensor:
    """(B, 3, 4h, 4w) -> (3, 16): the mean of each colour at each of the 16 positions of a 4x4
    block. A photo has no preferred position; a x4 network with a pixel-shuffle tail can learn
    one (a faint dot every 4 px), which applying it level after level turns into a grid."""
    h, w = img.shape[2] // 4 * 4, img.shape[3] // 4 * 4
    return F.pixel_unshuffle(img[:, :, :h, :w], 4).mean(dim=(0, 2, 3)).view(3, 16)


def phase_loss(out: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
    """L1 between the output's and the crop's per-position means (``phase_means``)."""
    return F.l1_loss(phase_means(out), phase_means(hr))


def sr_scales(photo_width: int, base_width: int) -> list[int]:
    """Widths of the photo's levels the SR network learns to make: base width x 4, x 16, ... below
    the photo's own width, then the photo's own width (the renderer's levels at the photo's scale,
    and the finest real detail there is). Each pair is (width / 4 -> width)."""
    widths, w = [], 4 * base_width
    while w < photo_width * 0.8:  # a level within 20% of the photo's width is the photo itself
        widths.append(w)
        w *= 4
    return widths + [photo_width]


def scale_pyramid(photo: torch.Tensor, widths: list[int], crop: int) -> list[torch.Tensor]:
    """The photo (1, 3, H, W) at each width (antialiased bicubic), skipping any too small to crop."""
    h, w = photo.shape[2], photo.shape[3]
    out = []
    for width in widths:
        height = max(1, round(h * width / w))
        if min(height, width) < max(16, crop // 2):
            continue
        out.append(photo if width == w else resize(photo, height, width))
    return out or [photo]


def gaussian_blur(img: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """Blur each image of (B, 3, H, W) with its own Gaussian (std ``sigmas[b]`` px; 0: unchanged),
    edges reflected."""
    radius = max(1, int(torch.ceil(3 * sigmas.max())))
    t = torch.arange(-radius, radius + 1, dtype=img.dtype, device=img.device)
    out = []
    for x, sd in zip(img, sigmas.tolist()):
        if sd <= 0:
            out.append(x[None])
            continue
        k = torch.exp(-0.5 * (t / sd) ** 2)
        k = (k / k.sum()).to(img.dtype)
        x = F.pad(x[None], (radius, radius, radius, radius), mode="reflect")
        x = F.conv2d(x, k.view(1, 1, 1, -1).expand(3, 1, 1, -1), groups=3)
        out.append(F.conv2d(x, k.view(1, 1, -1, 1).expand(3, 1, -1, 1), groups=3))
    return torch.cat(out)


def degrade(hr: torch.Tensor, blur: float, gen: torch.Generator) -> torch.Tensor:
    """The low-resolution input of a training pair: ``hr`` blurred by a random Gaussian (std
    uniform in [0, ``blur``] high-resolution px; 0: no blur), then bicubic 1/4. The levels the
    renderer feeds the network are drawn by generators and by the network itself, softer than a
    photo shrunk with a sharp filter; learning from softened inputs teaches it to restore edges
    from them rather than to copy their softness."""
    if blur > 0:
        hr = gaussian_blur(hr, torch.rand(hr.shape[0], generator=gen) * blur)
    return downsample4(hr)


def start_from_prior(net: torch.nn.Module) -> dict | None:
    """Load the prior named by ``net.cfg.prior`` into ``net``; returns its provenance (None: no
    prior). Raises ``PriorUnavailable`` when the package that ships it is missing."""
    if not net.cfg.prior:
        return None
    from ..models import priors

    state, provenance = priors.load_state(net.cfg.prior, net.cfg)
    net.load_state_dict({**state, "noise_amp": net.noise_amp}, strict=True)
    return provenance


def train_sr(
    net: torch.nn.Module,
    photo: torch.Tensor,
    cfg: TrainConfig,
    seed: int,
    holdout: float = 0.0,
    step: Callable[[str, dict], None] = lambda *_: None,
    base_width: int | None = None,
    from_prior: bool | None = None,
) -> dict[str, list[float]]:
    """Train ``net`` in place on crops of ``photo`` (1, 3, H, W) at the scales ``sr_scales`` gives
    for ``base_width`` (None: the photo's own scale only); the right ``holdout`` fraction of
    columns is never seen (kept for evaluation). ``from_prior`` (default: the config names a
    prior) means ``net`` already holds pre-trained weights: fine-tune with ``cfg.sr_lr``.
    Every random draw comes from ``seed``, so the result does not
    depend on the global RNG. Returns loss histories."""
    g = torch.Generator().manual_seed(seed + 1)
    photo = photo[:, :, :, : holdout_columns(photo.shape[3], holdout)]
    widths = sr_scales(photo.shape[3], base_width) if base_width else [photo.shape[3]]
    levels = scale_pyramid(photo, widths, cfg.sr_crop)
    from_prior = bool(net.cfg.prior) if from_prior is None else from_prior
    opt = _optimiser(net, cfg, from_prior)
    amp = float(net.noise_amp)
    hist: dict[str, list[float]] = {"l1": [], "bicubic_l1": []}
    for _ in range(cfg.sr_iterations):
        level = levels[int(torch.randint(0, len(levels), (1,), generator=g))] if len(levels) > 1 else levels[0]
        l1, bic = _sr_step(net, opt, cfg, random_crops(level, cfg.sr_crop, cfg.sr_batch, g), g)
        hist["l1"].append(l1)
        hist["bicubic_l1"].append(bic)
        step("sr", {"l1": l1, "bicubic": bic, "amp": amp})
    return hist


def _optimiser(net: torch.nn.Module, cfg: TrainConfig, from_prior: bool) -> torch.optim.Optimizer:
    """Adam at ``sr_lr`` to fine-tune a prior, at ``lr`` from scratch; from scratch the residual's
    last conv begins at zero, so training starts from the skip (bicubic or nearest) and only adds
    detail instead of first unlearning a random residual."""
    if cfg.sr_iterations and not from_prior:
        with torch.no_grad():
            net.conv_last.weight.zero_()
            net.conv_last.bias.zero_()
    return torch.optim.Adam(net.parameters(), lr=cfg.sr_lr if from_prior else cfg.lr, betas=(0.9, 0.99))


def _sr_step(
    net: torch.nn.Module, opt: torch.optim.Optimizer, cfg: TrainConfig, hr: torch.Tensor, g: torch.Generator
) -> tuple[float, float]:
    """One update on the crops ``hr`` (B, 3, crop, crop): L1 to the crops plus the consistency
    term; returns (L1, plain bicubic's L1 on the same crops)."""
    lr = degrade(hr, cfg.sr_blur, g)  # (B, 3, crop/4, crop/4)
    z = torch.randn(lr.shape, generator=g).to(hr.device)
    out = net(lr, z)
    l1 = F.l1_loss(out, hr)
    # the output shrunk back must be the input: texture may be invented, colours may not drift
    lr_target = lr if cfg.sr_blur <= 0 else downsample4(hr)
    cons = (
        F.l1_loss(downsample4(out), lr_target) + phase_loss(out, hr)
        if cfg.sr_consistency_weight > 0
        else torch.zeros((), device=hr.device)
    )
    opt.zero_grad(set_to_none=True)
    (l1 + cfg.sr_consistency_weight * cons).backward()
    opt.step()
    with torch.no_grad():
        bic = F.l1_loss(upsample4(lr), hr)
    return float(l1.detach()), float(bic)
