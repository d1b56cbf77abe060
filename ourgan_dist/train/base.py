"""Training the coherent base generator on the photo's scale pyramid (HP-VAE-GAN style).

The first ``vae_scales`` scales are a patch-VAE: scale 0 decodes the latent, the next ones refine
it; each is trained with reconstruction + KL, the encoder learning at every VAE scale (as in
HP-VAE-GAN, so the latent keeps the diversity the finer VAE scales need). The remaining scales are
patch-GAN stages (WGAN-GP critic + reconstruction), each started from the previous stage's
weights. Each GAN scale's noise amplitude is set from the reconstruction error of the scales below
it, as in SinGAN / HP-VAE-GAN. Scales are trained one after another with the earlier ones frozen,
each on the whole image of its scale.
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
    """Train ``gen`` in place on ``photo`` (1, 3, h, w) at its base size; returns loss histories.
    ``step(stage, losses)`` is called after every step, ``stage`` naming the scale as
    ``progress.base_stages`` does ("base scale 2/8")."""
    run = _BaseRun(gen, photo, cfg, seed, step)
    for s in range(gen.cfg.vae_scales):
        run.train_vae_scale(s)
    with torch.no_grad():  # the encoder is final: the photo's latent map, for its reconstruction path
        photo_latent = gen.encode(run.reals[0])[0]
    for s in range(gen.cfg.vae_scales, len(run.sizes)):
        run.train_gan_scale(s, photo_latent)
    return run.hist


class _BaseRun:
    """One training of the base generator: the photo's pyramid, the one random generator every
    draw comes from (in a fixed order: the weights are a function of the seed), the loss
    histories, and a method per kind of scale."""

    def __init__(self, gen: BaseGenerator, photo: torch.Tensor, cfg: TrainConfig, seed: int, step: Callable[[str, dict], None]):
        self.gen, self.cfg, self.seed, self.step = gen, cfg, seed, step
        self.device = photo.device
        self.g = torch.Generator().manual_seed(seed)
        self.sizes = gen.scale_sizes(photo.shape[2], photo.shape[3])
        self.reals = pyramid(photo, self.sizes)  # the photo at every scale, coarsest first
        self.hist: dict[str, list[float]] = {}

    def stage_name(self, s: int) -> str:
        return f"base scale {s + 1}/{len(self.sizes)}"

    def randn(self, *shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=self.g).to(self.device)

    def record(self, s: int, losses: dict[str, float]) -> None:
        for name, value in losses.items():
            if name != "kl":
                self.hist.setdefault(f"s{s}_{name}", []).append(value)
        self.step(self.stage_name(s), losses)

    # ---- scales 0 .. vae_scales-1: the patch-VAE, its encoder trained with every scale ---------

    def train_vae_scale(self, s: int) -> None:
        """Scale ``s`` of the patch-VAE: reconstruction + KL through the scales below (frozen), the
        encoder learning too. Scale ``s`` >= 2 starts from scale ``s - 1``'s weights."""
        gen, cfg = self.gen, self.cfg
        stage_params = list(gen.decoder.parameters()) if s == 0 else list(gen.stages[s - 1].parameters())
        if s >= 2:
            gen.stages[s - 1].load_state_dict(gen.stages[s - 2].state_dict())
        frozen = [p for k in range(1, s) for p in gen.stages[k - 1].parameters()] + (
            list(gen.decoder.parameters()) if s > 0 else []
        )
        for p in frozen:  # gradients flow through the frozen scales to the encoder, not into them
            p.requires_grad_(False)
        opt = torch.optim.Adam(list(gen.encoder.parameters()) + stage_params, lr=cfg.lr, betas=(0.5, 0.999))
        for _ in range(cfg.base_iterations):
            mu, logvar = gen.encode(self.reals[0])
            x = self.decode_to(s, mu + torch.exp(0.5 * logvar) * self.randn(*mu.shape))
            rec = F.mse_loss(x, self.reals[s])
            kl = -0.5 * torch.mean(1 + logvar - mu.pow(2) - logvar.exp())
            loss = cfg.recon_weight * rec + cfg.kl_weight * kl
            losses = {"rec": float(rec.detach()), "kl": float(kl.detach())}
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            self.record(s, losses)
        for p in frozen:
            p.requires_grad_(True)

    def decode_to(self, s: int, z: torch.Tensor) -> torch.Tensor:
        """Latent -> scale ``s`` through the VAE scales (which carry no noise)."""
        x = self.gen.decode(z, self.sizes[0])
        for k in range(1, s + 1):
            x = self.gen.refine(k, x, self.sizes[k], None)
        return x

    # ---- GAN scales: refine a random sample of the scales below, with noise -------------------

    def train_gan_scale(self, s: int, photo_latent: torch.Tensor) -> None:
        """Scale ``s`` as a patch-GAN stage (WGAN-GP critic + reconstruction), started from scale
        ``s - 1``'s weights; its noise amplitude is set from the reconstruction error of the
        scales below."""
        gen, cfg, sizes, device = self.gen, self.cfg, self.sizes, self.device
        stage = gen.stages[s - 1]
        if s >= 2:
            stage.load_state_dict(gen.stages[s - 2].state_dict())
        with torch.no_grad():  # reconstruction path: posterior mean through the frozen scales
            rec_up = resize_bilinear(gen.reconstruct(sizes, s - 1, photo_latent), sizes[s])
            gen.noise_amps[s] = cfg.noise_amp_scale * torch.sqrt(F.mse_loss(rec_up, self.reals[s])).clamp(min=1e-3)
        opt_g = torch.optim.Adam(stage.parameters(), lr=cfg.lr, betas=(0.5, 0.999))
        critic, opt_d = _critic(cfg, gen, self.seed, s, device)
        h, w = sizes[s]
        y = y_channel(h, device)
        real = self.reals[s]
        for _ in range(cfg.base_iterations):
            fake = gen.refine_upsampled(s, self.sample_below(s), self.randn(1, 3, h, w), y)
            d_loss = _critic_step(critic, opt_d, cfg, real, fake.detach(), self.g)
            # generator step: fool the critic, and reconstruct the photo from the reconstruction path
            adv = -critic(fake).mean()
            rec_out = gen.refine_upsampled(s, rec_up, torch.zeros(1, 3, h, w, device=device), y)
            rec = F.mse_loss(rec_out, real)
            opt_g.zero_grad(set_to_none=True)
            (adv + cfg.recon_weight * rec).backward()
            opt_g.step()
            self.record(s, {"rec": float(rec.detach()), "d": d_loss})

    def sample_below(self, s: int) -> torch.Tensor:
        """A random sample of the frozen scales below ``s``, upsampled to scale ``s``: as rendering
        draws a new image, a latent from the prior through every scale, with noise on the GAN ones."""
        gen, sizes = self.gen, self.sizes
        with torch.no_grad():
            x = gen.decode(self.randn(1, gen.cfg.latent_channels, *sizes[0]), sizes[0])
            for k in range(1, s):
                x = gen.refine(k, x, sizes[k], self.randn(1, 3, *sizes[k]) if k >= gen.cfg.vae_scales else None)
            return resize_bilinear(x, sizes[s])
