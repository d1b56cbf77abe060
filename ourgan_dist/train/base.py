"""Training the coherent base generator on the photo's scale pyramid (HP-VAE-GAN style).

The first ``vae_scales`` scales are a patch-VAE: scale 0 decodes the latent, the next ones refine
it; each is trained with reconstruction + KL, the encoder learning at every VAE scale (as in
HP-VAE-GAN, so the latent keeps the diversity the finer VAE scales need). The remaining scales are
patch-GAN stages (WGAN-GP critic + reconstruction), each started from the previous stage's
weights. Each GAN scale's noise amplitude is set from the reconstruction error of the scales below
it, as in SinGAN / HP-VAE-GAN. Scales are trained one after another with the earlier ones frozen.
A GAN scale larger than ``base_crop`` trains on random crops of itself that
keep their rows of the whole image's y channel: the critic only ever sees patches, so the cost
per step is bounded.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..config import TrainConfig
from ..images import pyramid
from ..models.base import BaseGenerator, resize_bilinear, y_channel
from ..models.layers import leaky


SAMPLE_POOL = 16  # whole samples of the scales below that a scale trained on crops draws its inputs from


class PatchCritic(nn.Module):
    """A fully convolutional critic: one score per patch (receptive field 2 * convs + 1)."""

    def __init__(self, channels: int, convs: int):
        super().__init__()
        widths = [3] + [channels] * (convs - 1)
        self.body = nn.ModuleList(nn.Conv2d(a, b, 3, padding=1) for a, b in zip(widths[:-1], widths[1:]))
        self.head = nn.Conv2d(channels, 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, 3, H, W) -> (B, 1, H, W)
        for conv in self.body:
            x = leaky(conv(x))
        return self.head(x)


def gradient_penalty(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """WGAN-GP: (||grad D(interp)|| - 1)^2 on random interpolates of real and fake."""
    alpha = torch.rand(real.shape[0], 1, 1, 1, generator=gen).to(real.device)
    mix = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(mix).sum(), mix, create_graph=True)
    return ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()


def _critic(cfg: TrainConfig, gen: BaseGenerator, seed: int, s: int, device) -> tuple[PatchCritic, torch.optim.Optimizer]:
    """Scale ``s``'s critic and its optimiser; its weights come from the seed, not the global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed * 7919 + 101 * s + 3)
        critic = PatchCritic(cfg.critic_channels, gen.cfg.convs_per_stage).to(device)
    return critic, torch.optim.Adam(critic.parameters(), lr=cfg.lr, betas=(0.5, 0.999))


def _critic_step(
    critic: PatchCritic, opt: torch.optim.Optimizer, cfg: TrainConfig, real: torch.Tensor, fake: torch.Tensor, g: torch.Generator
) -> float:
    """One WGAN-GP critic update on (real, fake) patches; returns its loss."""
    d_loss = critic(fake).mean() - critic(real).mean()
    gp = gradient_penalty(critic, real, fake, g)
    opt.zero_grad(set_to_none=True)
    (d_loss + cfg.gp_weight * gp).backward()
    opt.step()
    return float(d_loss.detach())


def train_base(
    gen: BaseGenerator, photo: torch.Tensor, cfg: TrainConfig, seed: int, step: Callable[[str, dict], None] = lambda *_: None
) -> dict[str, list[float]]:
    """Train ``gen`` in place on ``photo`` (1, 3, h, w) at its base size; returns loss histories."""
    device = photo.device
    g = torch.Generator().manual_seed(seed)
    sizes = gen.scale_sizes(photo.shape[2], photo.shape[3])
    reals = pyramid(photo, sizes)
    n_vae = gen.cfg.vae_scales
    hist: dict[str, list[float]] = {}

    def randn(*shape):
        return torch.randn(*shape, generator=g).to(device)

    # ---- scale 0 .. n_vae-1: the patch-VAE, encoder trained with every scale --------------
    for s in range(n_vae):
        stage_params = list(gen.decoder.parameters()) if s == 0 else list(gen.stages[s - 1].parameters())
        if s >= 2:
            gen.stages[s - 1].load_state_dict(gen.stages[s - 2].state_dict())
        frozen = [p for k in range(1, s) for p in gen.stages[k - 1].parameters()] + (
            list(gen.decoder.parameters()) if s > 0 else []
        )
        for p in frozen:  # gradients flow through the frozen scales to the encoder, not into them
            p.requires_grad_(False)
        opt = torch.optim.Adam(list(gen.encoder.parameters()) + stage_params, lr=cfg.lr, betas=(0.5, 0.999))

        def through(z: torch.Tensor) -> torch.Tensor:  # latent -> scale s (VAE scales carry no noise)
            x = gen.decode(z, sizes[0])
            for k in range(1, s + 1):
                x = gen.refine(k, x, sizes[k], None)
            return x

        for _ in range(cfg.base_iterations):
            mu, logvar = gen.encode(reals[0])
            x = through(mu + torch.exp(0.5 * logvar) * randn(*mu.shape))
            rec = F.mse_loss(x, reals[s])
            kl = -0.5 * torch.mean(1 + logvar - mu.pow(2) - logvar.exp())
            loss = cfg.recon_weight * rec + cfg.kl_weight * kl
            losses = {"rec": float(rec.detach()), "kl": float(kl.detach())}
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            hist.setdefault(f"s{s}_rec", []).append(losses["rec"])
            step(f"base s{s}", losses)
        for p in frozen:
            p.requires_grad_(True)

    # ---- GAN scales: refine a random sample of the scales below, with noise -------------------
    with torch.no_grad():  # the encoder is final: the photo's latent map, for its reconstruction path
        photo_latent = gen.encode(reals[0])[0]

    for s in range(n_vae, len(sizes)):
        stage = gen.stages[s - 1]
        if s >= 2:
            stage.load_state_dict(gen.stages[s - 2].state_dict())
        with torch.no_grad():  # reconstruction path: posterior mean through the frozen scales
            rec_up = resize_bilinear(gen.reconstruct(sizes, s - 1, photo_latent), sizes[s])
            gen.noise_amps[s] = cfg.noise_amp_scale * torch.sqrt(F.mse_loss(rec_up, reals[s])).clamp(min=1e-3)
        opt_g = torch.optim.Adam(stage.parameters(), lr=cfg.lr, betas=(0.5, 0.999))
        critic, opt_d = _critic(cfg, gen, seed, s, device)
        h, w = sizes[s]
        ch, cw = (min(h, cfg.base_crop), min(w, cfg.base_crop)) if cfg.base_crop else (h, w)
        y_full = y_channel(h, device)

        def crop_origin() -> tuple[int, int]:  # top-left of a random (ch, cw) crop; (0, 0) when whole
            if (ch, cw) == (h, w):
                return 0, 0
            return (int(torch.randint(0, h - ch + 1, (1,), generator=g)), int(torch.randint(0, w - cw + 1, (1,), generator=g)))

        def sample_below() -> torch.Tensor:  # a random sample of the frozen scales below, at scale s
            with torch.no_grad():  # as rendering draws a new image: a latent from the prior
                x = gen.decode(randn(1, gen.cfg.latent_channels, *sizes[0]), sizes[0])
                for k in range(1, s):
                    x = gen.refine(k, x, sizes[k], randn(1, 3, *sizes[k]) if k >= n_vae else None)
                return resize_bilinear(x, sizes[s])

        # A scale trained on crops draws its inputs from a pool of whole samples made once: making a
        # whole sample of every scale below for each step would cost more than the step itself on
        # a large base, and the crops' positions and the scale's own noise still vary every step.
        pool = [sample_below() for _ in range(SAMPLE_POOL)] if (ch, cw) != (h, w) else None
        for _ in range(cfg.base_iterations):
            up = sample_below() if pool is None else pool[int(torch.randint(0, len(pool), (1,), generator=g))]
            cy, cx = crop_origin()
            ys, xs = slice(cy, cy + ch), slice(cx, cx + cw)
            fake = gen.refine_upsampled(s, up[:, :, ys, xs], randn(1, 3, ch, cw), y_full[:, :, ys])
            ry, rx = crop_origin()
            real = reals[s][:, :, ry : ry + ch, rx : rx + cw]
            d_loss = _critic_step(critic, opt_d, cfg, real, fake.detach(), g)
            # generator step: fool the critic, and reconstruct the photo from the reconstruction path
            adv = -critic(fake).mean()
            rec_out = gen.refine_upsampled(s, rec_up[:, :, ys, xs], torch.zeros(1, 3, ch, cw, device=device), y_full[:, :, ys])
            rec = F.mse_loss(rec_out, reals[s][:, :, ys, xs])
            opt_g.zero_grad(set_to_none=True)
            (adv + cfg.recon_weight * rec).backward()
            opt_g.step()
            hist.setdefault(f"s{s}_rec", []).append(float(rec.detach()))
            hist.setdefault(f"s{s}_d", []).append(d_loss)
            step(f"base s{s}", {"rec": float(rec.detach()), "d": d_loss})
    return hist
