"""A strict reader of ncnn model files (``.param`` text graph + ``.bin`` weights), enough to turn
the released Real-ESRGAN x4 weights into PyTorch tensors for our own modules.

Only what those graphs use is understood: Input, Split, Concat, Convolution, PReLU, Eltwise,
BinaryOp, Interp, PixelShuffle. Anything else, a weight blob shorter than its declared shape, or
bytes left over at the end of ``.bin`` is refused with one line that names the file and what is
wrong: a converted network is either complete and exact or not produced at all.

ncnn's ``.bin`` is the weights of every layer in graph order, without names:
  Convolution: a 4-byte storage tag, then ``weight_data_size`` values (tag 0x01306B47: float16,
               padded to 4 bytes; tag 0: float32), then ``num_output`` float32 biases if bias_term;
  PReLU:       ``num_slope`` float32 slopes (no tag).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import CheckpointError

MAGIC = 7767517
TAG_FP16 = 0x01306B47
TAG_FP32 = 0
KNOWN = {"Input", "Split", "Concat", "Convolution", "PReLU", "Eltwise", "BinaryOp", "Interp", "PixelShuffle"}


@dataclass
class Layer:
    type: str
    name: str
    inputs: list[str]
    outputs: list[str]
    params: dict[int, object]  # ncnn's numbered params: int, float, or a list for array params
    weights: dict[str, np.ndarray] = field(default_factory=dict)

    def param(self, key: int, default: object = 0) -> object:
        return self.params.get(key, default)


def _number(text: str) -> object:
    try:
        return int(text)
    except ValueError:
        return float(text)


def parse_param(text: str, source: str = "<param>") -> list[Layer]:
    """The layer list of a ``.param`` file's text."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines or lines[0].strip() != str(MAGIC):
        raise CheckpointError(f"{source}: not an ncnn .param file (first line is not {MAGIC})")
    try:
        n_layers, _n_blobs = (int(v) for v in lines[1].split())
    except (IndexError, ValueError):
        raise CheckpointError(f"{source}: line 2 must hold the layer and blob counts") from None
    body = lines[2:]
    if len(body) != n_layers:
        raise CheckpointError(f"{source}: declares {n_layers} layers but holds {len(body)}")
    layers = []
    for lineno, line in enumerate(body, start=3):
        parts = line.split()
        try:
            ltype, name, n_in, n_out = parts[0], parts[1], int(parts[2]), int(parts[3])
        except (IndexError, ValueError):
            raise CheckpointError(f"{source}:{lineno}: malformed layer line {line[:60]!r}") from None
        if ltype not in KNOWN:
            raise CheckpointError(f"{source}:{lineno}: layer type {ltype!r} is not supported (known: {sorted(KNOWN)})")
        blobs = parts[4 : 4 + n_in + n_out]
        if len(blobs) != n_in + n_out:
            raise CheckpointError(f"{source}:{lineno}: layer {name} lists fewer blobs than its {n_in}+{n_out}")
        params: dict[int, object] = {}
        for kv in parts[4 + n_in + n_out :]:
            key, _, value = kv.partition("=")
            try:
                k = int(key)
                if k <= -23300:  # array param: -23300 - id = count,v1,v2,...
                    values = value.split(",")
                    params[-k - 23300] = [_number(v) for v in values[1 : 1 + int(values[0])]]
                else:
                    params[k] = _number(value)
            except (ValueError, IndexError):
                raise CheckpointError(f"{source}:{lineno}: bad parameter {kv!r} of layer {name}") from None
        layers.append(Layer(ltype, name, blobs[:n_in], blobs[n_in:], params))
    return layers


class _Reader:
    def __init__(self, data: bytes, source: str):
        self.data, self.pos, self.source = data, 0, source

    def take(self, n: int, what: str) -> bytes:
        if self.pos + n > len(self.data):
            raise CheckpointError(
                f"{self.source}: truncated: {what} needs {n} bytes at offset {self.pos}, "
                f"the file has {len(self.data)}; reinstall the package that ships it"
            )
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def floats(self, count: int, what: str) -> np.ndarray:
        return np.frombuffer(self.take(4 * count, what), dtype="<f4").copy()

    def tagged(self, count: int, what: str) -> np.ndarray:
        tag = int.from_bytes(self.take(4, what + " tag"), "little")
        if tag == TAG_FP16:
            raw = self.take((2 * count + 3) // 4 * 4, what)
            return np.frombuffer(raw[: 2 * count], dtype="<f2").astype(np.float32)
        if tag == TAG_FP32:
            return self.floats(count, what)
        raise CheckpointError(
            f"{self.source}: {what}: storage tag {tag:#010x} is not float16 or float32 (quantised weights are not supported)"
        )


def load_weights(layers: list[Layer], data: bytes, source: str = "<bin>") -> list[Layer]:
    """Fill ``layer.weights`` from a ``.bin``'s bytes, in graph order; every byte must be used."""
    r = _Reader(data, source)
    for layer in layers:
        if layer.type == "Convolution":
            cout, k = int(layer.param(0)), int(layer.param(1))
            size = int(layer.param(6))
            if size % (cout * k * k):
                raise CheckpointError(
                    f"{source}: layer {layer.name}: weight size {size} is not a multiple of num_output*k*k = {cout * k * k}"
                )
            cin = size // (cout * k * k)
            layer.weights["weight"] = r.tagged(size, f"layer {layer.name} weight").reshape(cout, cin, k, k)
            if int(layer.param(5)):
                layer.weights["bias"] = r.floats(cout, f"layer {layer.name} bias")
        elif layer.type == "PReLU":
            layer.weights["slope"] = r.floats(int(layer.param(0)), f"layer {layer.name} slope")
    if r.pos != len(data):
        raise CheckpointError(
            f"{source}: {len(data) - r.pos} bytes left over after the last layer's weights; the .bin does not belong to this .param"
        )
    return layers


def read(param_path: str, bin_path: str) -> list[Layer]:
    """Parse ``param_path`` and load ``bin_path`` into it."""
    for p in (param_path, bin_path):
        try:
            open(p, "rb").close()
        except FileNotFoundError:
            raise CheckpointError(f"{p}: missing; reinstall the package that ships it") from None
    with open(param_path, encoding="ascii", errors="replace") as f:
        layers = parse_param(f.read(), param_path)
    with open(bin_path, "rb") as f:
        return load_weights(layers, f.read(), bin_path)
