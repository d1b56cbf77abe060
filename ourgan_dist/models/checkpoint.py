"""Self-describing checkpoints: a model directory holds ``model.pt`` (tensors and plain values
only, loaded with ``torch.load(weights_only=True)``: no code is ever unpickled) and ``model.json``
(the same config and metadata, for people and for ``inspect``). Both are written atomically.

``model.pt`` = {"format_version": int, "config": ModelConfig as dict, "meta": dict,
                "base": state_dict, "sr": state_dict}
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import pickle
from dataclasses import dataclass, field
from typing import Any

import fsspec
import torch

from ..store.atomic import write_atomic
from ..config import ModelConfig, from_dict, to_dict
from ..errors import CheckpointError, ConfigError
from .base import BaseGenerator
from .patches import PatchBase
from .detail import DetailLibrary
from .sr import build_sr
from .sr_architecture import sr_architecture
from .window import WindowedSR

FORMAT_VERSION = 3  # 2: the base generator's kind (a patch base or the paper's GAN); 3: SRConfig without edge and unit_range
WEIGHTS = "model.pt"
CARD = "model.json"


@dataclass
class Model:
    config: ModelConfig
    base: BaseGenerator | PatchBase
    sr: WindowedSR  # SRNet or SRVGG (models/sr.py, models/srvgg.py)
    meta: dict[str, Any]
    model_id: str  # sha256 of model.pt's bytes: identifies the weights in render stores
    detail: DetailLibrary = field(default_factory=DetailLibrary)  # the photo's detail patches (empty: none)

    def eval(self) -> "Model":
        self.base.eval()
        self.sr.eval()
        return self

    def to(self, device) -> "Model":
        self.base.to(device)
        self.sr.to(device)
        self.detail.to(device)
        return self


def build(config: ModelConfig, seed: int = 0) -> Model:
    """A freshly initialised (untrained) model, its weights a function of ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
        base = build_base(config)
        sr = build_sr(config.sr)
    return Model(config, base, sr, {}, model_id="")


def build_base(config: ModelConfig) -> BaseGenerator | PatchBase:
    """The base generator of the config's kind (weights untrained, photo not yet kept)."""
    return PatchBase(config.base) if config.base.kind == "patches" else BaseGenerator(config.base)


def keep_photo(model: Model, photo: torch.Tensor) -> None:
    """A patch base's whole training: keep ``photo`` (1, 3, h, w) in [-1, 1], already at base
    scale, and record its size in the model's config (the renderer's level count reads it)."""
    kept = dataclasses.replace(model.config.base, base_width=int(photo.shape[3]), base_height=int(photo.shape[2]))
    model.config = dataclasses.replace(model.config, base=kept)
    model.base.cfg = kept
    model.base.set_photo(photo)


def save(model: Model, out_dir: str, meta: dict[str, Any] | None = None) -> str:
    """Write ``out_dir/model.pt`` and ``out_dir/model.json`` atomically; returns the model id."""
    os.makedirs(out_dir, exist_ok=True)
    meta = dict(model.meta if meta is None else meta)
    payload = {
        "format_version": FORMAT_VERSION,
        "config": to_dict(model.config),
        "meta": meta,
        "base": {k: v.detach().cpu().contiguous() for k, v in model.base.state_dict().items()},
        "sr": {k: v.detach().cpu().contiguous() for k, v in model.sr.state_dict().items()},
    }
    if model.detail.ready:
        payload["detail"] = {k: v.detach().cpu().contiguous() for k, v in model.detail.state_dict().items()}
    buf = io.BytesIO()
    torch.save(payload, buf)
    data = buf.getvalue()
    model_id = hashlib.sha256(data).hexdigest()[:16]
    write_atomic(os.path.join(out_dir, WEIGHTS), data)
    card = {
        "format_version": FORMAT_VERSION,
        "model_id": model_id,
        "config": payload["config"],
        "meta": meta,
        "receptive_radius": sr_architecture(model.config.sr).receptive_radius,
    }
    write_atomic(os.path.join(out_dir, CARD), (json.dumps(card, indent=2, sort_keys=True) + "\n").encode())
    model.meta, model.model_id = meta, model_id
    return model_id


def weights_url(model_dir: str) -> str:
    return model_dir if model_dir.endswith(".pt") else model_dir.rstrip("/") + "/" + WEIGHTS


def read_bytes(model_dir: str, storage_options: dict | None = None) -> bytes:
    url = weights_url(model_dir)
    try:
        with fsspec.open(url, "rb", **(storage_options or {})) as f:
            return f.read()
    except FileNotFoundError:
        raise CheckpointError(
            f"model {model_dir!r}: {url} not found; train one with `ourgan-dist train IMAGE --out {model_dir}`"
        ) from None
    except IsADirectoryError:
        raise CheckpointError(f"model {model_dir!r}: {url} is a directory, not a checkpoint file") from None
    except PermissionError:
        raise CheckpointError(f"model {model_dir!r}: {url} is not readable (permission denied)") from None


def _clip(text: str, limit: int = 100) -> str:
    """The first sentence of an error's first line, cut at a word boundary."""
    line = (text.strip().splitlines() or [""])[0].split(". ")[0].strip()
    if len(line) <= limit:
        return line
    return line[:limit].rsplit(" ", 1)[0] + " ..."


def _unpickler_reason(e: Exception) -> str:
    """What torch's weights-only unpickler refused ("Unsupported global: GLOBAL os.system ..."),
    not its generic advice to load untrusted files with weights_only=False."""
    text = str(e)
    for marker in ("Unsupported global:", "Unsupported operand", "WeightsUnpickler error:"):
        at = text.find(marker)
        if at >= 0:
            rest = text[at:].replace("WeightsUnpickler error:", "").strip()
            return _clip(rest or marker)
    return _clip(text)


def load(model_dir: str, storage_options: dict | None = None, device: str = "cpu", data: bytes | None = None) -> Model:
    """Load and check a model directory (or ``model.pt`` URL). Never unpickles code."""
    if data is None:
        data = read_bytes(model_dir, storage_options)
    if not data.startswith(b"PK\x03\x04"):  # torch.save writes a zip archive; anything else is no checkpoint
        raise CheckpointError(
            f"model {model_dir!r}: not a readable checkpoint: {weights_url(model_dir)} is no checkpoint at all (not a "
            f"PyTorch zip archive; it begins {data[:16]!r}); point at a model folder written by `ourgan-dist train`"
        )
    try:
        payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"model {model_dir!r}: refused: the checkpoint holds pickled objects or code, which are never loaded "
            f"({_unpickler_reason(e)}); use a checkpoint written by `ourgan-dist train`"
        ) from None
    except Exception as e:  # truncated or corrupt zip, not torch at all
        raise CheckpointError(
            f"model {model_dir!r}: not a readable checkpoint ({type(e).__name__}: {_clip(str(e))}); "
            f"re-run `ourgan-dist train` to write it again"
        ) from None
    if not isinstance(payload, dict) or "format_version" not in payload:
        raise CheckpointError(f"model {model_dir!r}: not an ourgan-dist checkpoint (no format_version)")
    if payload["format_version"] != FORMAT_VERSION:
        raise CheckpointError(
            f"model {model_dir!r}: checkpoint format {payload['format_version']!r}, this ourgan-dist reads format "
            f"{FORMAT_VERSION}; retrain the model with this version"
        )
    try:
        config = from_dict(ModelConfig, payload["config"])
    except (ConfigError, TypeError) as e:
        raise CheckpointError(f"model {model_dir!r}: invalid config in checkpoint: {e}") from None
    base, sr = build_base(config), build_sr(config.sr)
    try:
        base.load_state_dict(payload["base"])
        sr.load_state_dict(payload["sr"])
    except (KeyError, RuntimeError) as e:
        raise CheckpointError(
            f"model {model_dir!r}: weights do not match the stored architecture ({str(e).splitlines()[0][:160]})"
        ) from None
    detail = DetailLibrary()
    if "detail" in payload:  # models trained before the detail stage have none
        try:
            detail.load_state_dict(payload["detail"])
        except (KeyError, RuntimeError) as e:
            raise CheckpointError(f"model {model_dir!r}: unreadable detail library ({str(e).splitlines()[0][:160]})") from None
    model = Model(config, base, sr, dict(payload.get("meta", {})), hashlib.sha256(data).hexdigest()[:16], detail)
    return model.eval().to(device)
