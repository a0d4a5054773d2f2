"""int8 weights for a model folder: every MatMul whose B input is a 2-D float32 initializer becomes onnxruntime's
contrib op com.microsoft.DynamicQuantizeMatMul (issue #19).

    /usr/bin/python3 tools/model/quantize.py --model models/epic-qa --out .cache/int8/epic-qa

Weights: symmetric, per output column: for B [K, N], b_scale[n] = max_k |B[k, n]| / 127 and
B_int8 = round(B / b_scale) in [-127, 127], b_zero_point int8 zeros [N], no bias. onnxruntime quantizes A (the
activations) per call at run time (one uint8 scale and zero point over the whole tensor) and multiplies in int8 with
int32 accumulation. Everything else stays float32: the embedding's Gather (a tied head is its own transposed
initializer in our exports, so the head MatMul is quantized and the Gather is not), norms, RoPE, attention (its
MatMuls take activations, not initializers), KV.

Graphs rewritten: model_epic.onnx (primitive), model.onnx (stock) if present, and every graph under layers/ (the
per-layer graphs CacheBlend runs beside the primitive graph: quantized too, so a worker's KV comes from one set of
weights whichever graph computed it). Other files are copied as they are (reference.json / reference_logits.bin stay
the float32 model's), except MODEL_CARD.md and eval-*.txt (they describe the float32 model). config.json gets `_name_or_path` + "-int8" (the model id keys the KV store: float32 and int8 KV
must not mix) and epic.quantization.

Memory: the graph is loaded without its external data; tensors are read, quantized and written one at a time. A source
with external data (over 2 GB: bench/shapes/build.py's consolidate) is written with one external file beside the
graph (<graph>.data), appended tensor by tensor; an inline source (under 2 GB) is written inline (int8 is smaller).
The output is built in a temporary folder renamed into place.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

MS_DOMAIN = "com.microsoft"
METHOD = "dynamic, per-column symmetric"


def quantize_weight(w: np.ndarray, rows: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """B [K, N] float32 -> (int8 [K, N], scale float32 [N]); a column of zeros gets scale 1. Works in blocks of rows, so
    its float temporaries stay small beside a large weight (a 151,936-wide head is 545 MB)."""
    amax = np.zeros(w.shape[1], np.float32)
    for r in range(0, w.shape[0], rows):
        np.maximum(amax, np.abs(w[r:r + rows]).max(axis=0), out=amax)
    scale = np.where(amax > 0, amax / np.float32(127.0), np.float32(1.0)).astype(np.float32)
    q = np.empty(w.shape, np.int8)
    for r in range(0, w.shape[0], rows):
        q[r:r + rows] = np.clip(np.rint(w[r:r + rows] / scale), -127, 127)
    return q, scale


def uses_external(t: TensorProto) -> bool:
    return t.data_location == TensorProto.EXTERNAL


def read_tensor(t: TensorProto, base: str) -> np.ndarray:
    """One initializer's values; an external one read from its file at its offset (nothing else loaded)."""
    if not uses_external(t):
        return numpy_helper.to_array(t)
    info = {e.key: e.value for e in t.external_data}
    dtype = helper.tensor_dtype_to_np_dtype(t.data_type) if hasattr(helper, "tensor_dtype_to_np_dtype") \
        else onnx.mapping.TENSOR_TYPE_TO_NP_TYPE[t.data_type]
    count = int(np.prod(t.dims)) if len(t.dims) else 1
    with open(os.path.join(base, info["location"]), "rb") as f:
        f.seek(int(info.get("offset", 0)))
        arr = np.fromfile(f, dtype=dtype, count=count)
    return arr.reshape(tuple(t.dims))


def quantize_graph(src: str, dst: str) -> dict:
    """Rewrite one graph file; returns counts for the config note."""
    base = os.path.dirname(src)
    model = onnx.load(src, load_external_data=False)
    g = model.graph
    external = any(uses_external(t) for t in g.initializer)
    inits = {t.name: t for t in g.initializer}
    consumers: dict[str, int] = {}
    for n in g.node:
        for i in n.input:
            consumers[i] = consumers.get(i, 0) + 1
    targets = [n for n in g.node if n.op_type == "MatMul" and n.domain in ("", "ai.onnx") and len(n.input) == 2
               and n.input[1] in inits and inits[n.input[1]].data_type == TensorProto.FLOAT
               and len(inits[n.input[1]].dims) == 2]
    done: dict[str, tuple[str, str, str]] = {}  # float initializer -> (int8, scale, zero point) names
    new_inits: list[TensorProto] = []
    float_bytes = int8_bytes = 0
    for n in targets:
        b = n.input[1]
        if b not in done:
            w = read_tensor(inits[b], base)
            q, scale = quantize_weight(w)
            float_bytes += w.nbytes
            int8_bytes += q.nbytes + scale.nbytes + scale.size
            names = (b + "_int8", b + "_scale", b + "_zero_point")
            new_inits += [numpy_helper.from_array(q, names[0]), numpy_helper.from_array(scale, names[1]),
                          numpy_helper.from_array(np.zeros(scale.shape, np.int8), names[2])]
            done[b] = names
            del w, q
        a = n.input[0]
        name, outputs = n.name, list(n.output)
        n.Clear()
        n.CopyFrom(helper.make_node("DynamicQuantizeMatMul", [a, *done[b]], outputs, name=name, domain=MS_DOMAIN))
        consumers[b] -= 1
    # float weights no other node reads are dropped (a tied embedding read by a Gather would stay)
    keep = [t for t in g.initializer if not (t.name in done and consumers.get(t.name, 0) == 0)]
    del g.initializer[:]
    g.initializer.extend(keep)
    g.initializer.extend(new_inits)
    if not any(o.domain == MS_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    if external:
        write_external(model, base, dst)
    else:
        onnx.save_model(model, dst)
    return {"matmuls": len(targets), "weights": len(done), "float32_bytes": float_bytes, "int8_bytes": int8_bytes}


def write_external(model: onnx.ModelProto, src_base: str, dst: str) -> None:
    """Every initializer over 1 KB goes to dst + '.data', written tensor by tensor (one in memory at a time)."""
    loc = os.path.basename(dst) + ".data"
    with open(dst + ".data", "wb") as f:
        for t in model.graph.initializer:
            if uses_external(t):
                raw = read_tensor(t, src_base).tobytes()
            elif t.HasField("raw_data"):
                raw = t.raw_data
            else:
                continue  # typed fields (small constants): stay inline
            if len(raw) < 1024:
                if uses_external(t):
                    del t.external_data[:]
                    t.data_location = TensorProto.DEFAULT
                    t.raw_data = raw
                continue
            pad = (-f.tell()) % 64
            f.write(b"\0" * pad)
            offset = f.tell()
            f.write(raw)
            t.ClearField("raw_data")
            del t.external_data[:]
            t.data_location = TensorProto.EXTERNAL
            for k, v in (("location", loc), ("offset", str(offset)), ("length", str(len(raw)))):
                e = t.external_data.add()
                e.key, e.value = k, v
            del raw
    onnx.save_model(model, dst)


def graph_files(model_dir: str) -> list[str]:
    """Graph paths relative to the folder: top-level *.onnx and layers/*.onnx."""
    out = [f for f in sorted(os.listdir(model_dir)) if f.endswith(".onnx")]
    layers = os.path.join(model_dir, "layers")
    if os.path.isdir(layers):
        out += [os.path.join("layers", f) for f in sorted(os.listdir(layers)) if f.endswith(".onnx")]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="source model folder (float32 graphs)")
    ap.add_argument("--out", required=True, help="destination folder (replaced when the quantization finishes)")
    args = ap.parse_args()
    src = os.path.abspath(args.model)
    cfg_path = os.path.join(src, "config.json")
    if not os.path.isfile(cfg_path):
        sys.exit(f"quantize: {cfg_path}: no config.json")
    with open(cfg_path) as f:
        cfg = json.load(f)
    if (cfg.get("epic") or {}).get("quantization"):
        sys.exit(f"quantize: {cfg_path}: already quantized ({cfg['epic']['quantization']})")
    out = os.path.abspath(args.out)
    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="." + os.path.basename(out) + ".", dir=parent)
    try:
        os.chmod(tmp, 0o755)
        graphs = graph_files(src)
        # the float32 model's card and eval outputs describe it, not this one; the shape stamp is build.py's
        skip = set(graphs) | {g + ".data" for g in graphs} | {"config.json", ".shape-stamp", "MODEL_CARD.md"}
        for root, _dirs, files in os.walk(src):
            rel_root = os.path.relpath(root, src)
            for fn in files:
                rel = os.path.normpath(os.path.join(rel_root, fn))
                if rel in skip or (fn.startswith("eval-") and fn.endswith(".txt")):
                    continue
                os.makedirs(os.path.join(tmp, os.path.dirname(rel)), exist_ok=True)
                shutil.copyfile(os.path.join(src, rel), os.path.join(tmp, rel))
        matmuls = {}
        for rel in graphs:
            os.makedirs(os.path.join(tmp, os.path.dirname(rel)), exist_ok=True)
            counts = quantize_graph(os.path.join(src, rel), os.path.join(tmp, rel))
            print(f"quantize: {rel}: {counts['matmuls']} MatMuls -> DynamicQuantizeMatMul "
                  f"({counts['float32_bytes'] / 1e6:.1f} MB float32 -> {counts['int8_bytes'] / 1e6:.1f} MB int8)",
                  flush=True)
            matmuls[rel] = counts["matmuls"]
        name = cfg.get("_name_or_path") or os.path.basename(src.rstrip("/"))
        cfg["_name_or_path"] = f"{name}-int8"
        cfg.setdefault("epic", {})["quantization"] = {
            "weights": "int8", "method": METHOD, "op": f"{MS_DOMAIN}.DynamicQuantizeMatMul",
            "source": args.model, "source_id": name, "matmuls": matmuls,
            "note": "activations quantized per call by onnxruntime (uint8, per tensor); embedding Gather, norms, "
                    "attention and KV stay float32; reference files are the float32 model's",
        }
        with open(os.path.join(tmp, "config.json"), "w") as f:
            json.dump(cfg, f, indent=2)
            f.write("\n")
        if os.path.exists(out):
            shutil.rmtree(out)
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    print(f"quantize: {len(graphs)} graphs -> {out}", flush=True)


if __name__ == "__main__":
    main()
