"""``ourgan-dist inspect``: what a render store or a model directory holds."""

from __future__ import annotations

import json
from typing import Any

import fsspec

from ..store.canvas import Canvas
from ..store.storage import strip_userinfo
from ..errors import UserError


def _model_card(target: str, storage_options: dict) -> dict[str, Any] | None:
    from ..models.checkpoint import CARD

    url = target if target.endswith(".json") else target.rstrip("/") + "/" + CARD
    try:
        with fsspec.open(url, "rb", **storage_options) as f:
            return json.load(f)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError, ValueError):
        return None


def describe(target: str, storage_options: dict | None = None) -> dict[str, Any]:
    so = storage_options or {}
    if Canvas.is_render_store(target, so):
        c = Canvas(target, so)
        prog = c.progress()
        plan = c.plan
        lines = [
            f"render store {strip_userinfo(target)}",
            f"  size {plan.width}x{plan.height}, seed {c.info.get('seed')}, "
            f"model {c.info.get('model_id')} ({c.info.get('model_preset')}) from {c.info.get('model')}",
        ]
        lines += ["  " + s for s in plan.describe()]
        for name, (d, t) in prog["tasks"].items():
            lines.append(f"  {name}: {d}/{t} tasks done")
        lines.append("  status: " + ("complete" if prog["complete"] else "INCOMPLETE (finish with render --resume)"))
        return {
            "kind": "render",
            "url": strip_userinfo(target),
            "info": c.info,
            "tasks": {k: {"done": d, "total": t} for k, (d, t) in prog["tasks"].items()},
            "complete": prog["complete"],
            "arrays": {str(k): [3, h, w] for k, (h, w) in enumerate(plan.pyramid_shapes)},
            "lines": lines,
        }
    card = _model_card(target, so)
    if card is not None:
        cfg = card["config"]
        meta = card.get("meta", {})
        photo = meta.get("photo", {})
        lines = [
            f"model {strip_userinfo(target)}: id {card.get('model_id')}, preset {cfg.get('preset')}, "
            f"format {card.get('format_version')}",
            f"  trained: {meta.get('trained')}, photo {photo.get('name')} {photo.get('width')}x"
            f"{photo.get('height')}, seed {meta.get('seed')}",
            _base_line(cfg["base"]) + f"; SR receptive field {card.get('receptive_radius')} px",
        ]
        return {"kind": "model", "url": strip_userinfo(target), "card": card, "lines": lines}
    raise UserError(f"{target!r}: neither an ourgan-dist render store nor a model directory")


def _base_line(base: dict) -> str:
    if base.get("kind") == "patches":
        return (
            f"  base: patches from the photo kept at {base['base_width']}x{base['base_height']}, "
            f"{base['patch']} px patches, vertical term {base['vertical_coord']}"
        )
    return f"  base: GAN, width {base['base_width']}, {base['n_scales']} scales, y channel {base['vertical_coord']}"
