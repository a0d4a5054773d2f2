"""A decoder-with-past ONNX graph whose attention is onnxruntime's com.microsoft GroupQueryAttention op.

This is how onnxruntime-genai / onnx-community exports of Llama/Qwen models look: rotary applied inside the op
(do_rotary=1 with cos_cache/sin_cache), positions taken from the past length via seqlens_k, and no position_ids
input. No such model can be downloaded here, so `build_gqa_model` writes one from HF-named weights.

    from gqa_graph import build_gqa_model
    build_gqa_model(hf_config_dict, {hf_tensor_name: np.ndarray}, "out/model.onnx", kv_dtype="float32")

Graph I/O (Optimum names, no position_ids):
  input_ids                    int64  [batch_size, sequence_length]
  attention_mask               int64  [batch_size, total_sequence_length]   (past + new)
  past_key_values.N.key|value  kv     [batch_size, kv_heads, past_sequence_length, head_dim]
  -> logits                    float32 [batch_size, sequence_length, vocab]
  -> present.N.key|value       kv     [batch_size, kv_heads, total_sequence_length, head_dim]  (keys post-RoPE)
kv is float32, or float16 with kv_dtype="float16" (then the whole attention op runs in float16: query, key, value,
cos/sin caches; its output is cast back to float32 for the rest of the graph).

Conventions of the op as onnxruntime-node 1.30's CPU kernel runs it (each checked by test/engine/gqa.test.ts):
  - seqlens_k = ReduceSum(attention_mask, axis 1) - 1 (int32 [batch]); total_sequence_length = attention_mask.shape[1]
    (int32 scalar). Only each row's SUM and the mask's width are read: a zero inside the mask is not a hole, it just
    shortens the row from the right. So no slot of the past can be hidden; the past must be contiguous, in position order.
  - Row b's valid KV is slots [0, sum_b) (RIGHT padding). The S new tokens of row b are written at slots, and rotated
    to positions, sum_b - S ... sum_b - 1. Left padding is not supported (pads are taken as tokens and the next token
    overwrites a real one).
  - A first prompt is S == mask width: positions 0..S-1; the past may be empty ([B, kvH, 0, D] is accepted).
    A batch of rows of different lengths: right-pad input_ids, each row's mask sums to its length.
  - Decode (S = 1) works for any batch, each row at its own length (mask width = past length + 1).
  - S > 1 over a non-empty past needs batch 1 (the op refuses otherwise: "batch_size must be 1 when sequence_length > 1
    and past context is given").
  - present has max(mask width, past length) slots: with mask width = past + S it is past and new concatenated (a
    growing, non-shared past, as onnxruntime-genai's default CPU export). Slots of a row at or after sum_b are not
    carried over from the past (come back zero or pad KV).
  - Keys in present are post-RoPE at absolute positions (rotate_half pairs j, j + D/2; llama3/linear-scaled
    frequencies), so a key computed at p moves to q by R(q - p) as with an Optimum export.
  - total_sequence_length may not exceed cos_cache's rows (max_position_embeddings): the op refuses naming cos_cache.
  - head_dim must be a multiple of 16 with rotary inside the op (refused here up front); q/k/v go in separately
    (packed QKV would be the op's other form); q/k RMSNorm (Qwen3) is done with plain ops before the op.
  - float16: the CPU kernel has a float16 version, so with kv_dtype="float16" query/key/value, cos/sin and
    past/present are float16 (onnxruntime-node: Uint16Array tensors of type 'float16'); logits stay float32.
"""
from __future__ import annotations

import math
import os
from typing import Dict, List, Optional

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
MS_DOMAIN = "com.microsoft"
TWO_GB = 2 * 1024 ** 3


def rope_inv_freq(config: dict) -> np.ndarray:
    """Float32 inverse frequencies as transformers computes them (default, llama3 and linear rope_scaling)."""
    heads = config["num_attention_heads"]
    dim = int(config.get("head_dim") or config["hidden_size"] // heads)
    base = float(config.get("rope_theta", 10000.0))
    exponent = np.arange(0, dim, 2, dtype=np.int64).astype(np.float32) / np.float32(dim)
    inv_freq = (np.float32(1.0) / np.power(np.float32(base), exponent)).astype(np.float32)
    scaling = config.get("rope_scaling")
    if not scaling:
        return inv_freq
    kind = scaling.get("rope_type", scaling.get("type"))
    if kind in (None, "default"):
        return inv_freq
    if kind == "linear":
        return (inv_freq / np.float32(scaling["factor"])).astype(np.float32)
    if kind == "llama3":
        factor = np.float32(scaling["factor"])
        low = np.float32(scaling["low_freq_factor"])
        high = np.float32(scaling["high_freq_factor"])
        old_len = np.float32(scaling["original_max_position_embeddings"])
        low_wavelen = old_len / low
        high_wavelen = old_len / high
        wavelen = (np.float32(2 * math.pi) / inv_freq).astype(np.float32)
        scaled = np.where(wavelen > low_wavelen, inv_freq / factor, inv_freq).astype(np.float32)
        smooth = ((old_len / wavelen - low) / (high - low)).astype(np.float32)
        smoothed = ((np.float32(1) - smooth) * scaled / factor + smooth * scaled).astype(np.float32)
        medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
        return np.where(medium, smoothed, scaled).astype(np.float32)
    raise ValueError(f"config.json rope_scaling.rope_type {kind!r} is not supported (default, linear, llama3)")


def rope_cos_sin(config: dict, positions: int) -> tuple:
    """cos/sin caches [positions, head_dim/2] (float32 angles, as transformers' rotary embedding computes them)."""
    inv_freq = rope_inv_freq(config)
    t = np.arange(positions, dtype=np.float32)
    angles = np.outer(t, inv_freq).astype(np.float32)
    return np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)


class _Graph:
    def __init__(self) -> None:
        self.nodes: List[onnx.NodeProto] = []
        self.inits: List[onnx.TensorProto] = []
        self._names: Dict[str, int] = {}
        self._consts: Dict[tuple, str] = {}

    def name(self, base: str) -> str:
        n = self._names.get(base, 0)
        self._names[base] = n + 1
        return base if n == 0 else f"{base}_{n}"

    def init(self, name: str, array: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def const(self, value, dtype=np.int64) -> str:
        array = np.array(value, dtype=dtype)
        key = (array.dtype.str, array.shape, array.tobytes())
        if key not in self._consts:
            self._consts[key] = self.init(self.name("const"), array)
        return self._consts[key]

    def op(self, op_type: str, inputs: List[str], outputs: int = 1, name: Optional[str] = None,
           domain: Optional[str] = None, **attrs) -> object:
        base = name or op_type
        node_name = self.name(base)
        outs = [f"{node_name}/out{i}" if outputs > 1 else f"{node_name}/out" for i in range(outputs)]
        kwargs = dict(attrs)
        if domain:
            kwargs["domain"] = domain
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=node_name, **kwargs))
        return outs if outputs > 1 else outs[0]

    def rms_norm(self, x: str, weight: str, eps: float, name: str) -> str:
        sq = self.op("Mul", [x, x], name=f"{name}/sq")
        mean = self.op("ReduceMean", [sq], name=f"{name}/mean", axes=[-1], keepdims=1)
        var = self.op("Add", [mean, self.const(eps, np.float32)], name=f"{name}/add_eps")
        std = self.op("Sqrt", [var], name=f"{name}/sqrt")
        normed = self.op("Div", [x, std], name=f"{name}/div")
        return self.op("Mul", [normed, weight], name=f"{name}/scale")

    def linear(self, x: str, weights: dict, prefix: str, bias: bool) -> str:
        """HF Linear: weight [out, in] stored transposed as [in, out] for MatMul."""
        w = self.init(f"{prefix}.weight.T", _f32(weights[f"{prefix}.weight"]).T)
        y = self.op("MatMul", [x, w], name=f"{prefix}/MatMul")
        if bias:
            b = self.init(f"{prefix}.bias", _f32(weights[f"{prefix}.bias"]))
            y = self.op("Add", [y, b], name=f"{prefix}/Add")
        return y


def _f32(a) -> np.ndarray:
    return np.asarray(a, dtype=np.float32)


def build_gqa_model(config: dict, weights: dict, out_path: str, kv_dtype: str = "float32") -> None:
    """Write a GroupQueryAttention-op decoder-with-past graph (see the module docstring) to out_path."""
    if kv_dtype not in ("float32", "float16"):
        raise ValueError(f"kv_dtype must be float32 or float16, got {kv_dtype!r}")
    hidden = int(config["hidden_size"])
    layers = int(config["num_hidden_layers"])
    heads = int(config["num_attention_heads"])
    kv_heads = int(config.get("num_key_value_heads") or heads)
    head_dim = int(config.get("head_dim") or hidden // heads)
    vocab = int(config["vocab_size"])
    eps = float(config.get("rms_norm_eps", 1e-6))
    max_pos = int(config.get("max_position_embeddings", 2048))
    qkv_bias = bool(config.get("attention_bias", False))
    act = config.get("hidden_act", "silu")
    if act != "silu":
        raise ValueError(f"config.json hidden_act {act!r} is not supported (silu)")
    if heads % kv_heads:
        raise ValueError(f"config.json num_attention_heads {heads} is not a multiple of num_key_value_heads {kv_heads}")
    if head_dim % 16:
        raise ValueError(f"config.json head_dim {head_dim}: GroupQueryAttention with rotary needs a multiple of 16")
    if float(config.get("partial_rotary_factor", 1.0)) != 1.0:
        raise ValueError("config.json partial_rotary_factor is not supported (rotary over the whole head_dim only)")
    tied = bool(config.get("tie_word_embeddings", False)) or "lm_head.weight" not in weights
    kv_elem = TensorProto.FLOAT16 if kv_dtype == "float16" else TensorProto.FLOAT
    kv_np = np.float16 if kv_dtype == "float16" else np.float32

    g = _Graph()
    inputs = [
        helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch_size", "sequence_length"]),
        helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch_size", "total_sequence_length"]),
    ]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT,
                                             ["batch_size", "sequence_length", vocab])]
    for i in range(layers):
        for kind in ("key", "value"):
            inputs.append(helper.make_tensor_value_info(
                f"past_key_values.{i}.{kind}", kv_elem, ["batch_size", kv_heads, "past_sequence_length", head_dim]))
            outputs.append(helper.make_tensor_value_info(
                f"present.{i}.{kind}", kv_elem, ["batch_size", kv_heads, "total_sequence_length", head_dim]))

    # seqlens_k = sum(attention_mask) - 1 per row (int32); total_sequence_length = attention_mask's width (int32)
    mask_sum = g.op("ReduceSum", ["attention_mask", g.const([1])], name="mask/ReduceSum", keepdims=0)
    seqlens = g.op("Sub", [mask_sum, g.const(1)], name="mask/Sub")
    seqlens_k = g.op("Cast", [seqlens], name="mask/seqlens_k", to=TensorProto.INT32)
    mask_shape = g.op("Shape", ["attention_mask"], name="mask/Shape")
    total = g.op("Gather", [mask_shape, g.const(1)], name="mask/Gather", axis=0)
    total_len = g.op("Cast", [total], name="mask/total_sequence_length", to=TensorProto.INT32)

    cos, sin = rope_cos_sin(config, max_pos)
    cos_cache = g.init("cos_cache", cos.astype(kv_np))
    sin_cache = g.init("sin_cache", sin.astype(kv_np))

    embed = g.init("model.embed_tokens.weight", _f32(weights["model.embed_tokens.weight"]))
    x = g.op("Gather", [embed, "input_ids"], name="model.embed_tokens", axis=0)

    for i in range(layers):
        p = f"model.layers.{i}"
        ln1 = g.init(f"{p}.input_layernorm.weight", _f32(weights[f"{p}.input_layernorm.weight"]))
        h = g.rms_norm(x, ln1, eps, f"{p}/input_layernorm")
        q = g.linear(h, weights, f"{p}.self_attn.q_proj", qkv_bias)
        k = g.linear(h, weights, f"{p}.self_attn.k_proj", qkv_bias)
        v = g.linear(h, weights, f"{p}.self_attn.v_proj", qkv_bias)
        if f"{p}.self_attn.q_norm.weight" in weights:
            # Qwen3: RMSNorm over each head's head_dim, before rotary (which the op applies)
            for name, n_h in (("q", heads), ("k", kv_heads)):
                w = g.init(f"{p}.self_attn.{name}_norm.weight", _f32(weights[f"{p}.self_attn.{name}_norm.weight"]))
                src = q if name == "q" else k
                per_head = g.op("Reshape", [src, g.const([0, 0, n_h, head_dim])], name=f"{p}/{name}_norm/Reshape")
                normed = g.rms_norm(per_head, w, eps, f"{p}/{name}_norm")
                flat = g.op("Reshape", [normed, g.const([0, 0, n_h * head_dim])], name=f"{p}/{name}_norm/Flatten")
                if name == "q":
                    q = flat
                else:
                    k = flat
        if kv_dtype == "float16":
            q, k, v = (g.op("Cast", [t], name=f"{p}/attn/Cast_{n}", to=TensorProto.FLOAT16)
                       for t, n in ((q, "q"), (k, "k"), (v, "v")))
        node_name = g.name(f"{p}/attn/GroupQueryAttention")
        attn_out = f"{node_name}/output"
        g.nodes.append(helper.make_node(
            "GroupQueryAttention",
            [q, k, v, f"past_key_values.{i}.key", f"past_key_values.{i}.value", seqlens_k, total_len,
             cos_cache, sin_cache],
            [attn_out, f"present.{i}.key", f"present.{i}.value"],
            name=node_name, domain=MS_DOMAIN,
            num_heads=heads, kv_num_heads=kv_heads, do_rotary=1, rotary_interleaved=0,
            scale=float(1.0 / math.sqrt(head_dim))))
        if kv_dtype == "float16":
            attn_out = g.op("Cast", [attn_out], name=f"{p}/attn/Cast_out", to=TensorProto.FLOAT)
        o = g.linear(attn_out, weights, f"{p}.self_attn.o_proj", False)
        x = g.op("Add", [x, o], name=f"{p}/attn_residual")

        ln2 = g.init(f"{p}.post_attention_layernorm.weight", _f32(weights[f"{p}.post_attention_layernorm.weight"]))
        h = g.rms_norm(x, ln2, eps, f"{p}/post_attention_layernorm")
        gate = g.linear(h, weights, f"{p}.mlp.gate_proj", False)
        up = g.linear(h, weights, f"{p}.mlp.up_proj", False)
        silu = g.op("Mul", [gate, g.op("Sigmoid", [gate], name=f"{p}/mlp/Sigmoid")], name=f"{p}/mlp/silu")
        down = g.linear(g.op("Mul", [silu, up], name=f"{p}/mlp/gate_up"), weights, f"{p}.mlp.down_proj", False)
        x = g.op("Add", [x, down], name=f"{p}/mlp_residual")

    norm = g.init("model.norm.weight", _f32(weights["model.norm.weight"]))
    x = g.rms_norm(x, norm, eps, "model/norm")
    if tied:
        head = g.op("Transpose", [embed], name="lm_head/Transpose", perm=[1, 0])
    else:
        head = g.init("lm_head.weight.T", _f32(weights["lm_head.weight"]).T)
    g.nodes.append(helper.make_node("MatMul", [x, head], ["logits"], name="lm_head/MatMul"))

    graph = helper.make_graph(g.nodes, "gqa_decoder_with_past", inputs, outputs, initializer=g.inits)
    model = helper.make_model(graph, producer_name="epic-serve gqa_graph.py",
                              opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid(MS_DOMAIN, 1)])
    out_dir = os.path.dirname(os.path.abspath(out_path))
    os.makedirs(out_dir, exist_ok=True)
    size = sum(len(t.raw_data) for t in g.inits)
    if size > TWO_GB - (64 << 20):
        location = os.path.basename(out_path) + ".data"
        onnx.save_model(model, out_path, save_as_external_data=True, all_tensors_to_one_file=True,
                        location=location, size_threshold=1024)
    else:
        onnx.save_model(model, out_path)
    # the checker resolves ops of domains it knows; com.microsoft ops are not in onnx's registry and are skipped
    onnx.checker.check_model(out_path)
