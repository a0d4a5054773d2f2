"""Recover a training checkpoint from an exported model's stock graph, optionally grown by zero-output layers.

    /usr/bin/python3 tools/model/from_onnx.py --model models/epic-qa --out runs/base.pt
    /usr/bin/python3 tools/model/from_onnx.py --model models/epic-qa --out runs/grown.pt --layers 3

The ONNX exporter names each weight's MatMul node after its module (`/layers.0/self_attn/q_proj/MatMul`) while the
initializer itself gets an anonymous name (`onnx::MatMul_480`, stored transposed), so weights are found through the
node that consumes them.  The recovered model is checked against onnxruntime on the stock graph before it is saved.

`--layers N` (N > the model's layers) appends blocks whose output projections (`o_proj`, `down_proj`) are zero: each
new block adds nothing to the residual stream, so the grown model computes exactly what the recovered one does, and
training can then give the new depth a use (a two-hop question needs a lookup whose query is the first lookup's answer).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
import onnx
import torch
from onnx import numpy_helper

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from llama import Llama, LlamaConfig  # noqa: E402


def recover(model_dir: str) -> tuple[Llama, LlamaConfig, dict]:
    with open(os.path.join(model_dir, "config.json")) as f:
        hf = json.load(f)
    cfg = LlamaConfig.from_hf(hf)
    g = onnx.load(os.path.join(model_dir, hf.get("epic", {}).get("graphs", {}).get("stock", "model.onnx"))).graph
    inits = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    sd: dict[str, torch.Tensor] = {}
    for name, arr in inits.items():  # named initializers: embeddings and norms keep their module path
        if name.startswith("m."):
            sd[name[2:]] = torch.from_numpy(arr.copy())
    for node in g.node:  # linear weights: the MatMul node's name is the module path
        if node.op_type != "MatMul":
            continue
        w = [x for x in node.input if x in inits]
        if not w:
            continue
        module = node.name.strip("/").rsplit("/MatMul", 1)[0].replace("/", ".")
        sd[module + ".weight"] = torch.from_numpy(inits[w[0]].T.copy())
    model = Llama(cfg)
    missing = set(model.state_dict()) - set(sd)
    if missing:
        raise SystemExit(f"weights not found in the graph: {sorted(missing)}")
    model.load_state_dict(sd)
    return model, cfg, hf


@torch.no_grad()
def reference_error(model: Llama, ref: dict, blob: np.ndarray) -> float:
    """Largest |logit difference| against the reference logits export.py wrote (torch fp32, same input)."""
    shape = ref["logits_shape"]
    want = torch.from_numpy(blob[:int(np.prod(shape))].reshape(shape))
    got = model(torch.tensor([ref["input_ids"]]))
    return (got - want).abs().max().item()


def grow(model: Llama, cfg: LlamaConfig, layers: int, seed: int) -> tuple[Llama, LlamaConfig]:
    d = cfg.to_hf()
    d["num_hidden_layers"] = layers
    c2 = LlamaConfig.from_hf(d)
    torch.manual_seed(seed)
    big = Llama(c2)
    sd = big.state_dict()
    sd.update(model.state_dict())
    for i in range(cfg.num_hidden_layers, layers):
        sd[f"layers.{i}.self_attn.o_proj.weight"].zero_()
        sd[f"layers.{i}.mlp.down_proj.weight"].zero_()
    big.load_state_dict(sd)
    return big, c2


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="models/epic-qa")
    ap.add_argument("--out", required=True)
    ap.add_argument("--layers", type=int, default=0, help="grow to this many layers (new blocks output zero)")
    ap.add_argument("--seed", type=int, default=99, help="initialises the new blocks' input weights")
    a = ap.parse_args()
    model, cfg, hf = recover(a.model)
    with open(os.path.join(a.model, "tokenizer.json")) as f:
        shipped = json.load(f)["model"]["vocab"]
    ids = torch.tensor([[1] + [(7 * i) % (cfg.vocab_size - 5) + 5 for i in range(40)]])
    with torch.no_grad():
        ref = model(ids)
    if a.layers > cfg.num_hidden_layers:
        model, cfg = grow(model, cfg, a.layers, a.seed)
        with torch.no_grad():
            diff = (model(ids) - ref).abs().max().item()
        print(f"grown to {a.layers} layers; max |logit change| {diff:.2e}")
        if diff >= 1e-4:
            raise SystemExit(f"growing changed the logits by {diff:.2e}: the new blocks are not zero-output")
    # the recovered weights must reproduce the model's committed reference logits (export.py wrote them)
    with open(os.path.join(a.model, "reference.json")) as f:
        rj = json.load(f)
    rl = np.fromfile(os.path.join(a.model, "reference_logits.bin"), dtype="<f4")
    err = reference_error(model, rj, rl)
    print(f"reference logits: max |diff| {err:.2e}")
    if err >= 1e-3:
        raise SystemExit(f"the recovered weights do not reproduce the reference logits (max |diff| {err:.2e})")
    card = dict(hf.get("epic", {}))
    card["recovered_from"] = a.model
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    torch.save({"config": cfg.to_hf(), "state_dict": model.state_dict(), "vocab": shipped, "card": card}, a.out)
    print(f"wrote {a.out} ({cfg.num_hidden_layers} layers)")


if __name__ == "__main__":
    main()
