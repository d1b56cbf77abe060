"""The x4 super-resolution networks' architecture, described once and without torch.

``sr_architecture(cfg)`` lists the convolutions of the network ``cfg`` asks for, in the order
they run: each with its name in the network's state dict, its channels, the resolution it runs
at and the region a tile computes it on (the tile's source core expanded by ``reach`` source
pixels). From that list come the receptive radius, the weight and arithmetic counts, and the
floats the network holds per pixel at its peak. The torch networks build their layers from it
and crop by it (models/sr.py, models/srvgg.py, with the windowed forward in models/window.py);
planning (planning/plan.py, planning/projection.py) and the priors' converter (models/priors.py)
read it. It imports only the config, so the planning wing stays free of torch.

rrdb (ESRGAN's RRDBNet)::

    conv_first                      3 -> nf              reach R = 1 + B*D + TAIL_REACH + 1
    rdbs.j.convs.i, rdbs.j.fuse     dense convs of RDB j  reach R - 1 - j*D (none cropped inside an RDB)
    conv_body                       nf -> nf             reach TAIL_REACH + 1
    up1 (2x), up2, conv_hr, conv_last (4x, nf -> 3)      reach TAIL_REACH, after nearest upsampling

with B RDBs of D convs each. srvgg (Real-ESRGAN's SRVGGNetCompact)::

    convs.0 (3 -> nf), convs.1..n (nf -> nf), each + acts.i (PReLU)   reach n + 2 - i
    conv_last                       nf -> 3 * 4 * 4 (pixel shuffle x4)  reach 1
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, lru_cache

from ..config import SRConfig

SCALE = 4  # every network here is x4: one level is exactly 4x the one below it
TAIL_REACH = 2  # rrdb: its tail (a conv at 2x, three at 4x, after nearest upsampling) reads 2 source pixels either side
# source pixels beyond a core the detail stage reads: the library's keys 3 (models/detail.py);
# guided detail's keys 2, plus the blocks a repeated place is carried on over (models/guided_detail.py)
DETAIL_REACH = 8
SKIP_REACH = {"none": 0, "nearest": 0, "bicubic": 2}  # source pixels the x4 skip reads either side of a kept one


@dataclass(frozen=True)
class Conv:
    """One convolution (weights and bias) of an SR network."""

    name: str  # its module's path in the network's state dict
    cin: int
    cout: int
    reach: int  # a tile computes it on its source core expanded by this many source pixels
    scale: int = 1  # the resolution it runs at, over the source level's: 1, or 2 and 4 in the rrdb tail
    kernel: int = 3
    act: str = ""  # the PReLU after it (its module's path), or "" (rrdb's leaky ReLU has no weights)

    @property
    def weights(self) -> int:
        return self.kernel**2 * self.cin * self.cout

    @property
    def macs(self) -> int:
        """Multiply-accumulates per pixel it computes: one per weight."""
        return self.weights


@dataclass(frozen=True)
class SRArchitecture:
    """The layers of one SR network and what follows from them."""

    arch: str
    convs: tuple[Conv, ...]  # in the order they run
    skip_reach: int  # source pixels the x4 skip reads either side (SKIP_REACH)
    detail_reach: int  # source pixels past a core the detail stage reads (0: no detail stage)
    activation_floats: tuple[int, int]  # (per input pixel, per output pixel) held at the forward's peak (see _rrdb, _srvgg)

    @property
    def network_radius(self) -> int:
        """The network's exact receptive radius in source pixels: the first conv is computed on the
        whole window (the windowed forward crops by it)."""
        return max(self.convs[0].reach, self.skip_reach)

    @property
    def receptive_radius(self) -> int:
        """What an SR level reads around a core: the network's radius, or the detail stage's reach."""
        return max(self.network_radius, self.detail_reach)

    @cached_property
    def _index(self) -> dict[str, int]:
        return {c.name: i for i, c in enumerate(self.convs)}

    def conv(self, name: str) -> Conv:
        return self.convs[self._index[name]]

    def group(self, prefix: str) -> tuple[Conv, ...]:
        """The convs under module ``prefix`` (e.g. "rdbs.3"), in order."""
        return tuple(c for c in self.convs if c.name.startswith(prefix + "."))

    def reach_after(self, name: str) -> int:
        """The region the rest of the network needs once conv ``name`` ran (the next conv's reach;
        0, the core itself, after the last): where the windowed forward crops."""
        i = self._index[name] + 1
        return self.convs[i].reach if i < len(self.convs) else 0

    @property
    def weights(self) -> int:
        """Conv weights (biases and PReLU slopes left out): what a worker holds for the network."""
        return sum(c.weights for c in self.convs)

    @property
    def macs_per_pixel(self) -> int:
        """MACs per source pixel of a whole level (no halo)."""
        return sum(c.macs * c.scale**2 for c in self.convs)

    def parameter_names(self) -> list[str]:
        """The weight, bias and PReLU tensors' state-dict names in the order the network runs them
        (the order the released priors' ncnn graphs store them)."""
        out = []
        for c in self.convs:
            out += [f"{c.name}.weight", f"{c.name}.bias"] + ([f"{c.act}.weight"] if c.act else [])
        return out


def _rrdb(cfg: SRConfig) -> tuple[tuple[Conv, ...], tuple[int, int]]:
    nf, gc, d, n = cfg.features, cfg.growth, cfg.dense_convs, cfg.blocks * cfg.rdbs_per_block
    body = TAIL_REACH + 1  # conv_body's reach: the tail's plus its own pixel
    convs = [Conv("conv_first", 3, nf, body + n * d + 1)]
    for j in range(n):  # every conv of an RDB runs on the RDB's input region: it crops only after its fusion conv
        reach = body + (n - j) * d
        convs += [Conv(f"rdbs.{j}.convs.{i}", nf + i * gc, gc, reach) for i in range(d - 1)]
        convs.append(Conv(f"rdbs.{j}.fuse", nf + (d - 1) * gc, nf, reach))
    convs.append(Conv("conv_body", nf, nf, body))
    convs += [  # the tail on the core + TAIL_REACH source pixels: up1 at 2x, the rest at 4x
        Conv("up1", nf, nf, TAIL_REACH, scale=2),
        Conv("up2", nf, nf, TAIL_REACH, scale=4),
        Conv("conv_hr", nf, nf, TAIL_REACH, scale=4),
        Conv("conv_last", nf, 3, TAIL_REACH, scale=4),
    ]
    # peak floats per input pixel: the dense concatenation (nf + (d-1)*gc), the block and trunk
    # skips, the fused output; per output pixel: the tail's two feature maps of nf at 4x (the 2x
    # map is a quarter of one) and the result
    return tuple(convs), (4 * nf + d * gc + 8, 3 * nf + 12)


def _srvgg(cfg: SRConfig) -> tuple[tuple[Conv, ...], tuple[int, int]]:
    nf, n = cfg.features, cfg.convs
    convs = [Conv(f"convs.{i}", 3 if i == 0 else nf, nf, n + 2 - i, act=f"acts.{i}") for i in range(n + 1)]
    convs.append(Conv("conv_last", nf, 3 * SCALE * SCALE, 1))  # then a pixel shuffle x4
    # peak floats per input pixel: two feature maps (in, out), the PReLU's output, the 48-channel
    # tail; per output pixel: the shuffled result, the skip and their sum
    return tuple(convs), (3 * nf + 6, 12)


_BUILDERS = {"rrdb": _rrdb, "srvgg": _srvgg}


@lru_cache(maxsize=64)
def sr_architecture(cfg: SRConfig) -> SRArchitecture:
    """The layers of the SR network ``cfg`` describes. The activation counts are fitted against
    measured peaks by ``benchmarks/memory.py`` (footprint.task_bytes multiplies them out)."""
    convs, floats = _BUILDERS[cfg.arch](cfg)
    return SRArchitecture(cfg.arch, convs, SKIP_REACH[cfg.skip], DETAIL_REACH if cfg.detail > 0 else 0, floats)
