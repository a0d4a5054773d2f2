"""An independent NumPy forward pass of the Hugging Face decoder families (Llama, Mistral, Qwen2, Qwen3).

Written from the architecture's description, not from llama.py or torch, to check the importer's graphs against:

    h = embed[ids]
    per layer:  a = RMSNorm(h) ; q, k, v = a Wq^T (+bq), a Wk^T (+bk), a Wv^T (+bv)     split into heads
                (Qwen3) q, k = RMSNorm_head(q), RMSNorm_head(k)                         over head_dim, before RoPE
                q, k = q cos + rotate_half(q) sin, ...                                   rotate_half pairs i, i + d/2
                each query head g attends (causal, softmax(q k^T / sqrt(d))) to kv head g // (H / Hkv)
                h = h + concat(heads) Wo^T
                h = h + Wdown (silu(Wgate RMSNorm(h)) * Wup RMSNorm(h))
    logits = RMSNorm(h) Wlm^T          (Wlm = embed when tie_word_embeddings)

RoPE frequencies: inv_freq_i = theta^(-2i/d); rope_scaling "linear" divides them by factor; "llama3" keeps high
frequencies (wavelength < original_max_position_embeddings / high_freq_factor), divides low ones (wavelength >
original / low_freq_factor) by factor and interpolates between, by (original / wavelength - low) / (high - low).
Computed in float64 throughout.

    /usr/bin/python3 tools/model/hf_numpy.py --from CHECKPOINT --ids 128000,1,2,3
"""
from __future__ import annotations

import argparse
import math
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from safetensors_io import read_checkpoint  # noqa: E402


def inverse_frequencies(config: dict, head_dim: int) -> np.ndarray:
    theta = float(config.get("rope_theta", 10000.0))
    inv = theta ** (-np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    scaling = config.get("rope_scaling") or {}
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    if kind == "default":
        return inv
    if kind == "linear":
        return inv / scaling["factor"]
    if kind == "llama3":
        factor = scaling["factor"]
        low, high = scaling["low_freq_factor"], scaling["high_freq_factor"]
        original = scaling["original_max_position_embeddings"]
        out = np.empty_like(inv)
        for i, f in enumerate(inv):
            wavelength = 2 * math.pi / f
            if wavelength < original / high:
                out[i] = f
            elif wavelength > original / low:
                out[i] = f / factor
            else:
                t = (original / wavelength - low) / (high - low)
                out[i] = (1 - t) * f / factor + t * f
        return out
    raise ValueError(f"rope_scaling type {kind!r} not implemented here")


def rms_norm(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def rotate_half(x: np.ndarray) -> np.ndarray:
    h = x.shape[-1] // 2
    return np.concatenate([-x[..., h:], x[..., :h]], axis=-1)


def silu(x: np.ndarray) -> np.ndarray:
    return x / (1.0 + np.exp(-x))


class HFDecoder:
    def __init__(self, config: dict, weights: dict[str, np.ndarray]):
        self.cfg = config
        self.w = {k: v.astype(np.float64) for k, v in weights.items()}
        arch = (config.get("architectures") or ["LlamaForCausalLM"])[0]
        self.heads = config["num_attention_heads"]
        self.kv_heads = config.get("num_key_value_heads") or self.heads
        self.head_dim = config.get("head_dim") or config["hidden_size"] // self.heads
        self.eps = float(config.get("rms_norm_eps", 1e-6))
        self.qk_norm = arch == "Qwen3ForCausalLM"
        self.layers = config["num_hidden_layers"]
        self.inv_freq = inverse_frequencies(config, self.head_dim)
        tied = config.get("tie_word_embeddings", False)
        self.head = self.w["model.embed_tokens.weight"] if tied else self.w["lm_head.weight"]

    @staticmethod
    def load(folder: str) -> "HFDecoder":
        config, weights = read_checkpoint(folder)
        return HFDecoder(config, weights)

    def _linear(self, x: np.ndarray, name: str) -> np.ndarray:
        y = x @ self.w[name + ".weight"].T
        b = self.w.get(name + ".bias")
        return y if b is None else y + b

    def logits(self, ids: list[int]) -> np.ndarray:
        """[len(ids), vocab] float64 logits for ids at positions 0..n-1."""
        n = len(ids)
        H, KV, D = self.heads, self.kv_heads, self.head_dim
        angles = np.arange(n, dtype=np.float64)[:, None] * self.inv_freq[None, :]  # [n, D/2]
        cos = np.cos(np.concatenate([angles, angles], axis=-1))  # [n, D]
        sin = np.sin(np.concatenate([angles, angles], axis=-1))
        future = np.triu(np.ones((n, n), dtype=bool), k=1)
        h = self.w["model.embed_tokens.weight"][np.asarray(ids)]
        for i in range(self.layers):
            p = f"model.layers.{i}."
            a = rms_norm(h, self.w[p + "input_layernorm.weight"], self.eps)
            q = self._linear(a, p + "self_attn.q_proj").reshape(n, H, D)
            k = self._linear(a, p + "self_attn.k_proj").reshape(n, KV, D)
            v = self._linear(a, p + "self_attn.v_proj").reshape(n, KV, D)
            if self.qk_norm:
                q = rms_norm(q, self.w[p + "self_attn.q_norm.weight"], self.eps)
                k = rms_norm(k, self.w[p + "self_attn.k_norm.weight"], self.eps)
            q = q * cos[:, None, :] + rotate_half(q) * sin[:, None, :]
            k = k * cos[:, None, :] + rotate_half(k) * sin[:, None, :]
            out = np.empty((n, H, D))
            group = H // KV
            for g in range(H):
                kh = g // group
                s = (q[:, g, :] @ k[:, kh, :].T) / math.sqrt(D)
                s[future] = -np.inf
                s = np.exp(s - s.max(axis=-1, keepdims=True))
                s /= s.sum(axis=-1, keepdims=True)
                out[:, g, :] = s @ v[:, kh, :]
            h = h + self._linear(out.reshape(n, H * D), p + "self_attn.o_proj")
            m = rms_norm(h, self.w[p + "post_attention_layernorm.weight"], self.eps)
            h = h + self._linear(silu(self._linear(m, p + "mlp.gate_proj")) * self._linear(m, p + "mlp.up_proj"),
                                 p + "mlp.down_proj")
        return rms_norm(h, self.w["model.norm.weight"], self.eps) @ self.head.T


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--from", dest="src", required=True)
    ap.add_argument("--ids", required=True, help="comma-separated token ids")
    a = ap.parse_args()
    logits = HFDecoder.load(a.src).logits([int(x) for x in a.ids.split(",")])
    print("argmax per position:", logits.argmax(-1).tolist())


if __name__ == "__main__":
    main()
