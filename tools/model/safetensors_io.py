"""Read and write Hugging Face checkpoints in the safetensors format, with NumPy only (nothing from PyPI).

A safetensors file is an 8-byte little-endian header length N, N bytes of JSON
``{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}``, then the raw little-endian
tensor bytes (offsets relative to the end of the header).  A sharded checkpoint has ``model.safetensors.index.json``
whose ``weight_map`` names the shard file of every tensor.

    config, weights = read_checkpoint("path/to/hf-folder")     # weights: {name: float32 ndarray}
    write_safetensors("model.safetensors", {"w": array}, metadata={"format": "pt"})

Every error is a ``CheckpointError`` whose message names the file (and the tensor, where one is at fault).
"""
from __future__ import annotations

import json
import os
import struct

import numpy as np

# dtype name -> (numpy dtype as stored, bytes per element)
_DTYPES = {
    "F32": (np.dtype("<f4"), 4),
    "F16": (np.dtype("<f2"), 2),
    "BF16": (np.dtype("<u2"), 2),  # raw bits; widened to float32 by shifting into the high half
    "F64": (np.dtype("<f8"), 8),
    "I64": (np.dtype("<i8"), 8),
    "I32": (np.dtype("<i4"), 4),
    "I8": (np.dtype("i1"), 1),
    "U8": (np.dtype("u1"), 1),
    "BOOL": (np.dtype("?"), 1),
}
_FLOAT_OUT = {"F32", "F16", "BF16", "F64"}
_MAX_HEADER = 100 * 1024 * 1024


class CheckpointError(Exception):
    """A checkpoint that cannot be read; the message names the file."""


def bf16_to_f32(bits: np.ndarray) -> np.ndarray:
    return (bits.astype(np.uint32) << 16).view(np.float32)


def f32_to_bf16(x: np.ndarray) -> np.ndarray:
    """float32 -> bf16 bits, round to nearest even (NaN kept NaN)."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    nan = np.isnan(x)
    if nan.any():
        rounded = np.where(nan, np.uint16(0x7FC0), rounded)
    return rounded


def read_header(path: str) -> tuple[dict, int, int]:
    """(header dict, data start offset, file size)."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise CheckpointError(f"{path}: truncated safetensors file ({size} bytes, no 8-byte header length)")
            (n,) = struct.unpack("<Q", head)
            if n > _MAX_HEADER or 8 + n > size:
                raise CheckpointError(f"{path}: truncated safetensors file: header length {n} runs past the end "
                                      f"of the file ({size} bytes)")
            raw = f.read(n)
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read safetensors file ({e.strerror or e})") from e
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: bad safetensors header JSON ({e})") from e
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: bad safetensors header JSON (not an object)")
    return header, 8 + n, size


def read_safetensors(path: str, names: set[str] | None = None) -> dict[str, np.ndarray]:
    """Tensors of one file (only `names` when given); float types widened to float32, others as stored."""
    header, start, size = read_header(path)
    out: dict[str, np.ndarray] = {}
    with open(path, "rb") as f:
        for name, info in header.items():
            if name == "__metadata__" or (names is not None and name not in names):
                continue
            if not isinstance(info, dict) or not {"dtype", "shape", "data_offsets"} <= set(info):
                raise CheckpointError(f"{path}: bad safetensors header entry for tensor {name}")
            dtype = info["dtype"]
            if dtype not in _DTYPES:
                raise CheckpointError(f"{path}: tensor {name} has unknown dtype {dtype!r} "
                                      f"(supported: {', '.join(sorted(_DTYPES))})")
            np_dtype, width = _DTYPES[dtype]
            shape = [int(s) for s in info["shape"]]
            begin, end = (int(o) for o in info["data_offsets"])
            count = int(np.prod(shape)) if shape else 1
            if end < begin or end - begin != count * width:
                raise CheckpointError(f"{path}: tensor {name} shape {shape} ({dtype}) needs {count * width} bytes but "
                                      f"its data_offsets [{begin}, {end}] span {end - begin}")
            if start + end > size:
                raise CheckpointError(f"{path}: truncated safetensors file: tensor {name} data_offsets end {end} "
                                      f"runs past the end of the data ({size - start} bytes)")
            f.seek(start + begin)
            buf = f.read(end - begin)
            if len(buf) != end - begin:
                raise CheckpointError(f"{path}: truncated safetensors file while reading tensor {name}")
            a = np.frombuffer(buf, dtype=np_dtype).reshape(shape)
            if dtype == "BF16":
                a = bf16_to_f32(a)
            elif dtype in _FLOAT_OUT:
                a = a.astype(np.float32)
            out[name] = a.copy() if not a.flags.writeable else a
    return out


def read_weights(folder: str) -> dict[str, np.ndarray]:
    """Every tensor of a checkpoint folder: model.safetensors, or the shards named by model.safetensors.index.json."""
    index = os.path.join(folder, "model.safetensors.index.json")
    single = os.path.join(folder, "model.safetensors")
    if os.path.exists(index):
        try:
            with open(index) as f:
                weight_map = json.load(f)["weight_map"]
            if not isinstance(weight_map, dict):
                raise TypeError("weight_map is not an object")
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise CheckpointError(f"{index}: cannot read the shard index ({e})") from e
        shards: dict[str, set[str]] = {}
        for name, shard in weight_map.items():
            shards.setdefault(shard, set()).add(name)
        out: dict[str, np.ndarray] = {}
        for shard, names in sorted(shards.items()):
            path = os.path.join(folder, shard)
            if not os.path.exists(path):
                raise CheckpointError(f"{path}: missing shard (named in {index} for {len(names)} tensors, "
                                      f"e.g. {sorted(names)[0]})")
            got = read_safetensors(path, names)
            lost = names - set(got)
            if lost:
                raise CheckpointError(f"{path}: tensor {sorted(lost)[0]} is listed in {index} but not in the shard")
            out.update(got)
        return out
    if os.path.exists(single):
        return read_safetensors(single)
    raise CheckpointError(f"{single}: no weights (neither model.safetensors nor model.safetensors.index.json in "
                          f"{folder})")


def read_checkpoint(folder: str) -> tuple[dict, dict[str, np.ndarray]]:
    """(config.json as a dict, {tensor name: ndarray}) of a Hugging Face checkpoint folder."""
    cfg_path = os.path.join(folder, "config.json")
    try:
        with open(cfg_path) as f:
            config = json.load(f)
    except OSError as e:
        raise CheckpointError(f"{cfg_path}: cannot read config ({e.strerror or e})") from e
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{cfg_path}: bad JSON ({e})") from e
    return config, read_weights(folder)


_WRITE = {
    np.dtype("float32"): "F32",
    np.dtype("float16"): "F16",
    np.dtype("float64"): "F64",
    np.dtype("int64"): "I64",
    np.dtype("int32"): "I32",
}


def write_safetensors(path: str, tensors: dict[str, np.ndarray], metadata: dict | None = None,
                      dtype: str | None = None) -> None:
    """Write tensors (sorted by name) to one file. `dtype` "BF16" / "F16" / "F32" converts float tensors."""
    header: dict = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    blobs = []
    offset = 0
    for name in sorted(tensors):
        a = np.asarray(tensors[name])
        if dtype == "BF16" and a.dtype.kind == "f":
            raw, tag = f32_to_bf16(a.astype(np.float32)).astype("<u2").tobytes(), "BF16"
        elif dtype == "F16" and a.dtype.kind == "f":
            raw, tag = a.astype("<f2").tobytes(), "F16"
        elif dtype == "F32" and a.dtype.kind == "f":
            raw, tag = a.astype("<f4").tobytes(), "F32"
        else:
            if a.dtype not in _WRITE:
                raise CheckpointError(f"{path}: cannot write tensor {name} of dtype {a.dtype}")
            tag = _WRITE[a.dtype]
            raw = a.astype(a.dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": tag, "shape": list(a.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)  # data starts 8-byte aligned, as the reference writer does
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for raw in blobs:
            f.write(raw)
