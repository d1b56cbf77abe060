"""Training the x4 super-resolution network on random crops of the full-resolution photo.

Each step takes ``sr_batch`` random crops of ``sr_crop`` pixels, makes their low-resolution input
by bicubic 1/4 downsampling (antialiased), adds input noise (SR(x + amp * z)) and minimises L1 to
the crop plus a small patch-GAN (hinge) loss. Single-image only: no pretrained weights exist here.

A strip at the photo's right edge (``HOLDOUT`` of its width, full height so that it spans sky to
ground) is never trained on: ``evaluate`` measures the network's PSNR there.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from .. import images
from ..config import TrainConfig
from ..errors import UserError
from ..models.sr import SRNet
from .base import PatchCritic

HOLDOUT = 0.1  # fraction of the photo's width (right edge) kept out of SR training
CRITIC_CONVS = 4  # the SR critic judges 9 x 9 high-resolution patches
MAX_SIDE = 8192  # the SR network learns from the photo at up to this many pixels a side
MIN_SIDE = images.MIN_SIDE  # below this there is nothing to learn x4 super-resolution from


def load_sr_photo(image: str) -> torch.Tensor:
    """The photo at full resolution (shrunk to ``MAX_SIDE`` on load if larger): (1, 3, H, W)."""
    photo = torch.from_numpy(images.load_rgb(image, max_width=MAX_SIDE, max_height=MAX_SIDE)).unsqueeze(0)
    if min(photo.shape[2:]) < MIN_SIDE:
        raise UserError(f"photo {image!r}: {photo.shape[3]}x{photo.shape[2]} is too small to learn x4 "
                        f"super-resolution from; use a photo at least {MIN_SIDE} px on each side")
    return photo


def downsample4(hr: torch.Tensor) -> torch.Tensor:
    """Bicubic 1/4 (antialiased), the degradation the network learns to invert."""
    return F.interpolate(hr, scale_factor=0.25, mode="bicubic", align_corners=False, antialias=True).clamp(-1, 1)


def upsample4(lr: torch.Tensor) -> torch.Tensor:
    """Plain bicubic x4: the baseline the network has to beat."""
    return F.interpolate(lr, scale_factor=4, mode="bicubic", align_corners=False).clamp(-1, 1)


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
    return torch.cat([photo[:, :, y:y + size, x:x + size] for y, x in zip(ys, xs)])


def train_sr(net: SRNet, photo: torch.Tensor, cfg: TrainConfig, seed: int, holdout: float = 0.0,
             step: Callable[[str, dict], None] = lambda *_: None) -> dict[str, list[float]]:
    """Train ``net`` in place on crops of ``photo`` (1, 3, H, W); the right ``holdout`` fraction of
    columns is never seen (kept for evaluation). Every random draw (critic weights included) comes
    from ``seed``, so the result does not depend on the global RNG. Returns loss histories."""
    g = torch.Generator().manual_seed(seed + 1)
    device = photo.device
    photo = photo[:, :, :, : holdout_columns(photo.shape[3], holdout)]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 2)
        critic = PatchCritic(cfg.critic_channels, CRITIC_CONVS).to(device)
    if cfg.sr_iterations:
        # start from the bicubic skip alone: the residual's last conv begins at zero, so training
        # only adds detail to bicubic instead of first unlearning a random residual
        with torch.no_grad():
            net.conv_last.weight.zero_()
            net.conv_last.bias.zero_()
    opt_g = torch.optim.Adam(net.parameters(), lr=cfg.lr, betas=(0.9, 0.99))
    opt_d = torch.optim.Adam(critic.parameters(), lr=cfg.lr, betas=(0.9, 0.99))
    amp = float(net.noise_amp)
    hist: dict[str, list[float]] = {"l1": [], "bicubic_l1": []}
    for _ in range(cfg.sr_iterations):
        hr = random_crops(photo, cfg.sr_crop, cfg.sr_batch, g)  # (B, 3, crop, crop)
        lr = downsample4(hr)  # (B, 3, crop/4, crop/4)
        z = torch.randn(lr.shape, generator=g).to(device)
        out = net(lr, z)
        if cfg.sr_adv_weight > 0:
            d_loss = F.relu(1 - critic(hr)).mean() + F.relu(1 + critic(out.detach())).mean()
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
            adv = -critic(out).mean()
        else:
            adv = torch.zeros((), device=device)
        l1 = F.l1_loss(out, hr)
        opt_g.zero_grad(set_to_none=True)
        (l1 + cfg.sr_adv_weight * adv).backward()
        opt_g.step()
        with torch.no_grad():
            bic = F.l1_loss(upsample4(lr), hr)
        hist["l1"].append(float(l1.detach()))
        hist["bicubic_l1"].append(float(bic))
        step("sr", {"l1": float(l1.detach()), "bicubic": float(bic), "amp": amp})
    return hist
