"""Measure a trained checkpoint on the held-out set: exact match per question type for three ways of building the
prompt's KV cache, and the attention mass on sinks.

    /usr/bin/python3 tools/model/measure.py --checkpoint runs/qa/final.pt --data data/eval/qa-heldout.jsonl \
        --out runs/qa/measure.json

Modes (all in fp32, with Llama.step, the engine primitive):
  full         one causal prefill of the whole prompt: <bos> + documents + question.
  naive        <bos> computed alone at 0; each document computed alone (no <bos>, no view of other documents) at its
               true offset -- the same as compiling it at 0..L-1 and re-rotating the keys, since RoPE is relative;
               then only the question is computed, over the concatenated cache.
  attnlink-16  naive, then the first 16 tokens of every document after the first are recomputed in order, each
               attending causally to everything before it (cached KV, earlier recomputed tokens included);
               then the question.
Exact match, as the TypeScript engine does it: prompt ids = [bos] + encode(doc) for each document + encode(question);
greedy decoding until <eos> or 8 new tokens; WordPiece.decode of the new tokens (without <eos>), stripped, equals
the gold answer stripped.

Attention mass (full mode, fp32, averaged over heads and items, per layer): from the last prompt token (the one that
predicts the answer) and averaged over all document tokens as queries, the share of attention on <bos> and on the
first token of documents 2..8.  For naive mode the same figures are given from the question's last token.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from llama import NEG_INF, Llama, LlamaConfig, apply_rope, repeat_kv, rope_cos_sin  # noqa: E402
from wordpiece import WordPiece  # noqa: E402

MAX_NEW = 8


def load(path):
    ck = torch.load(path, map_location="cpu")
    c = LlamaConfig.from_hf(ck["config"])
    m = Llama(c)
    m.load_state_dict(ck["state_dict"])
    m.eval()
    tok = WordPiece([])
    tok.vocab = dict(ck["vocab"])
    tok.inv = sorted(tok.vocab, key=tok.vocab.get)
    return m, tok, ck


def prompt_parts(tok, item):
    docs = [tok.encode(d) for d in item["documents"]]
    q = tok.encode(item["question"])
    return docs, q


def causal(n_new: int, n_past: int) -> torch.Tensor:
    """Bias [1,1,S,P+S]: every cached key visible, causal among the new tokens."""
    b = torch.zeros(1, 1, n_new, n_past + n_new)
    b[..., n_past:] = torch.full((n_new, n_new), NEG_INF).triu(1)
    return b


def run(m, ids, start, past):
    """Compute ids at positions start.. over past (list of (k,v)); returns logits and the extended cache."""
    n = len(ids)
    p = past[0][0].shape[2]
    logits, new = m.step(torch.tensor([ids]), torch.arange(start, start + n).unsqueeze(0), causal(n, p), past)
    cache = [(torch.cat([pk, k], 2), torch.cat([pv, v], 2)) for (pk, pv), (k, v) in zip(past, new)]
    return logits, cache, new


def greedy(m, tok, logits, cache, pos):
    eos = tok.id("<eos>")
    out = []
    nxt = int(logits[0, -1].argmax())
    while nxt != eos and len(out) < MAX_NEW:
        out.append(nxt)
        logits, cache, _ = run(m, [nxt], pos, cache)
        pos += 1
        nxt = int(logits[0, -1].argmax())
    return tok.decode(out).strip()


@torch.no_grad()
def answer(m, tok, item, mode: str, link: int = 16):
    docs, q = prompt_parts(tok, item)
    bos = tok.id("<bos>")
    if mode == "full":
        ids = [bos] + [t for d in docs for t in d] + q
        logits, cache, _ = run(m, ids, 0, m.empty_past(1))
        return greedy(m, tok, logits, cache, len(ids))
    # naive: <bos> alone, each document alone at its true offset
    _, cache, _ = run(m, [bos], 0, m.empty_past(1))
    starts = []
    pos = 1
    for d in docs:
        _, _, new = run(m, d, pos, m.empty_past(1))
        cache = [(torch.cat([ck, k], 2), torch.cat([cv, v], 2)) for (ck, cv), (k, v) in zip(cache, new)]
        starts.append(pos)
        pos += len(d)
    if mode.startswith("attnlink"):
        for j in range(1, len(docs)):
            s, n = starts[j], min(link, len(docs[j]))
            before = [(k[:, :, :s], v[:, :, :s]) for k, v in cache]
            _, _, new = run(m, docs[j][:n], s, before)
            cache = [(torch.cat([k[:, :, :s], nk, k[:, :, s + n:]], 2), torch.cat([v[:, :, :s], nv, v[:, :, s + n:]], 2))
                     for (k, v), (nk, nv) in zip(cache, new)]
    logits, cache, _ = run(m, q, pos, cache)
    return greedy(m, tok, logits, cache, pos + len(q))


@torch.no_grad()
def attention_probs(m, ids):
    """Per layer, attention probabilities [H, S, S] of one causal prefill (fp32), recomputed layer by layer."""
    c = m.c
    n = len(ids)
    x = m.embed_tokens(torch.tensor([ids]))
    cos, sin = rope_cos_sin(torch.arange(n).unsqueeze(0), c.head_dim, c.rope_theta)
    mask = torch.full((n, n), NEG_INF).triu(1)
    out = []
    for layer in m.layers:
        a = layer.self_attn
        h = layer.input_layernorm(x)
        q = a.q_proj(h).view(1, n, c.num_attention_heads, c.head_dim).transpose(1, 2)
        k = a.k_proj(h).view(1, n, c.num_key_value_heads, c.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        k = repeat_kv(k, c.num_attention_heads // c.num_key_value_heads)
        p = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(c.head_dim) + mask, -1)[0]
        out.append(p)
        x, _, _ = layer(x, cos, sin, *m.empty_past(1)[0], mask.view(1, 1, n, n))
    return out


@torch.no_grad()
def sink_mass(m, tok, items):
    L = m.c.num_hidden_layers
    acc = {k: [0.0] * L for k in ("answer_bos", "answer_doc_first", "context_bos", "context_doc_first")}
    acc_heads = [[0.0] * m.c.num_attention_heads for _ in range(L)]
    for item in items:
        docs, q = prompt_parts(tok, item)
        ids = [tok.id("<bos>")] + [t for d in docs for t in d] + q
        starts, pos = [], 1
        for d in docs:
            starts.append(pos)
            pos += len(d)
        firsts = torch.tensor(starts[1:], dtype=torch.long)  # empty for a one-document prompt
        ctx = torch.arange(starts[0] + 16, pos)  # document tokens, past the first document's opening
        for li, p in enumerate(attention_probs(m, ids)):
            last = p[:, -1]  # [H, S]
            acc["answer_bos"][li] += float(last[:, 0].mean())
            acc["answer_doc_first"][li] += float(last[:, firsts].sum(-1).mean())
            acc["context_bos"][li] += float(p[:, ctx, 0].mean())
            acc["context_doc_first"][li] += float(p[:, ctx][:, :, firsts].sum(-1).mean())
            for h in range(p.shape[0]):
                acc_heads[li][h] += float(p[h, ctx, 0].mean())
    n = len(items)
    out = {k: [round(v / n, 4) for v in vs] for k, vs in acc.items()}
    out["context_bos_per_head"] = [[round(v / n, 4) for v in hs] for hs in acc_heads]
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default="runs/qa/final.pt")
    ap.add_argument("--data", default="data/eval/qa-heldout.jsonl")
    ap.add_argument("--modes", default="full,naive,attnlink-16")
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--sink-items", type=int, default=100)
    ap.add_argument("--out", default=None, help="write the figures as JSON here")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    m, tok, ck = load(a.checkpoint)
    items = [json.loads(line) for line in open(a.data)]
    if a.limit:
        items = items[:a.limit]
    res = {"checkpoint": a.checkpoint, "data": a.data, "items": len(items), "modes": {}}
    for mode in a.modes.split(","):
        t0 = time.time()
        per = {}
        for it in items:
            ok = answer(m, tok, it, mode) == it["answer"].strip()
            c = per.setdefault(it["type"], [0, 0])
            c[0] += ok
            c[1] += 1
        fig = {t: {"accuracy": round(c / n, 4), "n": n} for t, (c, n) in sorted(per.items())}
        fig["all"] = {"accuracy": round(sum(c for c, _ in per.values()) / len(items), 4), "n": len(items)}
        res["modes"][mode] = fig
        print(mode, json.dumps(fig), f"{time.time() - t0:.0f}s", flush=True)
    res["attention_mass"] = sink_mass(m, tok, items[:a.sink_items])
    print("attention_mass", json.dumps(res["attention_mass"]), flush=True)
    if a.out:
        with open(a.out, "w") as f:
            json.dump(res, f, indent=2)
            f.write("\n")


if __name__ == "__main__":
    main()
