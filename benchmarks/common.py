"""Shared by the distributed benchmarks: an untrained model of a preset (render cost does not
depend on the weights), one render through the library with a chosen executor, machine facts."""

from __future__ import annotations

import os
import platform
import time
from typing import Any


def untrained_model(preset_name: str):
    """A model of the preset with untrained SR weights; a patch base keeps the bundled photo (its
    whole training), so the base is drawn as a trained model draws it."""
    import torch

    from ourgan_dist import images
    from ourgan_dist.commands.demo import sample_photo
    from ourgan_dist.config import preset
    from ourgan_dist.models import checkpoint

    model = checkpoint.build(preset(preset_name), seed=0)
    if model.config.base.kind == "patches":
        info = images.probe(sample_photo())
        width = min(model.config.base.base_width, info.width // 2)
        checkpoint.keep_photo(model, torch.from_numpy(images.load_rgb(sample_photo(), max_width=width)).unsqueeze(0))
    return model


def make_model(preset_name: str, where: str) -> str:
    from ourgan_dist.models import checkpoint

    out = os.path.join(where, f"model-{preset_name}")
    if not os.path.exists(os.path.join(out, "model.pt")):
        checkpoint.save(untrained_model(preset_name), out, {"note": "untrained SR, benchmark"})
    return out


def render_once(model: str, out: str, size: str, tile: int, chunk: int, executor: Any, seed: int = 1):
    """Render into a fresh store; returns (wall seconds, RenderSummary)."""
    from ourgan_dist.engine.render import RenderRequest, prepare, render

    p = prepare(RenderRequest(model=model, out=out, size=size, tile=tile, chunk=chunk, seed=seed, overwrite=True))
    t0 = time.perf_counter()
    summary = render(p, executor=executor)
    return time.perf_counter() - t0, summary


def task_span(summary) -> float:
    """Seconds from the first task's start to the last task's end (no start-up, no store set-up)."""
    return max(r.end for r in summary.reports) - min(r.start for r in summary.reports)


def machine() -> str:
    import torch

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}; load average {load}"


def start_local_ray(num_cpus: int) -> None:
    import ray

    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    # address="local": a fresh instance even when a cluster runs on this machine (it would be joined)
    ray.init(
        address="local",
        num_cpus=num_cpus,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
        _node_ip_address="127.0.0.1",
    )
