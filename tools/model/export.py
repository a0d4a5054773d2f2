"""Export a Llama checkpoint (or a seeded random model) to the project's model layout.

    /usr/bin/python3 tools/model/export.py --out models/tiny-random --random --seed 7
    /usr/bin/python3 tools/model/export.py --out models/epic-qa --checkpoint runs/qa/final.pt

Writes, in the Hugging Face layout:
  model.onnx        stock Optimum decoder-with-past: input_ids, attention_mask, position_ids,
                    past_key_values.{i}.key|value -> logits, present.{i}.key|value (keys post-RoPE)
  model_epic.onnx   the engine primitive: input_ids, position_ids, attn_bias [B,1,S,P+S], logits_index [B,L],
                    past_key_values.{i}.key|value -> logits [B,L,V] (of the tokens logits_index names),
                    new_key_values.{i}.key|value (the S new tokens only, so a caller's preallocated cache is never
                    concatenated or copied by the graph). Graphs exported before 2026-12-05 (models/tiny-random) have
                    no logits_index and return every token's logits; the engine takes both.
  config.json, tokenizer.json, tokenizer_config.json
  layers/            per-layer graphs for modes that need control between layers (CacheBlend):
                    embed.onnx (input_ids -> hidden), layer_{i}.onnx (hidden, position_ids, attn_bias, past_key,
                    past_value -> hidden, new_key, new_value), kv_{i}.onnx (hidden, position_ids -> key, value: the
                    layer's input norm, k/v projections and RoPE only), head.onnx (hidden -> logits)
  reference.json + reference_logits.bin   torch fp32 logits for fixed inputs, for the engine's tests
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from llama import Llama, LlamaConfig, apply_rope, causal_bias_from_mask, save_config  # noqa: E402
from wordpiece import WordPiece  # noqa: E402

OPSET = 17
GENERIC_WORDS = ("the a an of to in and is was on for with by at from as it that this he she they his her their "
                 "what where who when which lives works born city company Q A : . , ?").split()


class StockGraph(torch.nn.Module):
    def __init__(self, m: Llama):
        super().__init__()
        self.m = m

    def forward(self, input_ids, attention_mask, position_ids, *past_flat):
        past = [(past_flat[2 * i], past_flat[2 * i + 1]) for i in range(self.m.c.num_hidden_layers)]
        bias = causal_bias_from_mask(attention_mask, input_ids.shape[1])
        logits, new = self.m.step(input_ids, position_ids, bias, past)
        out = [logits]
        for (pk, pv), (k, v) in zip(past, new):
            out += [torch.cat([pk, k], dim=2), torch.cat([pv, v], dim=2)]
        return tuple(out)


class PrimitiveGraph(torch.nn.Module):
    def __init__(self, m: Llama):
        super().__init__()
        self.m = m

    def forward(self, input_ids, position_ids, attn_bias, logits_index, *past_flat):
        past = [(past_flat[2 * i], past_flat[2 * i + 1]) for i in range(self.m.c.num_hidden_layers)]
        logits, new = self.m.step(input_ids, position_ids, attn_bias, past, logits_index)
        out = [logits]
        for k, v in new:
            out += [k, v]
        return tuple(out)


class EmbedGraph(torch.nn.Module):
    def __init__(self, m: Llama):
        super().__init__()
        self.m = m

    def forward(self, input_ids):
        return self.m.embed_tokens(input_ids)


class LayerGraph(torch.nn.Module):
    def __init__(self, m: Llama, i: int):
        super().__init__()
        self.m, self.layer = m, m.layers[i]

    def forward(self, hidden, position_ids, attn_bias, past_key, past_value):
        cos, sin = self.m.cos_sin(position_ids)
        return self.layer(hidden, cos, sin, past_key, past_value, attn_bias)


class KVGraph(torch.nn.Module):
    def __init__(self, m: Llama, i: int):
        super().__init__()
        self.m, self.layer = m, m.layers[i]

    def forward(self, hidden, position_ids):
        c = self.m.c
        b, s, _ = hidden.shape
        cos, sin = self.m.cos_sin(position_ids)
        x = self.layer.input_layernorm(hidden)
        a = self.layer.self_attn
        k = a.k_proj(x).view(b, s, c.num_key_value_heads, c.head_dim)
        if c.qk_norm:
            k = a.k_norm(k)
        k = k.transpose(1, 2)
        v = a.v_proj(x).view(b, s, c.num_key_value_heads, c.head_dim).transpose(1, 2)
        return apply_rope(k, cos, sin), v


class HeadGraph(torch.nn.Module):
    def __init__(self, m: Llama):
        super().__init__()
        self.m = m

    def forward(self, hidden):
        return self.m.lm_head(self.m.norm(hidden))


def export_layer_graphs(m: Llama, out: str):
    c = m.c
    d = os.path.join(out, "layers")
    os.makedirs(d, exist_ok=True)
    b, s, p = 1, 3, 5
    ids = torch.randint(0, c.vocab_size, (b, s))
    hidden = torch.randn(b, s, c.hidden_size)
    pos = torch.arange(p, p + s).unsqueeze(0)
    bias = torch.zeros(b, 1, s, p + s)
    pk = torch.randn(b, c.num_key_value_heads, p, c.head_dim)
    pv = torch.randn(b, c.num_key_value_heads, p, c.head_dim)
    bs = {0: "batch", 1: "sequence_length"}
    torch.onnx.export(EmbedGraph(m), (ids,), os.path.join(d, "embed.onnx"), opset_version=OPSET,
                      input_names=["input_ids"], output_names=["hidden"], dynamic_axes={"input_ids": bs, "hidden": bs})
    torch.onnx.export(HeadGraph(m), (hidden,), os.path.join(d, "head.onnx"), opset_version=OPSET,
                      input_names=["hidden"], output_names=["logits"], dynamic_axes={"hidden": bs, "logits": bs})
    kv = {0: "batch", 2: "sequence_length"}
    for i in range(c.num_hidden_layers):
        torch.onnx.export(
            LayerGraph(m, i), (hidden, pos, bias, pk, pv), os.path.join(d, f"layer_{i}.onnx"), opset_version=OPSET,
            input_names=["hidden", "position_ids", "attn_bias", "past_key", "past_value"],
            output_names=["hidden_out", "new_key", "new_value"],
            dynamic_axes={"hidden": bs, "position_ids": bs, "hidden_out": bs,
                          "attn_bias": {0: "batch", 2: "sequence_length", 3: "total_sequence_length"},
                          "past_key": {0: "batch", 2: "past_sequence_length"},
                          "past_value": {0: "batch", 2: "past_sequence_length"},
                          "new_key": kv, "new_value": kv})
        torch.onnx.export(
            KVGraph(m, i), (hidden, pos), os.path.join(d, f"kv_{i}.onnx"), opset_version=OPSET,
            input_names=["hidden", "position_ids"], output_names=["key", "value"],
            dynamic_axes={"hidden": bs, "position_ids": bs, "key": kv, "value": kv})


def past_names(c: LlamaConfig, prefix: str):
    names = []
    for i in range(c.num_hidden_layers):
        names += [f"{prefix}.{i}.key", f"{prefix}.{i}.value"]
    return names


def export_graphs(m: Llama, out: str, stock_only: bool = False):
    """model.onnx (stock) and, unless stock_only, model_epic.onnx (primitive); single files (no external data)."""
    c = m.c
    m.eval()
    b, s, p = 1, 3, 5  # trace with past length != sequence length
    ids = torch.randint(0, c.vocab_size, (b, s))
    pos = torch.arange(p, p + s).unsqueeze(0)
    past = []
    for _ in range(c.num_hidden_layers):
        past += [torch.randn(b, c.num_key_value_heads, p, c.head_dim), torch.randn(b, c.num_key_value_heads, p, c.head_dim)]
    in_past = past_names(c, "past_key_values")
    dyn_past = {n: {0: "batch", 2: "past_sequence_length"} for n in in_past}

    mask = torch.ones(b, p + s, dtype=torch.int64)
    present = past_names(c, "present")
    torch.onnx.export(
        StockGraph(m), (ids, mask, pos, *past), os.path.join(out, "model.onnx"), opset_version=OPSET,
        input_names=["input_ids", "attention_mask", "position_ids", *in_past],
        output_names=["logits", *present],
        dynamic_axes={"input_ids": {0: "batch", 1: "sequence_length"},
                      "attention_mask": {0: "batch", 1: "total_sequence_length"},
                      "position_ids": {0: "batch", 1: "sequence_length"},
                      "logits": {0: "batch", 1: "sequence_length"},
                      **dyn_past, **{n: {0: "batch", 2: "total_sequence_length"} for n in present}},
    )
    if stock_only:
        return
    bias = torch.zeros(b, 1, s, p + s)
    # traced with L = 2 of S = 3 (a length equal to S could be folded into the graph)
    logits_index = torch.tensor([[0, s - 1]] * b, dtype=torch.int64)
    new = past_names(c, "new_key_values")
    torch.onnx.export(
        PrimitiveGraph(m), (ids, pos, bias, logits_index, *past), os.path.join(out, "model_epic.onnx"), opset_version=OPSET,
        input_names=["input_ids", "position_ids", "attn_bias", "logits_index", *in_past],
        output_names=["logits", *new],
        dynamic_axes={"input_ids": {0: "batch", 1: "sequence_length"},
                      "position_ids": {0: "batch", 1: "sequence_length"},
                      "attn_bias": {0: "batch", 2: "sequence_length", 3: "total_sequence_length"},
                      "logits_index": {0: "batch", 1: "logits_length"},
                      "logits": {0: "batch", 1: "logits_length"},
                      **dyn_past, **{n: {0: "batch", 2: "sequence_length"} for n in new}},
    )


def kv_to_float16(path: str):
    """Rewrite a stock graph so its past_key_values.* inputs and present.* outputs are float16 (as onnx-community's
    fp16 exports are): the float32 graph inside is wrapped with Cast nodes at its KV inputs and outputs."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(path)
    g = model.graph
    casts = []
    for inp in g.input:
        if inp.name.startswith("past_key_values."):
            inner = inp.name + "_f32"
            for node in g.node:
                node.input[:] = [inner if x == inp.name else x for x in node.input]
            casts.append(helper.make_node("Cast", [inp.name], [inner], to=TensorProto.FLOAT, name=f"cast_in_{inp.name}"))
            inp.type.tensor_type.elem_type = TensorProto.FLOAT16
    tail = []
    for o in g.output:
        if o.name.startswith("present."):
            inner = o.name + "_f32"
            for node in g.node:
                node.output[:] = [inner if x == o.name else x for x in node.output]
                node.input[:] = [inner if x == o.name else x for x in node.input]
            tail.append(helper.make_node("Cast", [inner], [o.name], to=TensorProto.FLOAT16, name=f"cast_out_{o.name}"))
            o.type.tensor_type.elem_type = TensorProto.FLOAT16
    nodes = casts + list(g.node) + tail
    del g.node[:]
    g.node.extend(nodes)
    onnx.checker.check_model(model)
    onnx.save_model(model, path)


@torch.no_grad()
def write_reference(m: Llama, tok, out: str, seed: int, text: str | None = None, text_ids: list[int] | None = None):
    """Torch fp32 logits and KV for fixed inputs: one prefill from position 0 and the same text's tokenisation.

    tok: a tokenizer with encode(text) (the project's WordPiece), or None with text/text_ids given (or neither:
    an imported model whose tokenizer Python cannot run)."""
    g = torch.Generator().manual_seed(seed)
    c = m.c
    n = 24
    ids = torch.cat([torch.tensor([c.bos_token_id]), torch.randint(5, c.vocab_size, (n - 1,), generator=g)]).unsqueeze(0)
    logits = m(ids)  # [1, n, V]
    _, kv = m.step(ids, torch.arange(n).unsqueeze(0), causal_bias_from_mask(torch.ones(1, n, dtype=torch.int64), n),
                   m.empty_past(1))
    blobs = [logits.reshape(-1)]
    for k, v in kv:
        blobs += [k.reshape(-1), v.reshape(-1)]
    np.concatenate([t.numpy().astype("<f4") for t in blobs]).tofile(os.path.join(out, "reference_logits.bin"))
    if text is None:
        text = "Q: where does Mira live? A: she lives in the city of Lisbon, 42 km away."
    if tok is not None:
        text_ids = tok.encode(text)
    ref = {
        "framework": f"torch {torch.__version__}",
        "dtype": "float32",
        "input_ids": ids[0].tolist(),
        "logits_shape": list(logits.shape),
        "kv_shape": [1, c.num_key_value_heads, n, c.head_dim],
        "layout": "logits, then per layer key then value, little-endian float32",
    }
    if text_ids is not None:
        ref.update(tokenizer_text=text, tokenizer_ids=list(text_ids))
    with open(os.path.join(out, "reference.json"), "w") as f:
        json.dump(ref, f, indent=2)
        f.write("\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--checkpoint", help="a .pt saved by train.py ({config, state_dict, vocab})")
    ap.add_argument("--random", action="store_true", help="export a seeded, untrained model (test fixture)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--name", default=None, help="model id written to config.json (default: the folder name)")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    torch.manual_seed(a.seed)
    if a.checkpoint:
        ck = torch.load(a.checkpoint, map_location="cpu")
        c = LlamaConfig.from_hf(ck["config"])
        tok = WordPiece.load(os.path.dirname(a.checkpoint)) if "vocab" not in ck else WordPiece([])
        if "vocab" in ck:
            tok.vocab = ck["vocab"]
            tok.inv = sorted(ck["vocab"], key=ck["vocab"].get)
        m = Llama(c)
        m.load_state_dict(ck["state_dict"])
        extra = ck.get("card", {})
    elif a.random:
        tok = WordPiece(GENERIC_WORDS)
        c = LlamaConfig(vocab_size=len(tok), hidden_size=a.hidden, num_hidden_layers=a.layers,
                        num_attention_heads=a.heads, num_key_value_heads=a.kv_heads, intermediate_size=a.hidden * 3,
                        max_position_embeddings=4096)
        m = Llama(c)
        extra = {}
    else:
        ap.error("one of --checkpoint or --random")
    m.eval()
    export_graphs(m, a.out)
    export_layer_graphs(m, a.out)
    name = a.name or os.path.basename(os.path.normpath(a.out))
    save_config(c, os.path.join(a.out, "config.json"), _name_or_path=name,
                epic={"graphs": {"stock": "model.onnx", "primitive": "model_epic.onnx",
                                 "layers": {"embed": "layers/embed.onnx", "layer": "layers/layer_{i}.onnx",
                                            "kv": "layers/kv_{i}.onnx", "head": "layers/head.onnx"}},
                      "rope_style": "rotate_half", "sink_token_id": tok.vocab["<sink>"], **extra})
    tok.save(a.out, c.max_position_embeddings)
    write_reference(m, tok, a.out, a.seed)
    print(f"exported {name}: {sum(p.numel() for p in m.parameters())} parameters, vocab {len(tok)} -> {a.out}")


if __name__ == "__main__":
    main()
