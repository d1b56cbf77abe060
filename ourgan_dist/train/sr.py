"""Training the x4 super-resolution network on random crops of the full-resolution photo.

Each step takes ``sr_batch`` random crops of ``sr_crop`` pixels, makes their low-resolution input
by bicubic 1/4 downsampling (antialiased), adds input noise (SR(x + amp * z)) and minimises L1 to
the crop plus a small patch-GAN (hinge) loss. Single-image only: no pretrained weights exist here.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from ..config import TrainConfig
from ..models.sr import SRNet
from .base import PatchCritic


def downsample4(hr: torch.Tensor) -> torch.Tensor:
    """Bicubic 1/4 (antialiased), the degradation the network learns to invert."""
    return F.interpolate(hr, scale_factor=0.25, mode="bicubic", align_corners=False, antialias=True).clamp(-1, 1)


def random_crops(photo: torch.Tensor, size: int, n: int, gen: torch.Generator) -> torch.Tensor:
    """(n, 3, size, size) crops at random positions of a (1, 3, H, W) photo."""
    _, _, h, w = photo.shape
    size = min(size, (min(h, w) // 4) * 4)
    ys = torch.randint(0, h - size + 1, (n,), generator=gen).tolist()
    xs = torch.randint(0, w - size + 1, (n,), generator=gen).tolist()
    return torch.cat([photo[:, :, y:y + size, x:x + size] for y, x in zip(ys, xs)])


def train_sr(net: SRNet, photo: torch.Tensor, cfg: TrainConfig, seed: int, holdout: float = 0.0,
             step: Callable[[str, dict], None] = lambda *_: None) -> dict[str, list[float]]:
    """Train ``net`` in place on crops of ``photo`` (1, 3, H, W); the bottom ``holdout`` fraction
    of rows is never seen (kept for evaluation). Returns loss histories."""
    g = torch.Generator().manual_seed(seed + 1)
    device = photo.device
    if holdout:
        photo = photo[:, :, : int(photo.shape[2] * (1 - holdout))]
    critic = PatchCritic(cfg.critic_channels, 4).to(device)
    opt_g = torch.optim.Adam(net.parameters(), lr=cfg.lr, betas=(0.9, 0.99))
    opt_d = torch.optim.Adam(critic.parameters(), lr=cfg.lr, betas=(0.9, 0.99))
    amp = float(net.noise_amp)
    hist: dict[str, list[float]] = {"l1": [], "bicubic_l1": []}
    for _ in range(cfg.sr_iterations):
        hr = random_crops(photo, cfg.sr_crop, cfg.sr_batch, g)
        lr = downsample4(hr)
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
            bic = F.l1_loss(F.interpolate(lr, scale_factor=4, mode="bicubic", align_corners=False).clamp(-1, 1), hr)
        hist["l1"].append(float(l1.detach()))
        hist["bicubic_l1"].append(float(bic))
        step("sr", {"l1": float(l1.detach()), "bicubic": float(bic), "amp": amp})
    return hist
