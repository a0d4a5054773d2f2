"""Write a llama-architecture Hugging Face checkpoint as a GGUF v3 file (llama.cpp's format), F32 or Q8_0.

    /usr/bin/python3 tools/model/gguf.py --hf DIR --out FILE.gguf [--type f32|q8_0]
    /usr/bin/python3 tools/model/gguf.py --config config.json --random-seed 19 --tokenizer tokenizer.json --out FILE.gguf

--hf reads an HF folder (config.json, safetensors, tokenizer.json); --config + --random-seed regenerates the seeded
random weights fixtures.py's random_weights gives that config (what bench/shapes/build.py builds its ONNX graphs from),
so bench:peer's two engines run the same weights without a second copy on disk.

The file (GGUF v3, little-endian): magic "GGUF", version 3, tensor count, metadata count; the metadata key/values; one
info per tensor (name, dims innermost first, ggml type, offset into the data section); the data section, each tensor at
a multiple of general.alignment (32).  Metadata: general.*, the llama architecture keys (context and embedding length,
block count, feed-forward length, head counts, key/value length, rope dimension count and freq base, RMS epsilon) and
the tokenizer: tokenizer.json's vocabulary (model.vocab + added_tokens, ids above it padded as unused), its BPE merges,
token types (control for special added tokens), bos/eos ids; tokenizer.ggml.model "gpt2" (byte-level BPE; a
word-level tokenizer.json is written the same way with no merges: the benches pass token ids).

llama.cpp's conventions, as its HF converter applies them (read, not copied): tensor names token_embd, blk.N.attn_q ...,
output_norm, output (left out for tied embeddings: llama.cpp then uses token_embd); an HF [out, in] weight is stored
row-major as ggml dims [in, out]; the Q and K projections' rows are reordered per head from HF's rotate-half layout
(pairs i, i + d/2) to the adjacent pairs (2i, 2i + 1) llama.cpp's llama RoPE rotates; llama3 rope scaling becomes a
rope_freqs.weight tensor of per-frequency divisors (base inverse frequency ÷ scaled, from llama.py's rope_inv_freq, so
both engines rotate by the same angles), linear scaling the rope.scaling keys.
Q8_0: blocks of 32 values along a row, each a float16 scale d = max|x| / 127 and 32 int8 round(x / d) (rounding half
away from zero, as ggml's reference quantizer); 1-D tensors (norms, rope factors) stay F32.
"""
from __future__ import annotations

import argparse
import json
import os
import struct
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

GGUF_MAGIC = b"GGUF"
GGUF_VERSION = 3
ALIGNMENT = 32
# gguf metadata value types
T_UINT32, T_INT32, T_FLOAT32, T_BOOL, T_STRING, T_ARRAY = 4, 5, 6, 7, 8, 9
# ggml tensor types
GGML_F32, GGML_Q8_0 = 0, 8
# general.file_type (llama_ftype)
FTYPE = {"f32": 0, "q8_0": 7}
# tokenizer.ggml.token_type
TOK_NORMAL, TOK_CONTROL, TOK_UNUSED = 1, 3, 5
QK8_0 = 32


class GGUFError(Exception):
    pass


def _str(s: str) -> bytes:
    b = s.encode("utf-8")
    return struct.pack("<Q", len(b)) + b


def _value(kind: int, v) -> bytes:
    if kind == T_UINT32:
        return struct.pack("<I", v)
    if kind == T_INT32:
        return struct.pack("<i", v)
    if kind == T_FLOAT32:
        return struct.pack("<f", v)
    if kind == T_BOOL:
        return struct.pack("<?", bool(v))
    if kind == T_STRING:
        return _str(v)
    raise GGUFError(f"value type {kind} not written")


def _kv(key: str, kind: int, v, elem: int | None = None) -> bytes:
    out = _str(key) + struct.pack("<I", kind)
    if kind != T_ARRAY:
        return out + _value(kind, v)
    out += struct.pack("<IQ", elem, len(v))
    if elem == T_STRING:
        return out + b"".join(_str(s) for s in v)
    if elem == T_INT32:
        return out + np.asarray(v, dtype="<i4").tobytes()
    if elem == T_FLOAT32:
        return out + np.asarray(v, dtype="<f4").tobytes()
    return out + b"".join(_value(elem, x) for x in v)


def quantize_q8_0(x: np.ndarray) -> bytes:
    """Rows of x (last dim a multiple of 32) as Q8_0 blocks: float16 d, then 32 int8, per 32 values."""
    if x.shape[-1] % QK8_0:
        raise GGUFError(f"Q8_0 needs rows of a multiple of {QK8_0} values, got {x.shape[-1]}")
    blocks = x.astype(np.float32).reshape(-1, QK8_0)
    amax = np.abs(blocks).max(axis=1)
    d = amax / 127.0
    inv = np.divide(1.0, d, out=np.zeros_like(d), where=d != 0)
    v = blocks * inv[:, None]
    q = np.trunc(v + np.copysign(0.5, v)).astype(np.int8)  # roundf: half away from zero
    out = np.empty(len(blocks), dtype=[("d", "<f2"), ("qs", "i1", (QK8_0,))])
    out["d"] = d.astype(np.float16)
    out["qs"] = q
    return out.tobytes()


def dequantize_q8_0(data: bytes, shape: tuple[int, ...]) -> np.ndarray:
    b = np.frombuffer(data, dtype=[("d", "<f2"), ("qs", "i1", (QK8_0,))])
    return (b["qs"].astype(np.float32) * b["d"].astype(np.float32)[:, None]).reshape(shape)


def rope_pairs(w: np.ndarray, heads: int) -> np.ndarray:
    """Rows of a Q or K projection [heads * d, in], per head, from HF's rotate-half order (row i pairs with
    i + d/2) to adjacent pairs: new row 2i = old row i, new row 2i + 1 = old row i + d/2."""
    rows = w.shape[0]
    d = rows // heads
    return w.reshape(heads, 2, d // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def vocabulary(tokenizer: dict, vocab_size: int) -> tuple[list[str], list[int], list[str], str]:
    """(tokens by id, token types, merges as 'a b', tokenizer.ggml.model) from a tokenizer.json."""
    model = tokenizer.get("model") or {}
    kind = model.get("type")
    if kind not in ("BPE", "WordLevel"):
        raise GGUFError(f"tokenizer model type {kind!r}: only BPE and WordLevel are written")
    tokens: list[str | None] = [None] * vocab_size
    types = [TOK_NORMAL] * vocab_size
    for tok, i in model["vocab"].items():
        if i >= vocab_size:
            raise GGUFError(f"token {tok!r} has id {i} >= vocab_size {vocab_size}")
        tokens[i] = tok
    for a in tokenizer.get("added_tokens") or []:
        if a["id"] >= vocab_size:
            raise GGUFError(f"added token {a['content']!r} has id {a['id']} >= vocab_size {vocab_size}")
        tokens[a["id"]] = a["content"]
        types[a["id"]] = TOK_CONTROL if a.get("special") else TOK_NORMAL
    for i, t in enumerate(tokens):
        if t is None:
            tokens[i] = f"[PAD{i}]"
            types[i] = TOK_UNUSED
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges") or []]
    return tokens, types, merges, "gpt2"


def pre_tokenizer(tokenizer: dict) -> str:
    """tokenizer.ggml.pre: llama.cpp's name for the pre-tokenizer regex (only Llama 3's is recognised here)."""
    text = json.dumps(tokenizer.get("pre_tokenizer"))
    if "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\\\r\\\\n\\\\p{L}\\\\p{N}]?\\\\p{L}+|\\\\p{N}{1,3}" in text:
        return "llama-bpe"
    return "default"


def rope_factors(cfg: dict, head_dim: int) -> np.ndarray | None:
    """llama3 rope scaling as rope_freqs.weight: base inverse frequency ÷ the scaled one, per frequency."""
    scaling = cfg.get("rope_scaling")
    if not scaling or scaling.get("rope_type", scaling.get("type")) != "llama3":
        return None
    import torch  # noqa: F401  (llama.py computes the frequencies in torch, float32)
    from llama import rope_inv_freq
    theta = float(cfg.get("rope_theta", 10000.0))
    base = rope_inv_freq(head_dim, theta, None).numpy().astype(np.float64)
    scaled = rope_inv_freq(head_dim, theta, scaling).numpy().astype(np.float64)
    return (base / scaled).astype(np.float32)


def gguf_tensors(cfg: dict, weights: dict[str, np.ndarray], head_dim: int) -> list[tuple[str, np.ndarray]]:
    """(GGUF name, array in ggml's row-major layout) for every tensor, in llama.cpp's order."""
    h, kv, layers = cfg["num_attention_heads"], cfg.get("num_key_value_heads") or cfg["num_attention_heads"], cfg["num_hidden_layers"]
    w = lambda n: np.ascontiguousarray(weights[n], dtype=np.float32)  # noqa: E731
    out = [("token_embd.weight", w("model.embed_tokens.weight"))]
    factors = rope_factors(cfg, head_dim)
    if factors is not None:
        out.append(("rope_freqs.weight", factors))
    for i in range(layers):
        p = f"model.layers.{i}."
        out += [
            (f"blk.{i}.attn_norm.weight", w(p + "input_layernorm.weight")),
            (f"blk.{i}.attn_q.weight", rope_pairs(w(p + "self_attn.q_proj.weight"), h)),
            (f"blk.{i}.attn_k.weight", rope_pairs(w(p + "self_attn.k_proj.weight"), kv)),
            (f"blk.{i}.attn_v.weight", w(p + "self_attn.v_proj.weight")),
            (f"blk.{i}.attn_output.weight", w(p + "self_attn.o_proj.weight")),
            (f"blk.{i}.ffn_norm.weight", w(p + "post_attention_layernorm.weight")),
            (f"blk.{i}.ffn_gate.weight", w(p + "mlp.gate_proj.weight")),
            (f"blk.{i}.ffn_up.weight", w(p + "mlp.up_proj.weight")),
            (f"blk.{i}.ffn_down.weight", w(p + "mlp.down_proj.weight")),
        ]
    out.append(("output_norm.weight", w("model.norm.weight")))
    if not cfg.get("tie_word_embeddings") and "lm_head.weight" in weights:
        out.append(("output.weight", w("lm_head.weight")))
    return out


def check_supported(cfg: dict) -> None:
    arch = (cfg.get("architectures") or [None])[0]
    if arch not in ("LlamaForCausalLM", "MistralForCausalLM"):
        raise GGUFError(f"architectures {cfg.get('architectures')!r}: only the llama architecture is written")
    for f in ("attention_bias", "mlp_bias", "qk_norm"):
        if cfg.get(f):
            raise GGUFError(f"{f} is set: not part of llama.cpp's llama architecture as written here")
    scaling = cfg.get("rope_scaling")
    if scaling and scaling.get("rope_type", scaling.get("type")) not in ("llama3", "linear", "default"):
        raise GGUFError(f"rope_scaling {scaling!r} is not written")


def write_gguf(path: str, cfg: dict, weights: dict[str, np.ndarray], tokenizer: dict, qtype: str = "f32",
               name: str = "model") -> dict:
    """Write the GGUF file; returns a summary (tensors, bytes, type)."""
    check_supported(cfg)
    if qtype not in FTYPE:
        raise GGUFError(f"type {qtype!r}: one of {', '.join(FTYPE)}")
    hidden, heads = cfg["hidden_size"], cfg["num_attention_heads"]
    head_dim = cfg.get("head_dim") or hidden // heads
    kv_heads = cfg.get("num_key_value_heads") or heads
    vocab_size = cfg["vocab_size"]
    tokens, types, merges, tok_model = vocabulary(tokenizer, vocab_size)
    eos = cfg.get("eos_token_id")
    eos = eos[0] if isinstance(eos, list) else eos

    meta = [
        _kv("general.architecture", T_STRING, "llama"),
        _kv("general.name", T_STRING, name),
        _kv("general.file_type", T_UINT32, FTYPE[qtype]),
        _kv("general.quantization_version", T_UINT32, 2),
        _kv("general.alignment", T_UINT32, ALIGNMENT),
        _kv("llama.vocab_size", T_UINT32, vocab_size),
        _kv("llama.context_length", T_UINT32, cfg["max_position_embeddings"]),
        _kv("llama.embedding_length", T_UINT32, hidden),
        _kv("llama.block_count", T_UINT32, cfg["num_hidden_layers"]),
        _kv("llama.feed_forward_length", T_UINT32, cfg["intermediate_size"]),
        _kv("llama.attention.head_count", T_UINT32, heads),
        _kv("llama.attention.head_count_kv", T_UINT32, kv_heads),
        _kv("llama.attention.key_length", T_UINT32, head_dim),
        _kv("llama.attention.value_length", T_UINT32, head_dim),
        _kv("llama.rope.dimension_count", T_UINT32, head_dim),
        _kv("llama.rope.freq_base", T_FLOAT32, float(cfg.get("rope_theta", 10000.0))),
        _kv("llama.attention.layer_norm_rms_epsilon", T_FLOAT32, float(cfg.get("rms_norm_eps", 1e-6))),
        _kv("tokenizer.ggml.model", T_STRING, tok_model),
        _kv("tokenizer.ggml.pre", T_STRING, pre_tokenizer(tokenizer)),
        _kv("tokenizer.ggml.tokens", T_ARRAY, tokens, T_STRING),
        _kv("tokenizer.ggml.token_type", T_ARRAY, types, T_INT32),
        _kv("tokenizer.ggml.merges", T_ARRAY, merges, T_STRING),
        _kv("tokenizer.ggml.add_bos_token", T_BOOL, cfg.get("bos_token_id") is not None),
        _kv("tokenizer.ggml.add_eos_token", T_BOOL, False),
    ]
    scaling = cfg.get("rope_scaling")
    if scaling and scaling.get("rope_type", scaling.get("type")) == "linear":
        meta += [_kv("llama.rope.scaling.type", T_STRING, "linear"),
                 _kv("llama.rope.scaling.factor", T_FLOAT32, float(scaling["factor"]))]
    if cfg.get("bos_token_id") is not None:
        meta.append(_kv("tokenizer.ggml.bos_token_id", T_UINT32, cfg["bos_token_id"]))
    if eos is not None:
        meta.append(_kv("tokenizer.ggml.eos_token_id", T_UINT32, eos))

    tensors = gguf_tensors(cfg, weights, head_dim)
    infos, blobs, offset = [], [], 0
    for tname, a in tensors:
        quant = qtype == "q8_0" and a.ndim == 2
        data = quantize_q8_0(a) if quant else a.astype("<f4").tobytes()
        dims = list(reversed(a.shape))  # ggml: innermost first
        infos.append(_str(tname) + struct.pack("<I", len(dims)) + struct.pack(f"<{len(dims)}Q", *dims)
                     + struct.pack("<IQ", GGML_Q8_0 if quant else GGML_F32, offset))
        blobs.append((offset, data))
        offset += len(data)
        offset += -offset % ALIGNMENT
    header = GGUF_MAGIC + struct.pack("<IQQ", GGUF_VERSION, len(tensors), len(meta)) + b"".join(meta) + b"".join(infos)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(header)
        f.write(b"\0" * (-len(header) % ALIGNMENT))
        start = f.tell()
        for off, data in blobs:
            f.write(b"\0" * (start + off - f.tell()))
            f.write(data)
    os.replace(tmp, path)
    return {"path": path, "type": qtype, "tensors": len(tensors), "bytes": os.path.getsize(path),
            "vocab": vocab_size, "merges": len(merges)}


def read_gguf_header(path: str) -> dict:
    """The metadata (scalars; arrays as their length) and tensor infos of a GGUF file: for tests and checks."""
    with open(path, "rb") as f:
        buf = f.read()
    pos = 0

    def take(fmt):
        nonlocal pos
        v = struct.unpack_from(fmt, buf, pos)
        pos += struct.calcsize(fmt)
        return v if len(v) > 1 else v[0]

    def string():
        nonlocal pos
        n = take("<Q")
        s = buf[pos:pos + n].decode("utf-8")
        pos += n
        return s

    scalar = {T_UINT32: "<I", T_INT32: "<i", T_FLOAT32: "<f", T_BOOL: "<?", 0: "<B", 1: "<b", 2: "<H", 3: "<h",
              10: "<Q", 11: "<q", 12: "<d"}

    def value(kind):
        if kind == T_STRING:
            return string()
        if kind == T_ARRAY:
            elem, n = take("<I"), take("<Q")
            items = [value(elem) for _ in range(n)]
            return items
        return take(scalar[kind])

    if buf[:4] != GGUF_MAGIC:
        raise GGUFError(f"{path}: not a GGUF file")
    pos = 4
    version, n_tensors, n_kv = take("<I"), take("<Q"), take("<Q")
    meta = {}
    for _ in range(n_kv):
        k = string()
        meta[k] = value(take("<I"))
    infos = []
    for _ in range(n_tensors):
        tname = string()
        nd = take("<I")
        dims = [take("<Q") for _ in range(nd)]
        infos.append({"name": tname, "dims": dims, "type": take("<I"), "offset": take("<Q")})
    data_start = pos + (-pos % meta.get("general.alignment", ALIGNMENT))
    return {"version": version, "meta": meta, "tensors": infos, "data_start": data_start}


def weights_from(args) -> tuple[dict, dict[str, np.ndarray], dict]:
    if args.hf:
        from safetensors_io import read_checkpoint
        cfg, weights = read_checkpoint(args.hf)
        tok_path = args.tokenizer or os.path.join(args.hf, "tokenizer.json")
    else:
        from fixtures import random_weights
        with open(args.config) as f:
            cfg = json.load(f)
        cfg = {k: v for k, v in cfg.items() if k not in ("epic", "_name_or_path", "torch_dtype")}
        weights = random_weights(cfg, args.random_seed)
        tok_path = args.tokenizer or os.path.join(os.path.dirname(args.config), "tokenizer.json")
    with open(tok_path) as f:
        tokenizer = json.load(f)
    return cfg, weights, tokenizer


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--hf", help="HF checkpoint folder")
    src.add_argument("--config", help="config.json whose seeded random weights to write (with --random-seed)")
    ap.add_argument("--random-seed", type=int, help="fixtures.py random_weights seed (bench/shapes/build.py: 19)")
    ap.add_argument("--tokenizer", help="tokenizer.json (default: beside the config)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--type", choices=list(FTYPE), action="append", help="f32 (default) and/or q8_0; with both, "
                    "--out's name gets the type before .gguf")
    ap.add_argument("--name", default=None)
    a = ap.parse_args()
    if a.config and a.random_seed is None:
        ap.error("--config needs --random-seed")
    cfg, weights, tokenizer = weights_from(a)
    kinds = a.type or ["f32"]
    for kind in kinds:
        out = a.out if len(kinds) == 1 else a.out.replace(".gguf", f".{kind}.gguf")
        r = write_gguf(out, cfg, weights, tokenizer, kind, a.name or cfg.get("_name_or_path") or "model")
        print(f"gguf: {r['path']}: {r['type']}, {r['tensors']} tensors, {r['bytes'] / 2**20:.1f} MiB", flush=True)


if __name__ == "__main__":
    main()
