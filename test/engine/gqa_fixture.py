"""Fixture for test/engine/gqa.test.ts: a tiny random HF-style model, its GroupQueryAttention-op graph
(tools/model/gqa_graph.py) and reference logits from an independent NumPy forward of the HF architecture.

    /usr/bin/python3 test/engine/gqa_fixture.py --out .cache/gqa-test/base --variant base [--kv-dtype float16]

Writes config.json, weights.npz (HF tensor names), model.onnx, reference.json (input ids, inverse frequencies,
shapes) and reference.bin (float32: logits [1,S,V], then per layer key and value [1,kvH,S,D], post-RoPE keys).
The reference is written from the architecture's description (float64), not from the graph builder or llama.py.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tools", "model"))
from gqa_graph import build_gqa_model  # noqa: E402

VARIANTS = {
    # Qwen2-like: q/k/v bias, untied lm_head, GQA 2:1, plain rope
    "base": dict(vocab_size=300, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                 head_dim=16, intermediate_size=128, rms_norm_eps=1e-6, rope_theta=10000.0, rope_scaling=None,
                 attention_bias=True, tie_word_embeddings=False, max_position_embeddings=2048,
                 hidden_act="silu", architectures=["Qwen2ForCausalLM"]),
    # Llama-3/Qwen3-like: llama3 rope scaling, q/k RMSNorm per head, head_dim != hidden/heads, GQA 4:1, tied
    "llama3-qknorm": dict(vocab_size=300, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                          num_key_value_heads=1, head_dim=32, intermediate_size=128, rms_norm_eps=1e-5,
                          rope_theta=10000.0,
                          rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0,
                                            high_freq_factor=4.0, original_max_position_embeddings=8192),
                          attention_bias=False, tie_word_embeddings=True, max_position_embeddings=2048,
                          hidden_act="silu", architectures=["LlamaForCausalLM"], qk_norm=True),
}
PROMPT = [17, 254, 3, 99, 180, 42, 7, 260, 131, 8, 77, 201]


def make_weights(c: dict, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    h, d, nh, kvh, ffn, vocab = (c["hidden_size"], c["head_dim"], c["num_attention_heads"],
                                 c["num_key_value_heads"], c["intermediate_size"], c["vocab_size"])

    def lin(out_f, in_f):
        return (rng.standard_normal((out_f, in_f)) / math.sqrt(in_f)).astype(np.float32)

    def norm(n):
        return (1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32)

    w = {"model.embed_tokens.weight": rng.standard_normal((vocab, h)).astype(np.float32)}
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}"
        w[f"{p}.input_layernorm.weight"] = norm(h)
        w[f"{p}.post_attention_layernorm.weight"] = norm(h)
        for name, out_f in (("q", nh * d), ("k", kvh * d), ("v", kvh * d)):
            w[f"{p}.self_attn.{name}_proj.weight"] = lin(out_f, h)
            if c["attention_bias"]:
                w[f"{p}.self_attn.{name}_proj.bias"] = (0.1 * rng.standard_normal(out_f)).astype(np.float32)
        w[f"{p}.self_attn.o_proj.weight"] = lin(h, nh * d)
        if c.get("qk_norm"):
            w[f"{p}.self_attn.q_norm.weight"] = norm(d)
            w[f"{p}.self_attn.k_norm.weight"] = norm(d)
        w[f"{p}.mlp.gate_proj.weight"] = lin(ffn, h)
        w[f"{p}.mlp.up_proj.weight"] = lin(ffn, h)
        w[f"{p}.mlp.down_proj.weight"] = lin(h, ffn)
    w["model.norm.weight"] = norm(h)
    if not c["tie_word_embeddings"]:
        w["lm_head.weight"] = lin(vocab, h)
    return w


# ---- independent NumPy reference (float64), from the HF architecture description ----

def inverse_frequencies(c: dict) -> np.ndarray:
    d = c["head_dim"]
    inv = 1.0 / (c["rope_theta"] ** (np.arange(0, d, 2, dtype=np.float64) / d))
    s = c.get("rope_scaling")
    if not s:
        return inv
    if s["rope_type"] == "linear":
        return inv / s["factor"]
    # llama3: long wavelengths divided by factor, short kept, the band between interpolated smoothly
    old = s["original_max_position_embeddings"]
    out = np.empty_like(inv)
    for j, f in enumerate(inv):
        wavelength = 2 * math.pi / f
        if wavelength < old / s["high_freq_factor"]:
            out[j] = f
        elif wavelength > old / s["low_freq_factor"]:
            out[j] = f / s["factor"]
        else:
            t = (old / wavelength - s["low_freq_factor"]) / (s["high_freq_factor"] - s["low_freq_factor"])
            out[j] = (1 - t) * f / s["factor"] + t * f
    return out


def rms(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def rope(x, positions, inv):
    """x [..., S, D], rotate_half convention: pairs (j, j + D/2)."""
    ang = positions[:, None].astype(np.float64) * inv[None, :]
    cos, sin = np.cos(ang), np.sin(ang)
    half = x.shape[-1] // 2
    a, b = x[..., :half], x[..., half:]
    return np.concatenate([a * cos - b * sin, b * cos + a * sin], axis=-1)


def reference_forward(c: dict, w: dict, ids: list):
    W = {k: v.astype(np.float64) for k, v in w.items()}
    S, nh, kvh, d, eps = len(ids), c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"], c["rms_norm_eps"]
    inv = inverse_frequencies(c)
    pos = np.arange(S)
    x = W["model.embed_tokens.weight"][ids]
    keys, values = [], []
    causal = np.triu(np.full((S, S), -np.inf), 1)
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}.self_attn"
        h = rms(x, W[f"model.layers.{i}.input_layernorm.weight"], eps)
        proj = {}
        for name in ("q", "k", "v"):
            y = h @ W[f"{p}.{name}_proj.weight"].T
            if c["attention_bias"]:
                y = y + W[f"{p}.{name}_proj.bias"]
            proj[name] = y.reshape(S, -1, d).transpose(1, 0, 2)  # [heads, S, d]
        q, k, v = proj["q"], proj["k"], proj["v"]
        if c.get("qk_norm"):
            q = rms(q, W[f"{p}.q_norm.weight"], eps)
            k = rms(k, W[f"{p}.k_norm.weight"], eps)
        q, k = rope(q, pos, inv), rope(k, pos, inv)
        keys.append(k)
        values.append(v)
        group = nh // kvh
        out = np.empty((nh, S, d))
        for head in range(nh):
            kv = head // group
            scores = q[head] @ k[kv].T / math.sqrt(d) + causal
            probs = np.exp(scores - scores.max(axis=-1, keepdims=True))
            probs /= probs.sum(axis=-1, keepdims=True)
            out[head] = probs @ v[kv]
        x = x + out.transpose(1, 0, 2).reshape(S, nh * d) @ W[f"{p}.o_proj.weight"].T
        m = f"model.layers.{i}.mlp"
        h = rms(x, W[f"model.layers.{i}.post_attention_layernorm.weight"], eps)
        gate = h @ W[f"{m}.gate_proj.weight"].T
        x = x + ((gate / (1 + np.exp(-gate))) * (h @ W[f"{m}.up_proj.weight"].T)) @ W[f"{m}.down_proj.weight"].T
    x = rms(x, W["model.norm.weight"], eps)
    head = W["model.embed_tokens.weight"] if c["tie_word_embeddings"] else W["lm_head.weight"]
    return x @ head.T, keys, values, inv


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--variant", choices=sorted(VARIANTS), default="base")
    ap.add_argument("--kv-dtype", choices=["float32", "float16"], default="float32")
    ap.add_argument("--seed", type=int, default=11)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    c = dict(VARIANTS[a.variant])
    w = make_weights(c, a.seed)
    hf_config = {k: v for k, v in c.items() if k != "qk_norm"}
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(hf_config, f, indent=2)
    np.savez(os.path.join(a.out, "weights.npz"), **w)
    build_gqa_model(hf_config, w, os.path.join(a.out, "model.onnx"), kv_dtype=a.kv_dtype)
    logits, keys, values, inv = reference_forward(c, w, PROMPT)
    parts = [logits[None]]
    for k, v in zip(keys, values):
        parts += [k[None], v[None]]
    with open(os.path.join(a.out, "reference.bin"), "wb") as f:
        for part in parts:
            f.write(np.ascontiguousarray(part, dtype=np.float32).tobytes())
    meta = dict(input_ids=PROMPT, inv_freq=inv.tolist(), logits_shape=[1, len(PROMPT), c["vocab_size"]],
                kv_shape=[1, c["num_key_value_heads"], len(PROMPT), c["head_dim"]],
                layers=c["num_hidden_layers"], kv_heads=c["num_key_value_heads"], head_dim=c["head_dim"],
                vocab=c["vocab_size"], kv_dtype=a.kv_dtype, variant=a.variant)
    with open(os.path.join(a.out, "reference.json"), "w") as f:
        json.dump(meta, f)


if __name__ == "__main__":
    main()
