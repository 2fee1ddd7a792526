"""Reader for dlib's binary serialization of DNNs (``*.dat`` files saved by ``dlib::serialize``).

Pure Python/numpy, so dlib is not needed at run time; nothing in the file is ever executed, it is
only decoded. The encodings follow dlib's sources (``dlib/serialize.h``, ``dlib/float_details.h``,
``dlib/cuda/tensor.h``, ``dlib/dnn/core.h``, ``dlib/dnn/layers.h``, ``input.h``, ``loss.h``):

- integers: one control byte (low 4 bits = number of payload bytes, bit 0x80 = negative) followed
  by that many little-endian magnitude bytes;
- floats/doubles: two integers, a 64-bit mantissa then a 16-bit exponent, value ``m * 2**e``
  (exponents 32000/32001/32002 mean +inf/-inf/nan);
- bools: the ASCII byte ``'1'`` or ``'0'``; strings: an integer length then the bytes;
- tensors: version 2, then num_samples, k, nr, nc and the values as little-endian float32.

A network is written from the loss layer inwards: the loss layer's version and details, then every
wrapper's version down to the input layer (``add_layer`` 2, tags and skips 1, the input-side
``add_layer`` 2 or 3), then the input layer, then each computational layer's details and cached
state from the innermost to the outermost. So after the version prefix the layers come in forward
(input to output) order, each starting with a version string naming its kind (``con_4``,
``affine_``, ``relu_``, ``max_pool_2``, ``avg_pool_2``, ``add_prev_``, ``fc_2``, ...). Tags and
skips store nothing but their version, and ``add_prev`` does not store which tag it adds, so the
wiring is not in the file: callers check the layer sequence against the architecture they know.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

_FLOAT_SPECIALS = {32000: float("inf"), 32001: float("-inf"), 32002: float("nan")}
CONV_MODE = 0  # dlib::layer_mode of affine_/bn_ layers that act per channel


class DlibFormatError(ValueError):
    """The bytes are not a dlib DNN of a kind this reader understands."""


class Reader:
    """Sequential decoder of dlib's primitive encodings over an in-memory byte string."""

    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0

    def _take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise DlibFormatError(f"unexpected end of data at byte {self.pos} (wanted {n} bytes)")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def at_end(self) -> bool:
        return self.pos >= len(self.data)

    def int(self) -> int:
        control = self._take(1)[0]
        size = control & 0x0F
        if size == 0 or size > 8:
            raise DlibFormatError(f"bad integer control byte {control:#x} at byte {self.pos - 1}")
        value = int.from_bytes(self._take(size), "little")
        return -value if control & 0x80 else value

    def float(self) -> float:
        if self.data[self.pos] & 0x70:
            raise DlibFormatError(f"old ASCII float encoding at byte {self.pos} is not supported")
        mantissa, exponent = self.int(), self.int()
        if exponent in _FLOAT_SPECIALS:
            return _FLOAT_SPECIALS[exponent]
        return float(np.ldexp(np.float64(mantissa), exponent))

    def bool(self) -> bool:
        byte = self._take(1)
        if byte not in (b"0", b"1"):
            raise DlibFormatError(f"bad bool byte {byte!r} at byte {self.pos - 1}")
        return byte == b"1"

    def string(self) -> str:
        return self._take(self.int()).decode("latin-1")

    def tensor(self) -> np.ndarray:
        """A ``resizable_tensor``: float32 array of shape (num_samples, k, nr, nc)."""
        version = self.int()
        if version != 2:
            raise DlibFormatError(f"unsupported tensor version {version} at byte {self.pos}")
        shape = tuple(self.int() for _ in range(4))
        count = int(np.prod(shape))
        return np.frombuffer(self._take(4 * count), dtype="<f4").reshape(shape).astype(np.float32)

    def alias_tensor(self) -> tuple[int, int, int, int]:
        """An ``alias_tensor`` (a view's shape only, no data)."""
        version = self.int()
        if version != 1:
            raise DlibFormatError(f"unsupported alias_tensor version {version} at byte {self.pos}")
        return tuple(self.int() for _ in range(4))  # type: ignore[return-value]


@dataclass
class Layer:
    """One computational layer: ``kind`` is dlib's version string without its version suffix."""

    kind: str
    attrs: dict[str, int] = field(default_factory=dict)
    tensors: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class DlibNet:
    """A decoded network: loss and input layer details, layers in forward order.

    ``distance_threshold`` is ``loss_metric``'s: pairs closer than it count as the same identity.
    """

    loss: str
    distance_threshold: float
    input_mean_rgb: tuple[float, float, float]
    input_size: tuple[int, int] | None
    layers: list[Layer]
    wrapper_versions: list[int]  # versions of the add_layer/tag/skip wrappers, outermost first


def _read_pool(r: Reader, kind: str) -> Layer:
    attrs = {"nr": r.int(), "nc": r.int(), "stride_y": r.int(), "stride_x": r.int(),
             "padding_y": r.int(), "padding_x": r.int()}
    return Layer(kind, attrs)


def _read_con(r: Reader, version: str) -> Layer:
    params = r.tensor().ravel()
    attrs = {"num_filters": r.int(), "nr": r.int(), "nc": r.int(), "stride_y": r.int(),
             "stride_x": r.int(), "padding_y": r.int(), "padding_x": r.int()}
    filters, biases = r.alias_tensor(), r.alias_tensor()
    for _ in range(4):  # learning-rate and weight-decay multipliers
        r.float()
    use_bias = r.bool() if version in ("con_5", "con_6") else True
    if version == "con_6" and r.bool():
        raise DlibFormatError("con_ with a fused ReLU is not supported")
    n_weights = int(np.prod(filters))
    tensors = {"weight": params[:n_weights].reshape(filters)}
    if use_bias:
        tensors["bias"] = params[n_weights:n_weights + int(np.prod(biases))].copy()
    return Layer("con", attrs, tensors)


def _read_affine(r: Reader, version: str) -> Layer:
    params = r.tensor().ravel()
    gamma, beta = r.alias_tensor(), r.alias_tensor()
    mode = r.int()
    disabled = r.bool() if version == "affine_2" else False
    if mode != CONV_MODE or disabled:
        raise DlibFormatError(f"affine_ layer in mode {mode} (disabled={disabled}) is not supported")
    n = int(np.prod(gamma))
    return Layer("affine", {}, {"gamma": params[:n].copy(), "beta": params[n:n + int(np.prod(beta))].copy()})


def _read_fc(r: Reader, version: str) -> Layer:
    attrs = {"num_outputs": r.int(), "num_inputs": r.int()}
    params = r.tensor().ravel()
    weights, biases = r.alias_tensor(), r.alias_tensor()
    attrs["bias_mode"] = r.int()  # 0 = FC_HAS_BIAS, 1 = FC_NO_BIAS
    for _ in range(4):
        r.float()
    use_bias = (r.bool() if version == "fc_3" else True) and attrs["bias_mode"] == 0
    n = int(np.prod(weights))
    # dlib computes output = input @ W with W of shape (num_inputs, num_outputs)
    tensors = {"weight": params[:n].reshape(weights[0], weights[1])}
    if use_bias:
        tensors["bias"] = params[n:n + int(np.prod(biases))].copy()
    return Layer("fc", attrs, tensors)


def _read_relu(r: Reader, version: str) -> Layer:
    if version == "relu_2" and r.bool():
        raise DlibFormatError("disabled relu_ layers are not supported")
    return Layer("relu")


def read_layer(r: Reader) -> Layer:
    """Decode one computational layer's details (the part after its add_layer version)."""
    version = r.string()
    if version in ("con_4", "con_5", "con_6"):
        return _read_con(r, version)
    if version in ("affine_", "affine_2"):
        return _read_affine(r, version)
    if version in ("fc_2", "fc_3"):
        return _read_fc(r, version)
    if version in ("relu_", "relu_2"):
        return _read_relu(r, version)
    if version in ("max_pool_2", "avg_pool_2"):
        return _read_pool(r, version[:-2])
    if version == "add_prev_":
        return Layer("add_prev")
    raise DlibFormatError(f"unsupported dlib layer {version!r}")


def _skip_layer_state(r: Reader, add_layer_version: int, input_side: bool) -> None:
    """Skip what ``add_layer`` stores after its details: flags and cached (training) tensors."""
    for _ in range(3):
        r.bool()
    for _ in range(3):  # x_grad, cached_output, then params_grad or grad_final
        r.tensor()
    if input_side and add_layer_version >= 3:
        r.int()  # _sample_expansion_factor


def _read_loss(r: Reader) -> tuple[str, float]:
    """``loss_metric`` version and distance threshold (the old ``loss_metric_`` hard-coded 0.75)."""
    version = r.int()
    if version != 1:
        raise DlibFormatError(f"unsupported add_loss_layer version {version}")
    loss = r.string()
    if loss == "loss_metric_":
        return loss, 0.75
    if loss != "loss_metric_2":
        raise DlibFormatError(f"unsupported loss layer {loss!r}")
    r.float()  # margin
    return loss, r.float()


def _read_input(r: Reader) -> tuple[tuple[float, float, float], tuple[int, int] | None]:
    version = r.string()
    if version not in ("input_rgb_image", "input_rgb_image_sized"):
        raise DlibFormatError(f"unsupported input layer {version!r}")
    mean = (r.float(), r.float(), r.float())
    size = (r.int(), r.int()) if version == "input_rgb_image_sized" else None
    return mean, size


def parse_dnn(data: bytes) -> DlibNet:
    """Decode a dlib ``loss_metric`` network over an ``input_rgb_image[_sized]`` input layer."""
    r = Reader(data)
    loss, threshold = _read_loss(r)
    versions: list[int] = []
    while data[r.pos:r.pos + 1] == b"\x01" and data[r.pos + 1] in (1, 2, 3):
        # Every wrapper version is a one-byte integer; the input layer name that follows them
        # starts with its length (> 3), which ends the prefix.
        versions.append(r.int())
    if not versions or versions[-1] not in (2, 3):
        raise DlibFormatError("no input-side add_layer found")
    mean, size = _read_input(r)
    layers: list[Layer] = []
    while not r.at_end():
        layers.append(read_layer(r))
        _skip_layer_state(r, versions[-1], input_side=len(layers) == 1)
    n_add_layers = sum(v == 2 for v in versions[:-1]) + 1
    if n_add_layers != len(layers):
        raise DlibFormatError(f"{len(layers)} layers decoded but {n_add_layers} add_layer versions "
                              "found (add_layer version 1 files are not supported)")
    return DlibNet(loss, threshold, mean, size, layers, versions)


def read_dnn(path: str | Path) -> DlibNet:
    """:func:`parse_dnn` on a file's bytes."""
    return parse_dnn(Path(path).read_bytes())

