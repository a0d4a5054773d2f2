"""A small Llama-architecture decoder (RMSNorm, RoPE on q and k, SwiGLU, optional GQA) written by hand.

torch 1.13 (Debian's python3-torch) has no scaled_dot_product_attention, so attention is written out; it exports to
ONNX as MatMul/Softmax.  One attention kernel serves training and both exported graphs, so the graphs compute exactly
what was trained:

* ``attend(q, k_new, v_new, past_k, past_v, bias)`` scores the new queries against the cached keys and the new keys
  separately (no concatenation of the cache inside the graph) and applies an additive bias of shape
  ``[B, 1, S, P + S]``.  The bias is how the caller says which key each query may see: causal by position, holes in
  the cache, padding.  Keys are stored post-RoPE, so a cached key at position p carries R(p).

RoPE follows Hugging Face's Llama convention (``rotate_half``: dimension i pairs with i + head_dim/2).

The same class covers the Hugging Face families the importer takes (``import_hf.py``): an explicit ``head_dim``
(may differ from hidden/heads), q/k/v bias (Qwen2's ``attention_bias``), per-head q/k RMSNorm before RoPE (Qwen3),
tied input/output embeddings, and ``rope_scaling`` of type ``llama3`` or ``linear``.  Defaults reproduce the
project's own models exactly.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

NEG_INF = -1e9  # finite, so a fully masked row (padding) gives a uniform softmax instead of NaN


@dataclass
class LlamaConfig:
    vocab_size: int
    hidden_size: int = 128
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 4
    intermediate_size: int = 336
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-5
    max_position_embeddings: int = 4096
    bos_token_id: int = 1
    eos_token_id: int = 2
    pad_token_id: int = 0
    extra: dict = field(default_factory=dict)
    # Hugging Face family features (defaults: the project's own models)
    head_dim_override: int | None = None  # config.json head_dim when it differs from hidden/heads
    attention_bias: bool = False  # bias on q, k, v projections (Qwen2)
    qk_norm: bool = False  # RMSNorm over head_dim on q and k per head, before RoPE (Qwen3)
    tie_word_embeddings: bool = False
    rope_scaling: dict | None = None  # {"rope_type": "llama3" | "linear", ...}
    # attention grouped by KV head (attend_grouped): the graphs then also take an empty past (P = 0). Off for the
    # project's own models, whose committed graphs must export byte-identical.
    grouped_attention: bool = False

    _FEATURES = ("head_dim_override", "attention_bias", "qk_norm", "tie_word_embeddings", "rope_scaling",
                 "grouped_attention")

    @property
    def head_dim(self) -> int:
        if self.head_dim_override:
            return self.head_dim_override
        return self.hidden_size // self.num_attention_heads

    def to_hf(self) -> dict:
        d = asdict(self)
        extra = d.pop("extra")
        for k in self._FEATURES:
            d.pop(k)
        d.update(
            architectures=["LlamaForCausalLM"],
            model_type="llama",
            head_dim=self.head_dim,
            hidden_act="silu",
            tie_word_embeddings=self.tie_word_embeddings,
            rope_scaling=self.rope_scaling,
            torch_dtype="float32",
        )
        if self.attention_bias:
            d["attention_bias"] = True
        if self.qk_norm:
            d["qk_norm"] = True
        d.update(extra)
        return d

    @staticmethod
    def from_hf(d: dict) -> "LlamaConfig":
        keys = {f for f in LlamaConfig.__dataclass_fields__ if f not in ("extra", "head_dim_override")}
        c = LlamaConfig(**{k: v for k, v in d.items() if k in keys})
        if d.get("head_dim") and d["head_dim"] != c.hidden_size // c.num_attention_heads:
            c.head_dim_override = int(d["head_dim"])
        return c


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        # Casts only when needed: a no-op Cast confuses torch 1.13's ONNX exporter.
        xf = x if x.dtype == torch.float32 else x.float()
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (y if y.dtype == x.dtype else y.to(x.dtype)) * self.weight


def rope_type(scaling: dict | None) -> str:
    if not scaling:
        return "default"
    return scaling.get("rope_type", scaling.get("type", "default"))


def rope_inv_freq(head_dim: int, theta: float, scaling: dict | None = None) -> torch.Tensor:
    """Inverse frequencies [head_dim/2] in float32: 1/theta^(2i/d), then rescaled as transformers'
    _compute_llama3_parameters (by wavelength) or _compute_linear_scaling_rope_parameters (divided by factor) do,
    every step in float32 (the TS engine's Rope forms them the same way)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    kind = rope_type(scaling)
    if kind == "default":
        return inv_freq
    if kind == "linear":
        return inv_freq / float(scaling["factor"])
    if kind == "llama3":
        factor = float(scaling["factor"])
        low, high = float(scaling["low_freq_factor"]), float(scaling["high_freq_factor"])
        old_len = float(scaling["original_max_position_embeddings"])
        low_wavelen, high_wavelen = old_len / low, old_len / high
        wavelen = 2 * math.pi / inv_freq
        scaled = torch.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
        smooth = (old_len / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelen < high_wavelen) * ~(wavelen > low_wavelen)
        return torch.where(medium, smoothed, scaled)
    raise ValueError(f"rope_scaling type {kind!r} is not supported (llama3, linear)")


def rope_cos_sin(position_ids: torch.Tensor, head_dim: int, theta: float, scaling: dict | None = None):
    """position_ids [B, S] (int64) -> cos, sin [B, 1, S, head_dim]."""
    if rope_type(scaling) == "default":
        inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    else:  # a constant in the graph, computed here in float32
        inv_freq = rope_inv_freq(head_dim, theta, scaling)
    freqs = position_ids.to(torch.float32).unsqueeze(-1) * inv_freq  # [B, S, D/2]
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos().unsqueeze(1), emb.sin().unsqueeze(1)


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat([-x[..., h:], x[..., :h]], dim=-1)


def apply_rope(x, cos, sin):
    return x * cos + rotate_half(x) * sin


def repeat_kv(x, n_rep: int):
    if n_rep == 1:
        return x
    # flatten() exports with shapes taken at run time (an explicit reshape froze a traced length into the graph)
    return torch.stack([x] * n_rep, dim=2).flatten(1, 2)


def attend(q, k_new, v_new, past_k, past_v, bias, n_rep: int):
    """q [B,H,S,D]; k_new/v_new [B,Hkv,S,D]; past_k/v [B,Hkv,P,D]; bias [B,1,S,P+S] additive.

    Past and new keys are scored separately and the two probability blocks applied to their own values, so the
    cache is read in place and never copied into a concatenation."""
    scale = 1.0 / math.sqrt(q.shape[-1])
    pk, pv = repeat_kv(past_k, n_rep), repeat_kv(past_v, n_rep)
    nk, nv = repeat_kv(k_new, n_rep), repeat_kv(v_new, n_rep)
    p = pk.shape[2]
    if p == 0:  # no cache (training, first prefill): same result without the empty concatenation and slices
        scores = torch.matmul(q, nk.transpose(-1, -2)) * scale + bias
        return torch.matmul(torch.softmax(scores.float(), dim=-1).type_as(q), nv)
    s_past = torch.matmul(q, pk.transpose(-1, -2)) * scale
    s_new = torch.matmul(q, nk.transpose(-1, -2)) * scale
    scores = torch.cat([s_past, s_new], dim=-1) + bias
    probs = torch.softmax(scores if scores.dtype == torch.float32 else scores.float(), dim=-1)
    probs = probs if probs.dtype == q.dtype else probs.to(q.dtype)
    return torch.matmul(probs[..., :p], pv) + torch.matmul(probs[..., p:], nv)


def attend_grouped(q, k_new, v_new, past_k, past_v, bias, n_rep: int):
    """attend() computed per KV head group: the queries are viewed [B, Hkv, n_rep, S, D] and the keys and values
    broadcast over the group, so no tensor with a past-length axis is ever reshaped.  (repeat_kv's reshape exports as
    an ONNX Reshape whose target holds the past length; with an empty past that 0 means "copy the input's dimension"
    and onnxruntime fails, so attend()'s graphs need P >= 1.  Optimum exports take P = 0, and so do these.)"""
    b, h, s, d = q.shape
    scale = 1.0 / math.sqrt(d)
    qg = q.view(b, h // n_rep, n_rep, s, d)
    pk, pv = past_k.unsqueeze(2), past_v.unsqueeze(2)
    nk, nv = k_new.unsqueeze(2), v_new.unsqueeze(2)
    bias = bias.unsqueeze(1)  # [B, 1, 1, S, P+S]
    p = pk.shape[3]
    if p == 0:  # training / first prefill in torch; traced graphs always take the branch below
        scores = torch.matmul(qg, nk.transpose(-1, -2)) * scale + bias
        out = torch.matmul(torch.softmax(scores.float(), dim=-1).type_as(q), nv)
        return out.flatten(1, 2)
    s_past = torch.matmul(qg, pk.transpose(-1, -2)) * scale
    s_new = torch.matmul(qg, nk.transpose(-1, -2)) * scale
    scores = torch.cat([s_past, s_new], dim=-1) + bias
    probs = torch.softmax(scores if scores.dtype == torch.float32 else scores.float(), dim=-1)
    probs = probs if probs.dtype == q.dtype else probs.to(q.dtype)
    out = torch.matmul(probs[..., :p], pv) + torch.matmul(probs[..., p:], nv)
    return out.flatten(1, 2)


class Attention(nn.Module):
    def __init__(self, c: LlamaConfig):
        super().__init__()
        self.c = c
        hd = c.head_dim
        qkv_bias = c.attention_bias
        self.q_proj = nn.Linear(c.hidden_size, c.num_attention_heads * hd, bias=qkv_bias)
        self.k_proj = nn.Linear(c.hidden_size, c.num_key_value_heads * hd, bias=qkv_bias)
        self.v_proj = nn.Linear(c.hidden_size, c.num_key_value_heads * hd, bias=qkv_bias)
        self.o_proj = nn.Linear(c.num_attention_heads * hd, c.hidden_size, bias=False)
        if c.qk_norm:
            self.q_norm = RMSNorm(hd, c.rms_norm_eps)
            self.k_norm = RMSNorm(hd, c.rms_norm_eps)

    def _kv(self, x):
        """Key before RoPE and value, [B, Hkv, S, D] each."""
        b, s, _ = x.shape
        hd = self.c.head_dim
        k = self.k_proj(x).view(b, s, self.c.num_key_value_heads, hd)
        if self.c.qk_norm:
            k = self.k_norm(k)
        k = k.transpose(1, 2)
        v = self.v_proj(x).view(b, s, self.c.num_key_value_heads, hd).transpose(1, 2)
        return k, v

    def forward(self, x, cos, sin, past_k, past_v, bias):
        b, s, _ = x.shape
        q = self.q_proj(x).view(b, s, self.c.num_attention_heads, self.c.head_dim)
        if self.c.qk_norm:
            q = self.q_norm(q)
        q = q.transpose(1, 2)
        k, v = self._kv(x)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        n_rep = self.c.num_attention_heads // self.c.num_key_value_heads
        out = (attend_grouped if self.c.grouped_attention else attend)(q, k, v, past_k, past_v, bias, n_rep)
        out = out.transpose(1, 2).reshape(b, s, -1)
        return self.o_proj(out), k, v


class MLP(nn.Module):
    def __init__(self, c: LlamaConfig):
        super().__init__()
        self.gate_proj = nn.Linear(c.hidden_size, c.intermediate_size, bias=False)
        self.up_proj = nn.Linear(c.hidden_size, c.intermediate_size, bias=False)
        self.down_proj = nn.Linear(c.intermediate_size, c.hidden_size, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, c: LlamaConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.self_attn = Attention(c)
        self.post_attention_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.mlp = MLP(c)

    def forward(self, x, cos, sin, past_k, past_v, bias):
        a, k, v = self.self_attn(self.input_layernorm(x), cos, sin, past_k, past_v, bias)
        x = x + a
        x = x + self.mlp(self.post_attention_layernorm(x))
        return x, k, v


class Llama(nn.Module):
    def __init__(self, c: LlamaConfig):
        super().__init__()
        self.c = c
        self.embed_tokens = nn.Embedding(c.vocab_size, c.hidden_size)
        self.layers = nn.ModuleList([Block(c) for _ in range(c.num_hidden_layers)])
        self.norm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.lm_head = nn.Linear(c.hidden_size, c.vocab_size, bias=False)
        if c.tie_word_embeddings:
            self.lm_head.weight = self.embed_tokens.weight

    def cos_sin(self, position_ids):
        return rope_cos_sin(position_ids, self.c.head_dim, self.c.rope_theta, self.c.rope_scaling)

    def step(self, input_ids, position_ids, bias, past, logits_index=None):
        """The engine primitive: compute tokens at given positions over cached KV.

        past: list of (k, v) per layer, each [B, Hkv, P, D].  Returns logits [B,S,V] and the new tokens' (k, v).
        logits_index [B, L] (int64, optional): the tokens (indices into S) whose logits are wanted; logits are then
        [B,L,V]. A serving engine wants one token's logits per row (vLLM's logits_indices, llama.cpp's per-token logits
        flag): the head is then computed for L tokens, not S (at SmolLM2's shape 21% of a prefill's FLOPs), and the
        call returns L x V floats, not S x V (a 512-token call: 100 MB)."""
        cos, sin = self.cos_sin(position_ids)
        x = self.embed_tokens(input_ids)
        new = []
        for layer, (pk, pv) in zip(self.layers, past):
            x, k, v = layer(x, cos, sin, pk, pv, bias)
            new.append((k, v))
        if logits_index is not None:
            x = torch.gather(x, 1, logits_index.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
        return self.lm_head(self.norm(x)), new

    def empty_past(self, batch: int, dtype=torch.float32):
        c = self.c
        z = torch.zeros(batch, c.num_key_value_heads, 0, c.head_dim, dtype=dtype)
        return [(z, z) for _ in range(c.num_hidden_layers)]

    def forward(self, input_ids):
        """Plain causal LM over [B, S] from position 0 (training)."""
        b, s = input_ids.shape
        pos = torch.arange(s).unsqueeze(0).expand(b, s)
        causal = torch.full((s, s), NEG_INF).triu(1).view(1, 1, s, s).expand(b, 1, s, s)
        logits, _ = self.step(input_ids, pos, causal, self.empty_past(b, self.embed_tokens.weight.dtype))
        return logits


def causal_bias_from_mask(attention_mask: torch.Tensor, seq_len: int) -> torch.Tensor:
    """Optimum semantics: attention_mask [B, P+S] (1 = real); the S new tokens are the last S; query s sees key j
    when j <= P + s and mask[j] == 1.  Returns the additive bias [B, 1, S, P+S]."""
    total = attention_mask.shape[1]
    past_len = total - seq_len
    j = torch.arange(total).view(1, 1, 1, total)
    s = torch.arange(seq_len).view(1, 1, seq_len, 1) + past_len
    visible = (j <= s) & (attention_mask.view(attention_mask.shape[0], 1, 1, total) > 0)
    return torch.where(visible, torch.zeros(()), torch.full((), NEG_INF))


def save_config(c: LlamaConfig, path: str, **extra):
    d = c.to_hf()
    d.update(extra)
    with open(path, "w") as f:
        json.dump(d, f, indent=2)
        f.write("\n")
