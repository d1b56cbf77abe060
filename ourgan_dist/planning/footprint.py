"""What a render holds: each worker's peak memory for its largest task, and the store's bytes on
disk, estimated from a ``RenderPlan`` and the model's configs.

Pure arithmetic like ``plan.py`` and ``projection.py``: no torch, Ray or Zarr. Activations are
counted from the networks' own descriptions (``models/sr_architecture.py``) and the patch base's
measured working set; the runtime and the factor over the count, and the compression ratios, were
recorded by ``benchmarks/plan_calibration.py`` and ``benchmarks/forecast_vs_actual.py --base``.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import BaseConfig, PatchBaseConfig, SRConfig
from ..models.sr_architecture import sr_architecture
from .plan import SCALE, RenderPlan, TileKey

GiB = 1 << 30
MiB = 1 << 20


def base_activation_bytes(base: BaseConfig | PatchBaseConfig, height: int, width: int) -> int:
    """The base task's working memory: the GAN's feature maps, or for the patch base its feature
    maps and the local search's temporaries (about 12 feature maps' worth: queries, the photo's
    keys, gathered candidates, differences), images, correspondence fields, and one chunk of the
    layout search's distance matrix. Measured (``benchmarks/forecast_vs_actual.py --base``, 16
    features, each base in a fresh process): its high-water mark (VmHWM) grew 224, 185, 716 and
    986 MiB for bases of 256x160, 512x320, 1024x640 and 1024x768; this count times
    ``MemoryModel.factor`` (1.12) gives 171, 291, 769 and 897, and the runtime term covers the rest."""
    if base.kind == "patches":
        per_px = 4 * (12 * base.features + 3 * 4) + 8 * 12  # feature maps and temporaries, images; int64 fields
        return height * width * per_px + 4 * 3 * 2048 * base.layout_pixels
    return height * width * (base.channels * 6 + base.latent_channels) * 4


# ---- memory -----------------------------------------------------------------------------------
GUIDED_BYTES = 24  # host bytes per pixel of the first level while its guided detail's band is built


def guided_level(sr: SRConfig, base: BaseConfig, level: int) -> bool:
    """Whether level ``level`` runs the guided detail (models/guided_detail.py) rather than the
    library: the first level of a patch base with a detail stage (a model trained before it keeps
    the library; it is counted as guided)."""
    return level == 1 and base.kind == "patches" and sr.detail > 0


def task_bytes(plan: RenderPlan, sr: SRConfig, base: BaseConfig) -> dict[str, int]:
    """Counted peak bytes of the largest task of each kind, before the calibration factor:

    - ``base``: the paper's GAN base's feature maps (float32), on the worker's device;
    - ``patch_base``: the patch base's working set, always in the host's memory (it runs on a CPU
      thread on GPU workers too), so a GPU's memory model leaves it out;
    - ``sr_body``: an SR tile's network at source resolution, ``SRArchitecture.activation_floats`` per
      pixel of its window. A full-size tile's window is its source core plus the halo on every
      side: at a level's edge the source is extended by repeating edge pixels (``run_window``),
      so edge tiles hold as much as interior ones;
    - ``sr_output``: its output side, the tail's floats per output pixel plus the float32 result
      and one copy while it is cropped and converted for the store;
    - ``guided``: the first level's guided detail (models/guided_detail.py, a patch base with a
      detail stage): the photo's band at that level's size, built once per worker on the host,
      ``GUIDED_BYTES`` per pixel of the level at its peak (two float32 images) while it is built;
    - ``pyramid``: a viewing-pyramid block of side b reads 2b x 2b uint8 pixels (3 bytes each) and
      averages them through a uint16 copy and two uint64 sums (``pixels.downsample2``): 12 bytes
      per source pixel and 72 per block pixel."""
    per_in, per_out = sr_architecture(sr).activation_floats
    base_key = "patch_base" if base.kind == "patches" else "base"
    out = {"base": 0, "patch_base": 0, "sr_body": 0, "sr_output": 0, "guided": 0}
    out[base_key] = base_activation_bytes(base, plan.base_height, plan.base_width)
    if len(plan.levels) > 1 and guided_level(sr, base, 1):
        out["guided"] = GUIDED_BYTES * plan.levels[1].height * plan.levels[1].width
    for lv in plan.levels[1:]:
        core = plan.source_core(TileKey(lv.index, 0, 0))  # the first tile is a full-size one
        win = (core.height + 2 * plan.halo) * (core.width + 2 * plan.halo)
        out["sr_body"] = max(out["sr_body"], win * per_in * 4)
        out["sr_output"] = max(out["sr_output"], (core.height + 4) * (core.width + 4) * SCALE**2 * (per_out + 6) * 4)
    out["pyramid"] = 0
    if len(plan.pyramid_shapes) > 1:
        b, (h, w) = plan.pyramid_block_side, plan.pyramid_shapes[1]
        out["pyramid"] = 12 * min(2 * b, plan.height) * min(2 * b, plan.width) + 72 * min(b, h) * min(b, w)
    return out


@dataclass(frozen=True)
class MemoryModel:
    """A worker's peak memory for a task: what it holds anyway (the runtime and the model's
    weights) plus ``factor`` x the activations ``task_bytes`` counts (the allocator's
    slack, copies the count leaves out)."""

    runtime_bytes: int
    factor: float
    source: str
    kinds: tuple[str, ...] = ("base", "patch_base", "sr_body", "sr_output", "guided", "pyramid")  # the task_bytes terms it holds

    def counted(self, plan: RenderPlan, sr: SRConfig, base: BaseConfig) -> int:
        terms = task_bytes(plan, sr, base)
        return max(terms[k] for k in self.kinds)

    def task_peak(self, plan: RenderPlan, sr: SRConfig, base: BaseConfig) -> int:
        weights = 4 * sr_architecture(sr).weights
        return int(self.runtime_bytes + weights + self.factor * self.counted(plan, sr, base))


# Fitted by benchmarks/plan_calibration.py: Ray worker peak RSS (ru_maxrss) of 2-worker renders of
# the tiny and cpu presets at 4096x2730 (tiles 512-2048) and 8192x5460 (tile 1792): 372 MiB +
# 1.12 x the largest counted term, residuals -91..+101 MiB. A 16384x10912 render (tile 1792)
# reached 994 MiB, about 100 MiB over that fit: peaks still grow a little with the canvas. The
# runtime term is raised to 640 MiB to cover it; small tiles are then projected up to ~300 MiB high.
CPU_MEMORY = MemoryModel(
    runtime_bytes=640 * MiB, factor=1.12, source="calibrated against measured worker peaks on CPU (benchmarks/plan_calibration.py)"
)
# On one H200 (benchmarks/gpu_render.py, paper preset) PyTorch's allocated peak stayed under this
# CPU-calibrated projection: 7.4 GiB against 9.4 projected (fp32, tile 3072), 17.1 against 29.0
# (fp16, tile 5632: the count is fp32's). Its cache then held up to 2x the allocated peak, which
# it hands back before an allocation would fail. Viewing-pyramid blocks are averaged on the host.
GPU_MEMORY = MemoryModel(
    runtime_bytes=1 * GiB,
    factor=CPU_MEMORY.factor,
    source="GPU memory: CPU calibration + 1 GiB for the CUDA context; above the peaks "
    "measured on an H200 (benchmarks/gpu_render.py)",
    kinds=("base", "sr_body", "sr_output"),
)


def memory_model(device: str) -> MemoryModel:
    return GPU_MEMORY if device.startswith("cuda") else CPU_MEMORY


# ---- the store on disk ------------------------------------------------------------------------
# Compressed / raw bytes of the store's arrays: a render of the trained demo model (cpu preset,
# 4096x2730) took 19.5 MiB where 0.75 / 0.85 projected 35.6 MiB; an untrained tiny model's noisy
# output 32 MiB (benchmarks/plan_calibration.py). Set from the demo render.
UINT8_RATIO = 0.42
FLOAT16_RATIO = 0.6


def store_bytes(plan: RenderPlan) -> tuple[int, int]:
    """(final image and its viewing pyramid, generation levels) in bytes on disk, estimated."""
    image = sum(3 * h * w for h, w in plan.pyramid_shapes) * UINT8_RATIO
    generation = sum(3 * lv.height * lv.width * 2 for lv in plan.levels[:-1]) * FLOAT16_RATIO
    return int(image), int(generation)
