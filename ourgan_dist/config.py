"""Frozen, validated configuration: model architecture, training schedule, presets.

Every config is a frozen dataclass that checks its fields on construction, serialises to a
plain dict (stored inside every checkpoint and next to every render) and is rebuilt from one
with unknown keys refused by name.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence, TypeVar

from .errors import ConfigError

T = TypeVar("T")


def _check(cls_name: str, name: str, ok: bool, rule: str, value: Any) -> None:
    if not ok:
        raise ConfigError(f"{cls_name}.{name}={value!r}: {rule}")


# Fields that no longer exist but that saved models still carry; they only acted while training, so
# a model saved with one renders as before, and reading it drops them.
RETIRED = {"TrainConfig": frozenset({"base_crop"})}  # GAN scales trained on crops: no preset used it


def from_dict(cls: type[T], data: Mapping[str, Any]) -> T:
    """Rebuild a config dataclass (recursively) from a dict, refusing unknown keys (a ``RETIRED``
    one is dropped)."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{cls.__name__}: expected a mapping, got {type(data).__name__}")
    data = {k: v for k, v in data.items() if k not in RETIRED.get(cls.__name__, ())}
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{cls.__name__}: unknown keys {unknown}; known keys are {sorted(fields)}")
    kwargs = {}
    for name, value in data.items():
        sub = _NESTED.get((cls.__name__, name))
        if sub is BaseConfig and isinstance(value, Mapping):  # the base generator's kind picks its config class
            sub = BASE_KINDS.get(value.get("kind", "gan"))
            if sub is None:
                raise ConfigError(f"base.kind={value.get('kind')!r}: one of {sorted(BASE_KINDS)}")
        kwargs[name] = from_dict(sub, value) if sub is not None else value
    return cls(**kwargs)


def to_dict(obj: Any) -> dict[str, Any]:
    return dataclasses.asdict(obj)


@dataclass(frozen=True)
class BaseConfig:
    """The paper's base generator (kind "gan"): HP-VAE-GAN style, plus a vertical y channel."""

    kind: str = "gan"  # which base generator: "gan" (this) or "patches" (PatchBaseConfig)
    base_width: int = 256  # width of the finest base scale the photo is trained at
    coarsest_width: int = 32  # width of the coarsest scale; the patch-VAE starts here
    n_scales: int = 10  # scales from coarsest to finest, geometric spacing
    channels: int = 64  # feature channels of every stage
    convs_per_stage: int = 5  # 3x3 convolutions per stage: patch size 2*convs+1
    vae_scales: int = 3  # coarsest scales trained as a patch-VAE (diversity); the rest are GAN
    latent_channels: int = 8  # channels of the VAE latent at the coarsest scale
    vertical_coord: bool = True  # feed a global y channel (-1 top .. +1 bottom) to every conv

    def __post_init__(self) -> None:
        n = type(self).__name__
        _check(n, "kind", self.kind == "gan", "'gan' (PatchBaseConfig is kind 'patches')", self.kind)
        _check(n, "base_width", isinstance(self.base_width, int) and self.base_width >= 8, "an int >= 8", self.base_width)
        _check(
            n,
            "coarsest_width",
            isinstance(self.coarsest_width, int) and 4 <= self.coarsest_width <= self.base_width,
            f"an int in [4, base_width={self.base_width}]",
            self.coarsest_width,
        )
        _check(n, "n_scales", isinstance(self.n_scales, int) and 1 <= self.n_scales <= 20, "an int in [1, 20]", self.n_scales)
        _check(n, "channels", isinstance(self.channels, int) and self.channels >= 1, "an int >= 1", self.channels)
        _check(
            n,
            "convs_per_stage",
            isinstance(self.convs_per_stage, int) and self.convs_per_stage >= 2,
            "an int >= 2",
            self.convs_per_stage,
        )
        _check(
            n,
            "vae_scales",
            isinstance(self.vae_scales, int) and 1 <= self.vae_scales <= self.n_scales,
            f"an int in [1, n_scales={self.n_scales}]",
            self.vae_scales,
        )
        _check(
            n,
            "latent_channels",
            isinstance(self.latent_channels, int) and self.latent_channels >= 1,
            "an int >= 1",
            self.latent_channels,
        )
        _check(n, "vertical_coord", isinstance(self.vertical_coord, bool), "a bool", self.vertical_coord)

    @property
    def min_side(self) -> int:
        """The smallest base side it can draw: the coarsest scale keeps at least 2 pixels a side."""
        return max(4, -(-2 * self.base_width // self.coarsest_width))


@dataclass(frozen=True)
class PatchBaseConfig:
    """The patch base generator (kind "patches", models/patches.py): new scenes from the photo's
    own patches by nearest-neighbour search, coarse to fine; nothing is learned, training keeps
    the photo. Every field is explained where it acts, in models/patches.py."""

    kind: str = "patches"
    base_width: int = 1024  # the photo is kept at most this wide, and at most half its own width
    base_height: int = 0  # the kept photo's height, set by training (0: no photo kept yet)
    vertical_coord: bool = True  # the vertical term of the patch distance (False: vertical_weight acts as 0)
    patch: int = 7  # side of the patches compared and pasted (odd)
    pyramid_ratio: float = 0.75  # each scale's side over the next finer one's
    coarsest: int = 24  # the coarsest scale's shorter side, where the layout is drawn (16 rebuilt the photo's own layout)
    pieces: int = 4  # the photo is cut into pieces to pieces + 2 upright strips (by the seed), shuffled into a new order
    noise: float = 1.0  # noise added at the coarsest scale, in units of the photo's standard deviation
    alpha: float = 0.05  # completeness (GPNN's alpha) relative to the photo's patch variance: smaller, more of the photo's objects
    complete_scales: int = 3  # layout scales, coarsest first, searched at completeness alpha; finer ones at fine_alpha
    fine_alpha: float = 0.5  # completeness on the finer layout scales: weaker, so a patch with no place left is not forced in
    vertical_weight: float = 1.5  # weight of (y_query - y_photo)^2 relative to the photo's patch variance
    layout_pixels: int = 5000  # scales up to this many pixels search every photo patch; finer ones search locally
    iterations: int = 6  # nearest-neighbour passes per layout scale
    refine_iterations: int = 2  # local-search passes per finer scale
    features: int = 16  # patches are compared by their projections on this many principal directions

    def __post_init__(self) -> None:
        n = type(self).__name__
        _check(n, "kind", self.kind == "patches", "'patches'", self.kind)
        for name, low in (
            ("base_width", 8),
            ("base_height", 0),
            ("coarsest", 4),
            ("pieces", 1),
            ("complete_scales", 0),
            ("layout_pixels", 16),
            ("iterations", 1),
            ("refine_iterations", 1),
            ("features", 1),
        ):
            v = getattr(self, name)
            _check(n, name, isinstance(v, int) and not isinstance(v, bool) and v >= low, f"an int >= {low}", v)
        _check(n, "patch", isinstance(self.patch, int) and self.patch >= 3 and self.patch % 2 == 1, "an odd int >= 3", self.patch)
        _check(n, "features", self.features <= 3 * self.patch**2, f"at most 3 * patch**2 = {3 * self.patch**2}", self.features)
        _check(n, "coarsest", self.coarsest >= self.patch, f"at least patch={self.patch}", self.coarsest)
        _check(
            n,
            "pyramid_ratio",
            isinstance(self.pyramid_ratio, (int, float)) and 0.3 <= self.pyramid_ratio <= 0.9,
            "a number in [0.3, 0.9]",
            self.pyramid_ratio,
        )
        for name in ("noise", "alpha", "fine_alpha", "vertical_weight"):
            v = getattr(self, name)
            _check(n, name, isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0, "a number >= 0", v)
        _check(n, "vertical_coord", isinstance(self.vertical_coord, bool), "a bool", self.vertical_coord)

    @property
    def min_side(self) -> int:
        """The smallest base side it can draw: one patch."""
        return self.patch


BASE_KINDS = {"gan": BaseConfig, "patches": PatchBaseConfig}


SR_ARCHS = ("rrdb", "srvgg")
SR_SKIPS = ("none", "nearest", "bicubic")


@dataclass(frozen=True)
class SRConfig:
    """The x4 super-resolution network, applied level after level.

    ``arch="rrdb"`` is ESRGAN's RRDBNet (the paper's choice); ``arch="srvgg"`` is a compact plain
    conv net (convs + PReLU, pixel-shuffle tail) that is ~25x cheaper per pixel. ``prior`` names
    pre-trained weights (see ``models/priors.py``) that training fine-tunes on the photo; "" trains
    from scratch. The layers these fields make, and the receptive radius and activation counts that
    follow, are described by ``models/sr_architecture.py``."""

    arch: str = "rrdb"  # "rrdb" (ESRGAN RRDBNet) or "srvgg" (compact conv + PReLU + pixel shuffle)
    features: int = 64  # trunk channels (ESRGAN: nf)
    growth: int = 32  # rrdb: channels added by each dense conv (ESRGAN: gc)
    blocks: int = 23  # rrdb: RRDB blocks; the receptive field grows with blocks * rdbs * dense
    rdbs_per_block: int = 3  # rrdb: residual dense blocks per RRDB (ESRGAN: 3)
    dense_convs: int = 5  # rrdb: 3x3 convs per residual dense block, fusion conv included (ESRGAN: 5)
    convs: int = 16  # srvgg: 3x3 body convs between the first and the last conv
    skip: str = "none"  # added to the output: "none", x4 "nearest" or x4 "bicubic" of the input
    prior: str = "realesrgan-x4plus"  # pre-trained weights fine-tuned on the photo; "" = from scratch
    noise_amp: float = 0.02  # std of the input noise: SR(x + amp * z), in [-1, 1] pixel units
    detail: float = 1.0  # weight of the photo's own detail patches added to every SR level (models/detail.py); 0: off
    detail_patches: int = 4096  # key/patch pairs per library scale, cut from the photo at training
    detail_choices: int = 16  # each block picks one of this many nearest keys (by its noise): fewer repeats

    def __post_init__(self) -> None:
        n = type(self).__name__
        _check(n, "arch", self.arch in SR_ARCHS, f"one of {SR_ARCHS}", self.arch)
        for name in ("features", "growth", "blocks", "rdbs_per_block", "convs"):
            v = getattr(self, name)
            _check(n, name, isinstance(v, int) and v >= 1, "an int >= 1", v)
        _check(n, "dense_convs", isinstance(self.dense_convs, int) and self.dense_convs >= 2, "an int >= 2", self.dense_convs)
        _check(n, "skip", self.skip in SR_SKIPS, f"one of {SR_SKIPS}", self.skip)
        _check(n, "prior", isinstance(self.prior, str), 'a prior name or ""', self.prior)
        _check(
            n,
            "noise_amp",
            isinstance(self.noise_amp, (int, float)) and 0 <= self.noise_amp <= 1,
            "a number in [0, 1]",
            self.noise_amp,
        )
        _check(n, "detail", isinstance(self.detail, (int, float)) and 0 <= self.detail <= 4, "a number in [0, 4]", self.detail)
        _check(
            n,
            "detail_patches",
            isinstance(self.detail_patches, int) and 16 <= self.detail_patches <= 65536,
            "an int in [16, 65536]",
            self.detail_patches,
        )
        _check(
            n,
            "detail_choices",
            isinstance(self.detail_choices, int) and 1 <= self.detail_choices <= 64,
            "an int in [1, 64]",
            self.detail_choices,
        )


@dataclass(frozen=True)
class TrainConfig:
    """The one-shot training schedule."""

    base_iterations: int = 2000  # optimiser steps per base scale
    sr_iterations: int = 20000  # optimiser steps of the SR network
    lr: float = 5e-4  # Adam learning rate of the base generator (and of an SR network learnt from scratch)
    sr_lr: float = 1e-4  # Adam learning rate when fine-tuning a pre-trained SR prior (small: keep the prior)
    recon_weight: float = 10.0  # reconstruction loss weight (HP-VAE-GAN: 10)
    kl_weight: float = 1.0  # KL weight of the patch-VAE scales
    gp_weight: float = 0.1  # WGAN-GP gradient penalty weight
    noise_amp_scale: float = 0.1  # per-scale noise amplitude = scale * RMSE(reconstruction)
    sr_crop: int = 128  # high-resolution crop side for SR training
    sr_batch: int = 4  # crops per SR step
    sr_blur: float = 0.0  # SR inputs: high-res crops blurred by a Gaussian of random std in [0, this] px, then 1/4
    sr_consistency_weight: float = 1.0  # output shrunk x4 vs input (colours stay put) + per-position means (no grid)
    critic_channels: int = 32  # channels of the patch critics

    def __post_init__(self) -> None:
        n = type(self).__name__
        for name in ("base_iterations", "sr_iterations"):
            v = getattr(self, name)
            _check(n, name, isinstance(v, int) and v >= 0, "an int >= 0", v)
        for name in ("sr_crop", "sr_batch", "critic_channels"):
            v = getattr(self, name)
            _check(n, name, isinstance(v, int) and v >= 1, "an int >= 1", v)
        _check(n, "sr_crop", self.sr_crop % 4 == 0 and self.sr_crop >= 16, "a multiple of 4, >= 16", self.sr_crop)
        for name in (
            "lr",
            "sr_lr",
            "recon_weight",
            "kl_weight",
            "gp_weight",
            "noise_amp_scale",
            "sr_consistency_weight",
            "sr_blur",
        ):
            v = getattr(self, name)
            _check(n, name, isinstance(v, (int, float)) and v >= 0, "a number >= 0", v)


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a model: stored inside every checkpoint."""

    preset: str = "paper"
    base: BaseConfig | PatchBaseConfig = field(default_factory=BaseConfig)
    sr: SRConfig = field(default_factory=SRConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        _check("ModelConfig", "preset", isinstance(self.preset, str) and bool(self.preset), "a non-empty string", self.preset)
        for name, cls in (("base", (BaseConfig, PatchBaseConfig)), ("sr", SRConfig), ("train", TrainConfig)):
            _check("ModelConfig", name, isinstance(getattr(self, name), cls), "a config of its section", getattr(self, name))


_NESTED = {
    ("ModelConfig", "base"): BaseConfig,
    ("ModelConfig", "sr"): SRConfig,
    ("ModelConfig", "train"): TrainConfig,
}

PRESETS: dict[str, ModelConfig] = {
    # Tests: trains and renders in seconds on one CPU core.
    "tiny": ModelConfig(
        preset="tiny",
        base=PatchBaseConfig(base_width=48, patch=5, coarsest=8, layout_pixels=400, iterations=3, features=8),
        sr=SRConfig(arch="srvgg", features=8, convs=3, skip="nearest", prior="", noise_amp=0.02, detail_patches=256),
        train=TrainConfig(base_iterations=40, sr_iterations=60, lr=2e-3, sr_crop=32, sr_batch=2, critic_channels=8),
    ),
    # A laptop: new scenes from the photo's patches (no base training; the photo is kept up to
    # 1024 px wide, so a 2560x1600 render starts from a 640x400 base), and the compact Real-ESRGAN
    # prior fine-tuned as the SR network.
    "cpu": ModelConfig(
        preset="cpu",
        base=PatchBaseConfig(),
        sr=SRConfig(arch="srvgg", features=64, convs=16, skip="bicubic", prior="realesr-animevideov3-x4", noise_amp=0.02),
        train=TrainConfig(sr_iterations=800, lr=1e-3, sr_crop=96, sr_batch=4, sr_blur=1.5),  # lr: an SR net with no prior
    ),
    # GPU scale: HP-VAE-GAN sizes for the base, an ESRGAN-like SR with a bounded receptive field.
    "paper": ModelConfig(preset="paper"),
}


_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


def _parse_setting(cls_name: str, name: str, current: Any, text: str) -> Any:
    """``text`` read as the type of the field's current value (bool, int, float or str)."""
    try:
        if isinstance(current, bool):
            if text.lower() not in _TRUE + _FALSE:
                raise ValueError(text)
            return text.lower() in _TRUE
        if isinstance(current, int):
            return int(text)
        if isinstance(current, float):
            return float(text)
    except ValueError:
        kind = {"bool": "true or false", "int": "an int", "float": "a number"}[type(current).__name__]
        raise ConfigError(f"{cls_name}.{name}={text!r}: expected {kind} (the preset has {current!r})") from None
    return text


def apply_settings(cfg: ModelConfig, settings: Sequence[str]) -> ModelConfig:
    """``cfg`` with ``SECTION.FIELD=VALUE`` settings applied (sections: base, sr, train), each
    value read as the field's type and validated like any config, e.g. ``base.noise=3``."""
    sections = {"base": cfg.base, "sr": cfg.sr, "train": cfg.train}
    for setting in settings:
        key, sep, text = setting.partition("=")
        section, dot, name = key.strip().partition(".")
        if not sep or not dot or section not in sections:
            raise ConfigError(
                f"setting {setting!r}: expected SECTION.FIELD=VALUE with SECTION one of {sorted(sections)}, e.g. base.noise=3"
            )
        sub = sections[section]
        fields = {f.name for f in dataclasses.fields(sub)}
        if name not in fields:
            raise ConfigError(f"setting {setting!r}: {type(sub).__name__} has no field {name!r}; known fields are {sorted(fields)}")
        value = _parse_setting(type(sub).__name__, name, getattr(sub, name), text.strip())
        sections[section] = dataclasses.replace(sub, **{name: value})
    return dataclasses.replace(cfg, **sections)


def preset(name: str) -> ModelConfig:
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}") from None
