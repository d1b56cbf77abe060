"""Fenced determinism: what a render's bytes depend on besides (checkpoint, seed, size), recorded
in the store and checked before anything more is written.

A tiled render equals the untiled one bit for bit on CPU in fp32 with an exact halo (I1), and a
resumed render equals an uninterrupted one (I6), only if every task runs the same arithmetic:
the same torch build, the same oneDNN, the same CPU instruction set (oneDNN picks its kernels,
and with them the rounding, by the instruction set), the same device kind and precision, and the
same version of ourgan-dist (its code computes the tiles). These go into the render's info
(``environment``); a ``--resume`` on a different environment is refused, and every worker checks
its own environment and the model it loaded against the store before it writes.

Fails closed: a store without a recorded environment (one written before environments were
recorded, or whose record was removed) cannot show that it matches, so it is refused like a
mismatch, and so is a recorded environment that lacks a field compared here (the ourgan-dist
version, in stores of versions that did not record it). Such a store is rendered anew with
``--overwrite``.
"""

from __future__ import annotations

import re
from typing import Any

from ..errors import UserError

# compared on CPU (where bit-exactness is promised) / on GPU (where tiles agree to rounding)
CPU_FIELDS = ("device", "precision", "ourgan_dist", "torch", "onednn", "cpu_capability")
GPU_FIELDS = ("device", "precision", "ourgan_dist", "torch", "cuda", "gpu")
MISSING = object()  # a field the recorded environment does not have


class EnvironmentMismatch(UserError):
    """A worker or a resumed render runs in another environment than the store was rendered in."""


def _onednn() -> str | None:
    """oneDNN's version in this torch build ("3.12.0"), "unknown" if it has oneDNN but does not
    say which, None without oneDNN."""
    import torch

    if not torch.backends.mkldnn.is_available():
        return None
    m = re.search(r"(?:oneDNN|MKL-DNN) v([\w.]+)", torch.__config__.show())
    return m.group(1) if m else "unknown"


def runtime_environment(device: str, precision: str) -> dict[str, Any]:
    """This process's arithmetic environment for a render on ``device`` at ``precision``."""
    import torch

    from .. import __version__

    kind = "cuda" if device.startswith("cuda") else "cpu"
    env: dict[str, Any] = {
        "device": kind,
        "precision": precision,
        "ourgan_dist": __version__,
        "torch": torch.__version__,
        "onednn": _onednn(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }
    if kind == "cuda":
        env["cuda"] = torch.version.cuda
        env["gpu"] = torch.cuda.get_device_name(torch.device(device)) if torch.cuda.is_available() else None
    return env


def mismatch(recorded: dict[str, Any] | None, current: dict[str, Any]) -> str | None:
    """The first difference that matters, as "field: recorded vs current", or None. A store
    without a recorded environment, or whose record lacks a compared field, is a mismatch (fails
    closed): the text says what is missing."""
    if not isinstance(recorded, dict) or not recorded:
        return (
            "no environment is recorded in the store (written by an older ourgan-dist, or its record was "
            "removed), so it cannot be shown to match this one"
        )
    fields = GPU_FIELDS if current.get("device") == "cuda" else CPU_FIELDS
    for k in fields:
        there = recorded.get(k, MISSING)
        if there is MISSING:
            return f"{k} is not recorded in the store's environment, {current.get(k)!r} here"
        if there != current.get(k):
            return f"{k} {there!r} there, {current.get(k)!r} here"
    return None


def exact_path_missing(device: str, precision: str) -> str | None:
    """Why this process cannot run exact mode's convolutions (``models.layers.ExactConv2d`` on
    oneDNN in float32), or None if it can."""
    import torch

    if device.startswith("cuda") or precision != "fp32":
        return f"exact mode is CPU fp32, this render is {device} {precision}"
    if not torch.backends.mkldnn.is_available():
        return "this torch build has no oneDNN (torch.backends.mkldnn.is_available() is False)"
    if not hasattr(torch.ops.aten, "mkldnn_convolution"):
        return "this torch build has no aten::mkldnn_convolution"
    return None
