"""One task's life, independent of any executor: read the source window, run the network, keep
the core, write whole chunks, record completion.

A ``TileWorker`` loads the model and opens the store once, then runs any number of tasks. It
knows nothing of Ray: the local executor calls it in-process, the Ray executor inside actors.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..planning import noise
from ..store.canvas import FIELD, GENERATION, Canvas
from ..errors import TileError
from ..planning.pixels import downsample2, to_uint8
from ..store.lease import LeaseFence
from ..planning.geometry import Box
from ..planning.plan import SCALE, PyramidKey, RenderPlan, TaskKey, TileKey, source_box


FIELD_ARRAY = f"{GENERATION}/{FIELD}"


@dataclass(frozen=True)
class RenderJob:
    """What every worker needs to run tasks: where the model and the store are, and how to run.
    Small and picklable: tasks carry keys, never pixels or weights."""

    model: str  # model directory or model.pt URL
    store: str  # render store URL
    seed: int
    device: str = "cpu"  # "cpu" or "cuda[:n]"
    threads: int = 0  # torch intra-op threads (0: leave torch's default)
    precision: str = "fp32"  # fp32 | fp16 | bf16 (GPU only; fp32 is the exact mode)
    storage_options: dict = field(default_factory=dict, hash=False, compare=False, repr=False)  # never printed
    model_storage_options: dict = field(default_factory=dict, hash=False, compare=False, repr=False)
    lease_token: str = ""  # the render's lease: workers write only while the store's lease carries it ("" : no check)


@dataclass(frozen=True)
class TaskReport:
    key: TaskKey
    start: float  # wall-clock seconds (time.time) when the task started computing
    end: float
    pixels: int  # output pixels written
    worker: str = ""


class TileWorker:
    def __init__(self, job: RenderJob, model: Any = None, name: str = ""):
        import torch

        from ..models import checkpoint

        self.job = job
        self.name = name
        if job.threads:
            torch.set_num_threads(job.threads)
        if job.device.startswith("cuda"):
            # reproducible GPU kernels: no autotuning, deterministic algorithms where cuDNN has them.
            # (Bit-exact tiling is promised on CPU only; on GPU tiles agree to rounding.)
            torch.backends.cudnn.benchmark = False
            torch.backends.cudnn.deterministic = True
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False
        self.torch = torch
        self.dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[job.precision]
        if model is not None and (job.device != "cpu" or self.dtype != torch.float32):
            import copy

            # a shared model (the driver's, on the CPU in fp32) is copied, never moved or cast in place
            model = copy.deepcopy(model).to(job.device)
        self.model = model if model is not None else checkpoint.load(job.model, job.model_storage_options, device=job.device)
        self.canvas = Canvas(job.store, job.storage_options, mode="r+")
        self.fence = LeaseFence(job.store, job.storage_options, job.lease_token)
        self.plan: RenderPlan = self.canvas.plan
        self._check_fence()
        if self.dtype != torch.float32:
            self.model.sr.to(self.dtype)

    def _check_fence(self) -> None:
        """Refuse to write into a store rendered with another model or in another environment, and
        to run exact mode without its exact convolutions (see ``fencing.py``)."""
        from ..store.fencing import EnvironmentMismatch, exact_path_missing, mismatch, runtime_environment

        info, job = self.canvas.info, self.job
        if info.get("model_id") not in (None, self.model.model_id):
            raise EnvironmentMismatch(
                f"model {job.model!r} is model_id {self.model.model_id!r}, the store {job.store!r} was rendered with "
                f"{info['model_id']!r}: a different model at the same path; restore that model or render anew with "
                "--overwrite"
            )
        why = mismatch(info.get("environment"), runtime_environment(job.device, job.precision))
        if why:
            raise EnvironmentMismatch(
                f"worker {self.name or 'in-process'}: the store {job.store!r} was rendered in another environment "
                f"({why}), so its tiles would not be bit-identical; run the workers on the same torch build and "
                "hardware, or render anew with --overwrite"
            )
        self.exact = bool(self.plan.exact and job.device == "cpu" and job.precision == "fp32")
        if self.exact and (why := exact_path_missing(job.device, job.precision)):
            raise EnvironmentMismatch(
                f"exact mode (CPU, fp32, exact halo) needs its exact convolution path: {why}; "
                "use a torch build with oneDNN (the PyPI CPU wheels have it)"
            )

    def run(self, key: TaskKey) -> TaskReport:
        from ..models.layers import exact_only

        start = time.time()
        try:
            with exact_only(self.exact):
                pixels = self._pyramid(key) if isinstance(key, PyramidKey) else self._tile(key)
            self.canvas.mark_done(key)
        except Exception as e:  # re-raised with the key: which subregion failed is never lost
            raise TileError(key, e) from e
        return TaskReport(key, start, time.time(), pixels, self.name)

    # ---- generation levels --------------------------------------------------------------
    def _tile(self, key: TileKey) -> int:
        torch = self.torch
        plan, canvas = self.plan, self.canvas
        core = plan.core(key)
        guided = guided_levels(self.model) and canvas.has_field()
        field = None
        if key.level == 0:
            with torch.inference_mode():
                if guided:
                    img, field = self.model.base.generate_with_field(plan.base_height, plan.base_width, self.job.seed)
                else:
                    img = self.model.base.generate(plan.base_height, plan.base_width, self.job.seed)
            out = img[0].float().cpu().numpy()  # (3, h0, w0)
        else:
            window = plan.source_window(key)
            x = canvas.read(canvas.level_array_name(key.level - 1), window).astype(np.float32)
            f = canvas.read(FIELD_ARRAY, window) if guided and key.level == 1 else None
            out = sr_core(self.model, plan, key.level, core, window, x, self.job.seed, self.job.device, self.dtype, f).numpy()
        name = canvas.level_array_name(key.level)
        data = to_uint8(out) if key.level == plan.final_level else out.astype(np.float16)
        self.fence.check()  # only while the render holds the store's lease
        if field is not None:  # before the base: a level-1 tile starts once the base is recorded done
            canvas.write(FIELD_ARRAY, core, np.ascontiguousarray(field[:, core.y0 : core.y1, core.x0 : core.x1].numpy()))
        canvas.write(name, core, np.ascontiguousarray(data))
        return core.area

    # ---- viewing pyramid ----------------------------------------------------------------
    def _pyramid(self, key: PyramidKey) -> int:
        return write_pyramid_block(self.canvas, key, before_write=self.fence.check)


def guided_levels(model: Any) -> bool:
    """Whether the first SR level reads the photo where the base was drawn from
    (models/guided_detail.py): a patch base, and a detail stage that keeps the photo."""
    from ..models.patches import PatchBase

    return isinstance(model.base, PatchBase) and model.detail.guided and model.config.sr.detail > 0


def sr_core(
    model: Any,
    plan: RenderPlan,
    level: int,
    keep: Box,
    window: Box,
    source: Any,
    seed: int,
    device: str = "cpu",
    dtype: Any = None,
    field: Any = None,
):
    """The SR step of one tile, and of the halo-error figure, which must compute what tiles do:
    level ``level``'s pixels on ``keep`` from ``source``, the pixels of the level below on
    ``window`` (a (3, window.height, window.width) array or tensor; ``window`` must hold the source
    box of ``keep``, ``plan.source_box(keep)``, as a tile's ``RenderPlan.source_window`` does), with the global noise of ``window``,
    run on ``device`` in ``dtype`` (default float32); on level 1 of a guided model, ``field`` is
    the base's correspondence on ``window`` ((2, h, w) int16). Returns a (3, keep.height,
    keep.width) float32 tensor on the CPU."""
    import torch

    from ..models.window import run_window

    src = plan.levels[level - 1]
    src_core = source_box(keep)
    dtype = dtype or torch.float32
    x = torch.as_tensor(source).unsqueeze(0).to(device, dtype)
    z = torch.from_numpy(noise.normal(seed, level, 0, 3, window)).unsqueeze(0).to(device, dtype)
    with torch.inference_mode():
        f = None if field is None else torch.as_tensor(np.asarray(field))
        source_size = model.base.source_size(src.height) if f is not None else None
        y = run_window(
            model.sr,
            x,
            z,
            window=window,
            core=src_core,
            level_size=(src.height, src.width),
            detail=model.detail,
            field=f,
            source_size=source_size,
        )
        y = y[0].float().cpu()  # (3, 4*src_core.h, 4*src_core.w)
        oy, ox = keep.y0 - SCALE * src_core.y0, keep.x0 - SCALE * src_core.x0
        return y[:, oy : oy + keep.height, ox : ox + keep.width]


def write_pyramid_block(canvas: Canvas, key: PyramidKey, before_write=None) -> int:
    """A viewing-pyramid task: block ``key`` of array ``key.scale`` as the 2x2 mean of its source
    in the array before it. Returns the pixels written. (The task's completion record is the
    caller's.)"""
    plan = canvas.plan
    block = plan.pyramid_block(key)
    src = canvas.read(str(key.scale - 1), plan.pyramid_source(key))
    if before_write is not None:  # e.g. the worker's lease fence
        before_write()
    canvas.write(str(key.scale), block, downsample2(src, block.height, block.width))
    return block.area
