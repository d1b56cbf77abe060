"""What a render is asked for: the command line's and the library API's request, resolved by
``engine.render.prepare`` (and sized by ``engine.sizing``) into a plan."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class RenderRequest:
    model: str
    out: str
    size: str  # "WxH"
    seed: int = 0
    tile: int | None = None  # None: auto from the receptive field; 0: untiled
    halo: str = "exact"
    chunk: int | None = None  # None: DEFAULT_CHUNK, or a divisor of the tile (plan.chunk_for_tile)
    workers: int = 1  # 0: as many as the cluster at --address offers
    address: str | None = None
    resume: bool = False
    overwrite: bool = False
    device: str = "cpu"
    precision: str = "fp32"
    storage_options: dict = field(default_factory=dict, repr=False)  # credentials: never printed or stored
    model_storage_options: dict = field(default_factory=dict, repr=False)
    worker_memory: int | None = None  # bytes per worker; None: this machine's (CPU) or GPU's, see worker_memory()
