"""Import a Hugging Face checkpoint (Llama, Mistral, Qwen2, Qwen3) into the project's model layout.

    /usr/bin/python3 tools/model/import_hf.py --from path/to/hf-checkpoint --out models/NAME [--name ID]
                                              [--stock-only] [--kv-dtype float32|float16]

Reads config.json, model.safetensors (or a sharded model.safetensors.index.json; F32/F16/BF16), tokenizer.json,
tokenizer_config.json and generation_config.json.  Writes, like export.py:
  model.onnx, model_epic.onnx, layers/      the stock, primitive and per-layer graphs (float32)
  config.json                               the checkpoint's config plus the `epic` block naming the graphs
  tokenizer.json, tokenizer_config.json, generation_config.json (copied; the last made from config if absent)
  reference.json + reference_logits.bin     torch fp32 logits and KV for fixed ids
--stock-only writes model.onnx only, and a config without the epic block (as a user's Optimum export looks).
--kv-dtype float16 makes model.onnx's past_key_values.* / present.* float16 (Cast nodes around the float32 graph)
and sets torch_dtype float16; it implies --stock-only (the primitive and per-layer graphs are float32-only).

Refused, naming the field: architectures other than the four above; an active sliding window (Mistral's
sliding_window below max_position_embeddings, Qwen's use_sliding_window); rope_scaling types other than llama3 and
linear; MoE fields (num_experts, num_local_experts, ...); hidden_act other than silu; partial rotary; mlp_bias.
A missing, extra or misshapen tensor is an error naming the tensor; a tokenizer with ids past vocab_size an error
naming tokenizer.json.  Output is built in a temporary folder beside --out and renamed into place at the end, so a
failed import leaves nothing behind (an existing --out is replaced only by a finished import).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from export import export_graphs, export_layer_graphs, kv_to_float16, write_reference  # noqa: E402
from external_data import externalize  # noqa: E402

# graphs at least this large get their weights in an external file
EXTERNAL_FROM = 64 * 1024 * 1024
from llama import Llama, LlamaConfig, rope_type  # noqa: E402
from safetensors_io import CheckpointError, read_weights  # noqa: E402

ARCHITECTURES = {
    "LlamaForCausalLM": "llama",
    "MistralForCausalLM": "mistral",
    "Qwen2ForCausalLM": "qwen2",
    "Qwen3ForCausalLM": "qwen3",
}
MOE_FIELDS = ("num_experts", "num_local_experts", "num_experts_per_tok", "moe_intermediate_size", "n_routed_experts",
              "n_shared_experts", "decoder_sparse_step")
REFERENCE_TEXT = "Q: where does Mira live? A: she lives in the city of Lisbon, 42 km away. Grüße, 東京 🙂"
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Refused(Exception):
    """A checkpoint the importer does not take; the message names the file and field."""


def _load_json(path: str, what: str) -> dict:
    try:
        with open(path) as f:
            return json.load(f)
    except OSError as e:
        raise Refused(f"{path}: cannot read {what} ({e.strerror or e})") from e
    except json.JSONDecodeError as e:
        raise Refused(f"{path}: {what} is not valid JSON ({e})") from e


def model_config(cfg: dict, path: str) -> LlamaConfig:
    """The checkpoint's config.json as a LlamaConfig, or Refused naming the field that is not supported."""
    archs = cfg.get("architectures") or []
    arch = archs[0] if archs else None
    if arch not in ARCHITECTURES:
        raise Refused(f"{path}: architectures {archs!r} is not supported (one of {', '.join(ARCHITECTURES)})")
    family = ARCHITECTURES[arch]
    act = cfg.get("hidden_act", cfg.get("hidden_activation", "silu"))
    if act != "silu":
        raise Refused(f"{path}: hidden_act {act!r} is not supported (silu only)")
    for f in MOE_FIELDS:
        if cfg.get(f):
            raise Refused(f"{path}: {f} = {cfg[f]!r}: mixture-of-experts models are not supported")
    max_pos = cfg.get("max_position_embeddings")
    if not isinstance(max_pos, int) or max_pos <= 0:
        raise Refused(f"{path}: max_position_embeddings is missing or not a positive integer")
    if family == "mistral":
        sw = cfg.get("sliding_window")
        if sw is not None and sw < max_pos:
            raise Refused(f"{path}: sliding_window {sw} < max_position_embeddings {max_pos}: sliding-window attention "
                          f"is not supported")
    if family in ("qwen2", "qwen3") and cfg.get("use_sliding_window"):
        raise Refused(f"{path}: use_sliding_window is true (sliding_window {cfg.get('sliding_window')}): "
                      f"sliding-window attention is not supported")
    prf = cfg.get("partial_rotary_factor")
    if prf is not None and prf != 1:
        raise Refused(f"{path}: partial_rotary_factor {prf}: partial rotary embeddings are not supported")
    if cfg.get("rotary_dim") is not None:
        raise Refused(f"{path}: rotary_dim {cfg['rotary_dim']}: partial rotary embeddings are not supported")
    if cfg.get("mlp_bias"):
        raise Refused(f"{path}: mlp_bias is true: biased MLP projections are not supported")
    scaling = cfg.get("rope_scaling")
    kind = rope_type(scaling)
    if kind not in ("default", "llama3", "linear"):
        raise Refused(f"{path}: rope_scaling type {kind!r} is not supported (llama3 or linear): a cached key must "
                      f"move by a pure rotation")
    need = {"llama3": ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"),
            "linear": ("factor",)}.get(kind, ())
    for f in need:
        if not isinstance(scaling.get(f), (int, float)):
            raise Refused(f"{path}: rope_scaling.{f} is missing (rope_type {kind})")
    for f in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size"):
        if not isinstance(cfg.get(f), int) or cfg[f] <= 0:
            raise Refused(f"{path}: {f} is missing or not a positive integer")
    heads = cfg["num_attention_heads"]
    kv_heads = cfg.get("num_key_value_heads") or heads
    if heads % kv_heads:
        raise Refused(f"{path}: num_attention_heads {heads} is not a multiple of num_key_value_heads {kv_heads}")
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // heads
    if head_dim % 2:
        raise Refused(f"{path}: head_dim {head_dim} must be even")
    eos = cfg.get("eos_token_id")
    c = LlamaConfig(
        vocab_size=cfg["vocab_size"],
        hidden_size=cfg["hidden_size"],
        num_hidden_layers=cfg["num_hidden_layers"],
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        intermediate_size=cfg["intermediate_size"],
        rope_theta=float(cfg.get("rope_theta", 10000.0)),
        rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
        max_position_embeddings=max_pos,
        bos_token_id=cfg.get("bos_token_id") if cfg.get("bos_token_id") is not None else 1,
        eos_token_id=eos if eos is not None else 2,
        pad_token_id=cfg.get("pad_token_id") or 0,
        attention_bias=True if family == "qwen2" else bool(cfg.get("attention_bias", False)),
        qk_norm=family == "qwen3",
        tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        rope_scaling=scaling if kind != "default" else None,
        grouped_attention=True,
    )
    if head_dim != cfg["hidden_size"] // heads:
        c.head_dim_override = head_dim
    return c


def expected_tensors(c: LlamaConfig) -> dict[str, tuple[int, ...]]:
    """HF tensor name -> shape, for the model c describes."""
    hd, h, kv, d, f = c.head_dim, c.num_attention_heads, c.num_key_value_heads, c.hidden_size, c.intermediate_size
    out: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (c.vocab_size, d), "model.norm.weight": (d,)}
    if not c.tie_word_embeddings:
        out["lm_head.weight"] = (c.vocab_size, d)
    for i in range(c.num_hidden_layers):
        p = f"model.layers.{i}."
        out.update({
            p + "self_attn.q_proj.weight": (h * hd, d),
            p + "self_attn.k_proj.weight": (kv * hd, d),
            p + "self_attn.v_proj.weight": (kv * hd, d),
            p + "self_attn.o_proj.weight": (d, h * hd),
            p + "mlp.gate_proj.weight": (f, d),
            p + "mlp.up_proj.weight": (f, d),
            p + "mlp.down_proj.weight": (d, f),
            p + "input_layernorm.weight": (d,),
            p + "post_attention_layernorm.weight": (d,),
        })
        if c.attention_bias:
            out.update({p + "self_attn.q_proj.bias": (h * hd,), p + "self_attn.k_proj.bias": (kv * hd,),
                        p + "self_attn.v_proj.bias": (kv * hd,)})
        if c.qk_norm:
            out.update({p + "self_attn.q_norm.weight": (hd,), p + "self_attn.k_norm.weight": (hd,)})
    return out


def check_weights(weights: dict[str, np.ndarray], c: LlamaConfig, src: str) -> dict[str, np.ndarray]:
    """The checkpoint's tensors, checked name by name and shape by shape against the config."""
    want = expected_tensors(c)
    got = {k: v for k, v in weights.items() if not k.endswith("rotary_emb.inv_freq")}  # buffers of old exports
    if c.tie_word_embeddings and "lm_head.weight" in got:
        # some tied checkpoints store the head anyway: accept it only if it is the embedding
        if not np.array_equal(got["lm_head.weight"], got.get("model.embed_tokens.weight")):
            raise Refused(f"{src}: tensor lm_head.weight differs from model.embed_tokens.weight but config.json says "
                          f"tie_word_embeddings true")
        del got["lm_head.weight"]
    missing = sorted(set(want) - set(got))
    if missing:
        raise Refused(f"{src}: missing tensor {missing[0]}" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    extra = sorted(set(got) - set(want))
    if extra:
        raise Refused(f"{src}: unexpected tensor {extra[0]} for this config" +
                      (f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""))
    for name, shape in want.items():
        if tuple(got[name].shape) != shape:
            raise Refused(f"{src}: tensor {name} has shape {list(got[name].shape)}, config.json implies {list(shape)}")
        if got[name].dtype.kind != "f":
            raise Refused(f"{src}: tensor {name} is not a floating-point tensor ({got[name].dtype})")
    return got


def build_model(c: LlamaConfig, weights: dict[str, np.ndarray]) -> Llama:
    m = Llama(c)
    state = {k[len("model."):] if k.startswith("model.") else k: torch.from_numpy(np.ascontiguousarray(v, np.float32))
             for k, v in weights.items()}
    if c.tie_word_embeddings:
        state["lm_head.weight"] = state["embed_tokens.weight"]
    m.load_state_dict(state, strict=True)
    m.eval()
    return m


def tokenizer_max_id(path: str) -> int:
    tok = _load_json(path, "tokenizer")
    vocab = (tok.get("model") or {}).get("vocab")
    top = -1
    if isinstance(vocab, dict):
        top = max(vocab.values(), default=-1)
    elif isinstance(vocab, list):
        top = len(vocab) - 1
    for t in tok.get("added_tokens") or []:
        top = max(top, int(t.get("id", -1)))
    return top


def check_tokenizer(src: str, c: LlamaConfig) -> None:
    path = os.path.join(src, "tokenizer.json")
    if not os.path.exists(path):
        raise Refused(f"{path}: missing (the importer needs the checkpoint's tokenizer.json)")
    top = tokenizer_max_id(path)
    if top >= c.vocab_size:
        raise Refused(f"{path}: the tokenizer has token ids up to {top} but config.json vocab_size is {c.vocab_size}: "
                      f"the tokenizer does not belong to this model")
    eos = c.eos_token_id if isinstance(c.eos_token_id, list) else [c.eos_token_id]
    for tid in [c.bos_token_id, *eos]:
        if tid is not None and tid > top:
            raise Refused(f"{path}: config.json special token id {tid} is not in the tokenizer (ids up to {top})")


def node_encode(tokenizer_dir: str, texts: list[str]) -> list[list[int]] | None:
    """Token ids (no special tokens) of texts with the tokenizer the engine uses (@huggingface/tokenizers, run by
    Node from this repository), or None when Node or the package is not there."""
    script = (
        "const {Tokenizer}=require('@huggingface/tokenizers');const fs=require('fs');const d=process.argv[1];"
        "const j=JSON.parse(fs.readFileSync(d+'/tokenizer.json','utf8'));"
        "let c={};try{c=JSON.parse(fs.readFileSync(d+'/tokenizer_config.json','utf8'))}catch(e){}"
        "const t=new Tokenizer(j,c);const texts=JSON.parse(fs.readFileSync(0,'utf8'));"
        "process.stdout.write(JSON.stringify(texts.map(s=>t.encode(s,{add_special_tokens:false}).ids)))"
    )
    try:
        r = subprocess.run(["node", "-e", script, os.path.abspath(tokenizer_dir)], input=json.dumps(texts),
                           capture_output=True, text=True, cwd=REPO, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if r.returncode != 0:
        return None
    return json.loads(r.stdout)


def generation_config(src: str, cfg: dict) -> dict:
    path = os.path.join(src, "generation_config.json")
    if os.path.exists(path):
        return _load_json(path, "generation config")
    g = {"_from_model_config": True}
    for k in ("bos_token_id", "eos_token_id", "pad_token_id"):
        if cfg.get(k) is not None:
            g[k] = cfg[k]
    return g


def import_checkpoint(src: str, out: str, name: str | None = None, stock_only: bool = False,
                      kv_dtype: str = "float32", seed: int = 7, log=print) -> str:
    """Import src into out (replacing it only once everything is written). Returns out."""
    cfg_path = os.path.join(src, "config.json")
    cfg = _load_json(cfg_path, "config")
    c = model_config(cfg, cfg_path)
    check_tokenizer(src, c)
    weights = check_weights(read_weights(src), c, src)
    if kv_dtype not in ("float32", "float16"):
        raise Refused(f"--kv-dtype {kv_dtype!r}: float32 or float16")
    if kv_dtype == "float16":
        stock_only = True
    torch.manual_seed(seed)
    m = build_model(c, weights)

    out = os.path.normpath(out)
    parent = os.path.dirname(out) or "."
    made_parent = not os.path.isdir(parent)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.", suffix=".importing", dir=parent)
    try:
        os.chmod(tmp, 0o755)
        export_graphs(m, tmp, stock_only=stock_only)
        if kv_dtype == "float16":
            kv_to_float16(os.path.join(tmp, "model.onnx"))
        if not stock_only:
            export_layer_graphs(m, tmp)
        # Large graphs keep their weights in an aligned external file, which onnxruntime maps instead of copying
        # (tools/model/external_data.py: 1,089 -> 641 MB RSS after loading a 652 MB graph).
        for folder in (tmp, os.path.join(tmp, "layers")):
            for f in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
                if f.endswith(".onnx") and os.path.getsize(os.path.join(folder, f)) >= EXTERNAL_FROM:
                    externalize(os.path.join(folder, f))
        model_id = name or os.path.basename(out)
        config = dict(cfg)
        config["_name_or_path"] = model_id
        config["torch_dtype"] = kv_dtype
        if not stock_only:
            config["epic"] = {
                "graphs": {"stock": "model.onnx", "primitive": "model_epic.onnx",
                           "layers": {"embed": "layers/embed.onnx", "layer": "layers/layer_{i}.onnx",
                                      "kv": "layers/kv_{i}.onnx", "head": "layers/head.onnx"}},
                "rope_style": "rotate_half",
                "imported_from": {"architecture": cfg["architectures"][0], "tool": "tools/model/import_hf.py"},
            }
        else:
            config.pop("epic", None)
        with open(os.path.join(tmp, "config.json"), "w") as f:
            json.dump(config, f, indent=2)
            f.write("\n")
        shutil.copyfile(os.path.join(src, "tokenizer.json"), os.path.join(tmp, "tokenizer.json"))
        tcfg = os.path.join(src, "tokenizer_config.json")
        if os.path.exists(tcfg):
            shutil.copyfile(tcfg, os.path.join(tmp, "tokenizer_config.json"))
        with open(os.path.join(tmp, "generation_config.json"), "w") as f:
            json.dump(generation_config(src, cfg), f, indent=2)
            f.write("\n")
        ids = node_encode(tmp, [REFERENCE_TEXT])
        write_reference(m, None, tmp, seed, text=REFERENCE_TEXT, text_ids=ids[0] if ids else None)
        # into place: an existing folder is moved aside first and dropped only after the rename
        old = None
        if os.path.exists(out):
            old = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.", suffix=".old", dir=parent)
            os.rename(out, os.path.join(old, "x"))
        os.rename(tmp, out)
        if old:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if made_parent:
            try:
                os.rmdir(parent)
            except OSError:
                pass
        raise
    n = sum(p.numel() for p in m.parameters())
    log(f"imported {cfg['architectures'][0]} ({n} parameters, vocab {c.vocab_size}, head_dim {c.head_dim}, "
        f"rope {rope_type(c.rope_scaling)}) -> {out}" + (" [stock only]" if stock_only else "") +
        (" [float16 KV]" if kv_dtype == "float16" else ""))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--from", dest="src", required=True, help="Hugging Face checkpoint folder")
    ap.add_argument("--out", required=True, help="output folder, e.g. models/NAME")
    ap.add_argument("--name", default=None, help="model id written to config.json (default: the folder name)")
    ap.add_argument("--stock-only", action="store_true", help="model.onnx only, config without the epic block")
    ap.add_argument("--kv-dtype", choices=["float32", "float16"], default="float32")
    ap.add_argument("--seed", type=int, default=7, help="seed of the reference ids")
    a = ap.parse_args()
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    try:
        import_checkpoint(a.src, a.out, a.name, a.stock_only, a.kv_dtype, a.seed)
    except (Refused, CheckpointError) as e:
        print(f"import_hf: error: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
