"""What a halo below the receptive field costs: the error it causes on one tile, measured
against an exact source window with ``tile.sr_core``, the step every tile runs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..planning.geometry import Box, TileKey
from ..planning.plan import RenderPlan, source_box
from .tile import guided_levels, sr_core

if TYPE_CHECKING:
    from .render import Prepared


def measure_tile(plan: RenderPlan) -> TileKey | None:
    """The tile a halo error is measured on: the centre tile of the largest level that has more
    than one tile, so that it has tiled neighbours (a level of one tile reads no halo at all and
    shows no error). None if every level is a single tile."""
    for lv in reversed(plan.levels[1:]):
        rows, cols = plan.tile_grid(lv.index)
        if rows * cols > 1:
            return TileKey(lv.index, rows // 2, cols // 2)
    return None


def exact_level(p: Prepared, level: int, box: Box, cache: dict):
    """Level ``level``'s values on ``box`` as an exact render stores them (float32 of the stored
    float16, or the base generator's output), computed from the smallest cone of exact windows
    below it: never a whole level above the base. (3, box.height, box.width) tensor."""
    plan, model, seed = p.plan, p.model, p.request.seed
    if level == 0:
        _base(p, cache)
        y = cache["base"][:, box.y0 : box.y1, box.x0 : box.x1]
        return y.half().float() if level < plan.final_level else y  # stored as float16 below the last level
    src = plan.levels[level - 1]
    win = source_box(box).expand(plan.receptive_radius).clip(src.height, src.width)
    y = sr_core(model, plan, level, box, win, exact_level(p, level - 1, win, cache), seed, field=field_on(p, level, win, cache))
    return y.half().float() if level < plan.final_level else y  # levels below the last are stored as float16


def _base(p: Prepared, cache: dict) -> None:
    """The base image (and, for a guided model, its correspondence) into ``cache``, once."""
    plan, model, seed = p.plan, p.model, p.request.seed
    if "base" in cache:
        return
    if guided_levels(model):
        img, cache["field"] = model.base.generate_with_field(plan.base_height, plan.base_width, seed)
    else:
        img = model.base.generate(plan.base_height, plan.base_width, seed)
    cache["base"] = img[0].float()


def field_on(p: Prepared, level: int, win: Box, cache: dict):
    """The base's correspondence on ``win`` where level ``level`` reads it (the first level of a
    guided model, as tiles do), else None."""
    if level != 1 or not guided_levels(p.model):
        return None
    _base(p, cache)
    return cache["field"][:, win.y0 : win.y1, win.x0 : win.x1]


def measure_halo_error(p: Prepared) -> dict[str, Any]:
    """For a halo below the receptive field: the error it causes on one level, measured on an
    interior tile of the largest level with more than one tile (``measure_tile``). The tile's
    exact source window is computed, then the tile is run on it with the asked halo and with an
    exact one. A full render makes this error at every tiled level, and each level's error is
    carried into the next, so the final image can differ more than this one-level figure.

    Returns {} for an exact plan; {"tile": None, ...} when no level has more than one tile (the
    halo is then never cut and the render is exact)."""
    import numpy as np
    import torch

    from ..planning.pixels import to_uint8

    plan = p.plan
    if plan.n_sr == 0 or plan.exact:
        return {}
    key = measure_tile(plan)
    tiled = [lv.index for lv in plan.levels[1:] if plan.tile_grid(lv.index) != (1, 1)]
    if key is None:
        return {"tile": None, "tiled_levels": 0, "max_abs_error_8bit": 0.0, "mean_abs_error_8bit": 0.0, "pixels_differing": 0.0}
    src = plan.levels[key.level - 1]
    core, src_core = plan.core(key), plan.source_core(key)
    full = src_core.expand(plan.receptive_radius).clip(src.height, src.width)
    with torch.inference_mode():
        cache: dict = {}
        x = exact_level(p, key.level - 1, full, cache)
        outs = []
        for halo in (plan.halo, plan.receptive_radius):
            win = src_core.expand(halo).clip(src.height, src.width)
            ys, xs = win.relative_to(full)
            y = sr_core(p.model, plan, key.level, core, win, x[:, ys, xs], p.request.seed, field=field_on(p, key.level, win, cache))
            outs.append(to_uint8(y.numpy()).astype(np.int16))
    diff = np.abs(outs[0] - outs[1])
    return {
        "tile": str(key),
        "tiled_levels": len(tiled),
        "max_abs_error_8bit": float(diff.max()),
        "mean_abs_error_8bit": float(diff.mean()),
        "pixels_differing": float((diff.max(axis=0) > 0).mean()),
    }


def describe_halo_error(plan: RenderPlan, err: dict[str, Any]) -> str:
    """One line for the CLI: what the measured error is, where, and that levels compound it."""
    head = f"halo {plan.halo} < receptive field {plan.receptive_radius}: NOT exact"
    if err.get("tile") is None:
        return (
            f"halo {plan.halo} < receptive field {plan.receptive_radius}, but every level is a single tile, so no "
            "halo is cut: the render is exact"
        )
    share = 100 * err["pixels_differing"]
    return (
        f"{head}; measured on interior tile {err['tile']} from an exact source: max error "
        f"{err['max_abs_error_8bit']:.0f}/255, mean {err['mean_abs_error_8bit']:.4f}/255, {share:.3g}% of pixels "
        f"differ. This is one level's error: {err['tiled_levels']} level(s) are tiled and errors compound "
        "across levels, so the final image may differ more"
    )
