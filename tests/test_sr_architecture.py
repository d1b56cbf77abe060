"""The SR networks' torch-free description (models/sr_architecture.py) is what the networks are:
every conv it lists is a conv of the module with its shape, computed by the windowed forward on
exactly the region the projection charges for, in the order the priors' converter reads."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from ourgan_dist.config import PRESETS, SRConfig
from ourgan_dist.models.sr import build_sr
from ourgan_dist.models.sr_architecture import SCALE, sr_architecture
from ourgan_dist.planning.geometry import Box

CONFIGS = [
    PRESETS["tiny"].sr,
    SRConfig(arch="srvgg", features=6, convs=4, skip="bicubic", prior=""),
    SRConfig(features=8, growth=4, blocks=2, rdbs_per_block=2, dense_convs=3, prior=""),
    SRConfig(features=6, growth=3, blocks=1, rdbs_per_block=3, dense_convs=2, prior="", skip="bicubic"),
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"{c.arch}-{c.skip}")
def test_the_modules_are_the_listed_convs(cfg):
    arch = sr_architecture(cfg)
    state = build_sr(cfg).state_dict()
    for conv in arch.convs:
        assert tuple(state[f"{conv.name}.weight"].shape) == (conv.cout, conv.cin, conv.kernel, conv.kernel)
        assert tuple(state[f"{conv.name}.bias"].shape) == (conv.cout,)
        if conv.act:
            assert tuple(state[f"{conv.act}.weight"].shape) == (conv.cout,)
    assert sorted(arch.parameter_names()) == sorted(k for k in state if k != "noise_amp")
    assert arch.weights == sum(state[f"{c.name}.weight"].numel() for c in arch.convs)


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"{c.arch}-{c.skip}")
def test_each_conv_runs_on_the_core_expanded_by_its_reach(cfg):
    """Hooks record the size of every conv's output in a tile's windowed forward: an interior core
    read with the exact halo, so no region is clipped by the level's edge."""
    net = build_sr(cfg).eval()
    arch = sr_architecture(cfg)
    r = net.receptive_radius
    core = Box(r + 1, r + 6, r + 2, r + 9)  # 5 x 7 source pixels
    H, W = core.y1 + r + 3, core.x1 + r + 4
    window = core.expand(r)
    seen: dict[str, tuple[int, int]] = {}

    def record(name):
        def hook(module, inputs, output) -> None:
            seen[name] = tuple(output.shape[2:])

        return hook

    modules = dict(net.named_modules())
    handles = [modules[c.name].register_forward_hook(record(c.name)) for c in arch.convs]
    x = torch.rand(1, 3, window.height, window.width) * 2 - 1
    with torch.no_grad():
        out = net.forward_window(x, None, window=window, core=core, level_size=(H, W))
    for h in handles:
        h.remove()
    assert tuple(out.shape[2:]) == (SCALE * core.height, SCALE * core.width)
    assert arch.network_radius == r == arch.convs[0].reach
    for c in arch.convs:
        grown = core.expand(c.reach)
        assert seen[c.name] == (c.scale * grown.height, c.scale * grown.width), c


def test_radius_and_counts_follow_the_layers():
    paper, cpu = sr_architecture(PRESETS["paper"].sr), sr_architecture(PRESETS["cpu"].sr)
    # ESRGAN's RRDBNet: conv_first, 69 RDBs of 5 convs, conv_body, a tail reaching 2 source pixels
    assert paper.network_radius == 1 + 23 * 3 * 5 + 1 + 2 == 349
    assert cpu.network_radius == 16 + 2 == 18  # SRVGG: one pixel per conv at source resolution
    # the detail stage reaches 8 pixels past a core (guided detail's keys and carry), within the cpu
    # preset's own radius; a smaller network's halo grows to it, and without detail it is the network's
    small = SRConfig(arch="srvgg", convs=1, skip="none", prior="")
    assert sr_architecture(small).detail_reach == 8 and sr_architecture(replace(small, detail=0.0)).detail_reach == 0
    assert sr_architecture(small).network_radius == 3 and sr_architecture(small).receptive_radius == 8
    assert sr_architecture(replace(small, detail=0.0)).receptive_radius == 3 and cpu.receptive_radius == 18
    # the bicubic skip's reach is the narrowest halo a tile can have; other skips need none
    assert (sr_architecture(CONFIGS[1]).skip_reach, sr_architecture(CONFIGS[0]).skip_reach) == (2, 0)
    # RRDB: 16.7 M weights, the compact SRVGG 0.62 M, ~20x fewer MACs per source pixel
    assert paper.weights == pytest.approx(16.7e6, rel=0.01) and cpu.weights == pytest.approx(0.62e6, rel=0.01)
    assert paper.macs_per_pixel / cpu.macs_per_pixel > 20
