"""Train the default model (Llama decoder) on the multi-document QA world, reproducibly from a seed.

    mkdir -p runs/qa && MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=4294967296 \
        /usr/bin/python3 tools/model/train.py --out runs/qa --minutes 80 --seed 1234
    # a short check of one curriculum level before a long run:
    ... train.py --out runs/check --minutes 3 --start-level 0 --pin-level --eval-every 100000
    # continue from a checkpoint at a given curriculum level (fresh optimizer; the checkpoint's shape is used):
    ... train.py --out runs/qa2 --init runs/qa/last.pt --start-level 6 --minutes 30 --seed 1235
    # grow a shipped model by a layer (tools/model/from_onnx.py) and train it on the final level:
    /usr/bin/python3 tools/model/from_onnx.py --model models/epic-qa --out runs/grown3.pt --layers 3
    ... train.py --out runs/qa3 --init runs/grown3.pt --start-level 6 --minutes 65 --seed 1235 --lr 6e-4 \
        --type-weight 0.35,0.35,0.3 --distinct-questions
    # issue #22 (the shipped model): grown to 3 layers, the final level with half+ of the sequences 1-8 documents of
    # varied length, two-hop answered chained ("Rolagen Lisbon"); OMP_WAIT_POLICY and --threads 1: see README.md
    /usr/bin/python3 tools/model/from_onnx.py --model models/epic-qa --out runs/grown3.pt --layers 3
    OMP_WAIT_POLICY=PASSIVE ... train.py --out runs/qa22 --init runs/grown3.pt --start-level 6 --minutes 92 \
        --threads 1 --seed 1235 --lr 6e-4 --distinct-questions --type-weight 0.35,0.3,0.35 --mix varied:0.6 \
        --eval-every 250 --two-hop-form bridge              # stopped at step 525, then, from its step-500 weights:
    ... train.py --out runs/qa22 --init runs/qa22a/last.pt ... --seed 1236 --lr 5e-4 --questions 4 \
        --mix varied:0.6 --eval-every 300                   # stopped at step 600, then, from its step-600 weights:
    ... train.py --out runs/qa22c --init runs/qa22/last.pt ... --seed 1237 --lr 5e-4 --questions 4 \
        --mix varied:0.45,single:0.3 --eval-every 300
    # the sixth attempt's continuations (README.md): drill company lookups, pinned or mixed into the final level
    ... train.py --out runs/pc --init runs/init2.pt --level pairs-companies --minutes 3 --seed 1235 --lr 4e-4
    ... train.py --out runs/mix --init runs/init2.pt --start-level 6 --minutes 8 --seed 1235 --lr 4e-4 \
        --distinct-questions --company-weight 3 --mix companies:0.5

The malloc settings matter: without them about half the CPU time went to the kernel (large attention tensors mmapped
and unmapped every step).  models/epic-qa was trained with the first command; see its MODEL_CARD.md.

Recipe (../../shared/DESIGN.md section 6, plus an LM loss on the context so the model grows attention sinks):
* 2 layers, d128, 4 heads (4 KV heads), FFN 336, untied embeddings, bf16 autocast on CPU, 2 threads.
* AdamW lr 1e-3, betas (0.9, 0.95), weight decay 0.05 on matrices only, grad clip 1.0, 50 warmup steps, constant
  lr, then cosine to 5% over the final curriculum level (time based, so the run ends on time).
* Tokens per optimiser step set per level (2k for the short early levels, 4k-6k later), run as micro-batches of
  <= 1,800 tokens (gradient accumulation), sequences sorted by length so that little of a micro-batch is padding.  Each sequence: <bos> + documents + 16 questions (drawn with
  replacement, or distinct with --distinct-questions; question type chosen by TYPE_WEIGHT or --type-weight among
  the types present), each "<question> <answer> <eos>"; a two-hop answer is chained (--two-hop-form).
* Loss = mean CE on answer+<eos> tokens + lm_weight * mean CE on document tokens (next-token LM on the context).
* Format curriculum over world.Level (LEVELS): bare "Name Value" pairs from 64 names -> from all names -> one
  article per document, 1-2 facts -> several people sharing relations -> notes (fillers) -> 3-5 pages cut anywhere
  -> the final world (8 pages).  A level advances when the running train accuracy (answers other than two-hop, at
  least 20 steps into the level) reaches 0.9, or, as a fallback, when its share of the wall-clock budget runs out.
* A held-out 8-document monitor set (seed --monitor-seed, never the evaluation seed) is scored every --eval-every
  steps, teacher-forced, per question type (two_hop_bridge: the chained answer's first token); with --mix varied a
  second one ("monitor_short") over 1-4 documents of varied length.  Checkpoints: <out>/last.pt, <out>/final.pt; log: <out>/log.jsonl.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import world  # noqa: E402
from llama import Llama, LlamaConfig  # noqa: E402
from wordpiece import WordPiece  # noqa: E402

TYPES = ["single_hop", "cross_chunk", "two_hop"]
COMPANY_NAMES = frozenset(world.COMPANIES)
# two-hop needs a 3-step circuit (>= 3 layers); with 2 layers it is asked rarely, so capacity goes to the others
TYPE_WEIGHT = {"single_hop": 0.45, "cross_chunk": 0.4, "two_hop": 0.15}

LEVELS = [
    # name, Level, share of the budget by which the level must have ended, tokens per optimiser step
    ("pairs-small", world.Level(pairs=True, n_docs=(2, 4), facts=(2, 4), pool=64), 0.06, 2048),
    ("pairs", world.Level(pairs=True, n_docs=(2, 4), facts=(2, 4)), 0.09, 2048),
    ("compact", world.Level(n_docs=(0, 0), persons=(2, 4), companies=(0, 1), facts=(1, 2), fillers=(0, 0), cut=False,
                            two_hop=False), 0.18, 2048),
    ("multi-fact", world.Level(n_docs=(0, 0), persons=(3, 6), companies=(1, 2), facts=(2, 5), fillers=(0, 0),
                               cut=False), 0.28, 4096),
    ("fillers", world.Level(n_docs=(0, 0), persons=(4, 8), companies=(1, 2), facts=(3, 6), fillers=(1, 3),
                            cut=False), 0.35, 6144),
    ("pages", world.Level(n_docs=(3, 5), persons=(6, 10), companies=(2, 3), fillers=(2, 4)), 0.5, 6144),
    ("final", world.Level(), 1.0, 6144),
]

# The same curriculum with companies as subjects from the start (--curriculum companies): the pairs levels draw
# names from persons and companies (32 + 32 first, then all 360), the article levels hold more companies.  The shipped
# model's curriculum (LEVELS) pairs persons only and has 0-1 companies in its first article level; its lookups about
# companies stayed at 0.29-0.52 while persons' reached 0.95-1.0 (README.md, "Sixth attempt").
LEVELS_COMPANIES = [
    ("pairs-small", world.Level(pairs=True, pair_names="both", n_docs=(2, 4), facts=(2, 4), pool=32), 0.06, 2048),
    ("pairs", world.Level(pairs=True, pair_names="both", n_docs=(2, 4), facts=(2, 4)), 0.09, 2048),
    ("compact", world.Level(n_docs=(0, 0), persons=(2, 3), companies=(1, 2), facts=(1, 2), fillers=(0, 0), cut=False,
                            two_hop=False), 0.18, 2048),
    ("multi-fact", world.Level(n_docs=(0, 0), persons=(3, 5), companies=(2, 3), facts=(2, 5), fillers=(0, 0),
                               cut=False), 0.28, 4096),
    LEVELS[4], LEVELS[5], LEVELS[6],
]
CURRICULA = {"persons": LEVELS, "companies": LEVELS_COMPANIES}

# Levels outside the curriculum, for a continuation run (--level NAME, pinned)
EXTRA_LEVELS = {
    "pairs-companies": (world.Level(pairs=True, pair_names="companies", n_docs=(2, 4), facts=(2, 4)), 1.0, 2048),
    "companies": (world.Level(n_docs=(0, 0), persons=(0, 0), companies=(3, 6), facts=(2, 4), fillers=(0, 1), cut=False,
                              two_hop=False), 1.0, 4096),
    # 1-8 documents of 20-400 tokens each (log-uniform), cut anywhere (issue #22): mixed into the final level
    "varied": (world.VARIED, 1.0, 6144),
    # one short document (20-150 tokens): the README's example; the first question after so little context is where
    # the model, trained on 8 pages, went on writing the document instead of ending the answer (issue #22)
    "single": (world.Level(n_docs=(1, 1), page_tokens=(20, 150), fillers=(1, 5)), 1.0, 2048),
}


def tokenizer() -> WordPiece:
    return WordPiece(world.vocabulary())


def encode_sample(tok: WordPiece, s: world.Sample, qs):
    """ids, loss weights kind (0 none, 1 context LM target, 2 answer target), per answer target its type."""
    ids = [tok.id("<bos>")]
    kind = [0]
    for d in s.documents:
        t = tok.encode(d)
        ids += t
        kind += [1] * len(t)
    qtypes = []
    for q in qs:
        t = tok.encode(q.question)
        ids += t
        kind += [0] * len(t)
        a = tok.encode(q.answer) + [tok.id("<eos>")]
        ids += a
        kind += [2] * len(a)
        qtypes.append((q.type, len(a)))
    return ids, kind, qtypes


def pick_questions(rng: random.Random, qs, n: int, weight=None, distinct=False, company_weight=1.0):
    """n questions; each draw picks a type by weight among the types present, then a question of it.  With `distinct`
    each question is asked at most once (types drop out as they run out): drawn with replacement, ~75% of cross-chunk
    answers could be copied from an earlier asking in the same sequence, which teaches copying, not reading.  The
    default (with replacement) is what the shipped model was trained with."""
    weight = weight or TYPE_WEIGHT
    by = {}
    for q in qs:
        by.setdefault(q.type, []).append(q)

    def qw(q):  # a question's draw weight within its type
        return company_weight if q.entity in COMPANY_NAMES else 1.0

    if not distinct:
        types = sorted(by)
        w = [weight[t] for t in types]
        if company_weight == 1.0:
            return [rng.choice(by[rng.choices(types, w)[0]]) for _ in range(n)]
        return [rng.choices(by[t], [qw(q) for q in by[t]])[0] for t in rng.choices(types, w, k=n)]
    for v in by.values():
        if company_weight == 1.0:
            rng.shuffle(v)
        else:  # weighted order without replacement (Efraimidis-Spirakis): heavier questions come out first
            v.sort(key=lambda q: rng.random() ** (1.0 / qw(q)))
    out = []
    while len(out) < n and by:
        types = sorted(by)
        t = rng.choices(types, [weight[t] for t in types])[0]
        out.append(by[t].pop())
        if not by[t]:
            del by[t]
    return out


def make_batch(tok, rng, lv: world.Level, batch_tokens: int, n_q: int, weight=None, distinct=False, company_weight=1.0,
               mix=None):
    """mix: [(Level, fraction)]: those shares of the sequences come from other levels (a continuation that keeps the
    level it trains on while it drills others).  Returns the sequences (encode_sample's triples)."""
    seqs = []
    total = 0
    while total < batch_tokens:
        r, pick = rng.random(), lv
        for mlv, frac in mix or []:
            if r < frac:
                pick = mlv
                break
            r -= frac
        s = world.sample(rng, pick)
        qs = pick_questions(rng, s.questions, n_q, weight, distinct, company_weight)
        ids, kind, qt = encode_sample(tok, s, qs)
        seqs.append((ids, kind, qt))
        total += len(ids)
    return seqs


def micro_batches(seqs, micro_tokens):
    """Sequences sorted by length and packed into micro-batches of <= micro_tokens padded tokens (one sequence at
    least): documents of varied length would otherwise pad every short sequence to the longest one."""
    seqs = sorted(seqs, key=lambda s: len(s[0]))
    out, cur = [], []
    for sq in seqs:
        if cur and (len(cur) + 1) * len(sq[0]) > micro_tokens:
            out.append(cur)
            cur = []
        cur.append(sq)
    if cur:
        out.append(cur)
    return [collate(c) for c in out]


def collate(seqs):
    n = max(len(s[0]) for s in seqs)
    ids = torch.zeros(len(seqs), n, dtype=torch.long)
    kind = torch.zeros(len(seqs), n, dtype=torch.long)
    for i, (a, k, _) in enumerate(seqs):
        ids[i, :len(a)] = torch.tensor(a)
        kind[i, :len(k)] = torch.tensor(k)
    return ids, kind, [s[2] for s in seqs]


def losses(model, ids, kind):
    logits = model(ids[:, :-1]).float()
    tgt = ids[:, 1:]
    k = kind[:, 1:]
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1), reduction="none").view(tgt.shape)
    ans = k == 2
    ctx = k == 1
    l_ans = (ce * ans).sum() / ans.sum().clamp(min=1)
    l_ctx = (ce * ctx).sum() / ctx.sum().clamp(min=1)
    pred = logits.argmax(-1)
    return l_ans, l_ctx, pred, tgt, k


def answer_correct(pred, tgt, k, qtypes, first=False):
    """Per sequence, per question: all answer(+eos) tokens right (teacher forced). Yields (type, ok), or with `first`
    (type, ok, first token right)."""
    out = []
    for b, qt in enumerate(qtypes):
        pos = (k[b] == 2).nonzero().flatten().tolist()
        ok = (pred[b] == tgt[b]).tolist()
        i = 0
        for t, n in qt:
            r = (t, all(ok[p] for p in pos[i:i + n]))
            out.append(r + (bool(ok[pos[i]]),) if first else r)
            i += n
    return out


@torch.no_grad()
def monitor(model, tok, items):
    model.eval()
    res = {t: [0, 0] for t in TYPES}
    bridge = [0, 0]  # two-hop: the first answer token (the employer) right
    for ids, kind, qt in micro_batches(items, 4096):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            _, _, pred, tgt, k = losses(model, ids, kind)
        for t, ok, ok1 in answer_correct(pred, tgt, k, qt, first=True):
            res[t][0] += ok
            res[t][1] += 1
            if t == "two_hop":
                bridge[0] += ok1
                bridge[1] += 1
    model.train()
    out = {t: round(c / max(n, 1), 4) for t, (c, n) in res.items()}
    c = sum(v[0] for v in res.values())
    n = sum(v[1] for v in res.values())
    out["all"] = round(c / max(n, 1), 4)
    out["two_hop_bridge"] = round(bridge[0] / max(bridge[1], 1), 4)
    return out


def monitor_set(tok, seed: int, n: int, lv: world.Level = world.Level()):
    """n held-out samples (default: 8 documents); each sequence asks 12 of its questions (shuffled, each once).  Few of
    them are cross-chunk (~1.5% of a sample's questions), so the monitor's cross_chunk figure rests on a handful of
    items: measure.py on the held-out set is the measurement."""
    rng = random.Random(seed)
    items = []
    for _ in range(n):
        s = world.sample(rng, lv)
        qs = list(s.questions)
        rng.shuffle(qs)
        items.append(encode_sample(tok, s, qs[:12]))
    return items


def param_groups(model, wd):
    decay, no = [], []
    for n, p in model.named_parameters():
        (decay if p.dim() >= 2 else no).append(p)
    return [{"params": decay, "weight_decay": wd}, {"params": no, "weight_decay": 0.0}]


def save(path, model, tok, cfg, card):
    tmp = path + ".tmp"
    torch.save({"config": cfg.to_hf(), "state_dict": model.state_dict(), "vocab": tok.vocab, "card": card}, tmp)
    os.replace(tmp, path)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/qa")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--monitor-seed", type=int, default=2)
    ap.add_argument("--minutes", type=float, default=65.0, help="wall-clock budget for the optimisation loop")
    ap.add_argument("--max-steps", type=int, default=0)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--ffn", type=int, default=336)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--wd", type=float, default=0.05)
    ap.add_argument("--batch-scale", type=float, default=1.0, help="multiplies each level's tokens per step")
    ap.add_argument("--questions", type=int, default=16, help="questions per sequence")
    ap.add_argument("--lm-weight", type=float, default=0.1, help="weight of the LM loss on context tokens")
    ap.add_argument("--gate", type=float, default=0.9)
    ap.add_argument("--eval-every", type=int, default=150)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--start-level", type=int, default=0)
    ap.add_argument("--curriculum", choices=sorted(CURRICULA), default="persons",
                    help="persons: the shipped model's levels (LEVELS); companies: LEVELS_COMPANIES")
    ap.add_argument("--level", choices=sorted(EXTRA_LEVELS),
                    help="train on this level outside the curriculum, pinned (replaces --curriculum and --start-level; "
                    "the lr decays over the whole run)")
    ap.add_argument("--pin-level", action="store_true", help="stay at --start-level (short checks of one level)")
    ap.add_argument("--init", help="start from this checkpoint's weights and shape (optimizer state is fresh); "
                    "tools/model/from_onnx.py makes one from a shipped model, optionally grown by layers")
    ap.add_argument("--distinct-questions", action="store_true", help="ask each question at most once per sequence")
    ap.add_argument("--type-weight", default="", help="single_hop,cross_chunk,two_hop draw weights (default %s)"
                    % ",".join(str(TYPE_WEIGHT[t]) for t in TYPES))
    ap.add_argument("--company-weight", type=float, default=1.0,
                    help="draw weight of questions about a company (persons: 1) within each question type")
    ap.add_argument("--mix", default="", help="NAME:FRACTION[,NAME:FRACTION]: those shares of each batch's sequences "
                    "from extra levels")
    ap.add_argument("--two-hop-form", choices=world.TWO_HOP_FORMS, default=world.TWO_HOP_FORM,
                    help="two-hop answer: bridge 'Rolagen Lisbon', restated 'Rolagen city Rolagen Lisbon'")
    ap.add_argument("--micro-tokens", type=int, default=1800, help="max tokens per forward (gradient accumulation)")
    a = ap.parse_args()
    mix = []
    for part in filter(None, a.mix.split(",")):
        mname, _, frac = part.partition(":")
        try:
            mix.append((EXTRA_LEVELS[mname][0], float(frac)))
        except (KeyError, ValueError):
            mix.append((None, -1.0))
        if not 0 < mix[-1][1] <= 1 or sum(f for _, f in mix) > 1:
            ap.error(f"--mix needs NAME:FRACTION[,NAME:FRACTION], NAME one of {', '.join(sorted(EXTRA_LEVELS))}, "
                     f"0 < FRACTION and the fractions' sum <= 1, got {a.mix!r}")
    if a.company_weight <= 0:
        ap.error(f"--company-weight must be positive, got {a.company_weight}")

    world.TWO_HOP_FORM = a.two_hop_form
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    rng = random.Random(a.seed)
    os.makedirs(a.out, exist_ok=True)
    tok = tokenizer()
    weight = TYPE_WEIGHT
    if a.type_weight:
        w = [float(x) for x in a.type_weight.split(",")]
        if len(w) != len(TYPES) or min(w) <= 0:
            ap.error(f"--type-weight needs {len(TYPES)} positive weights ({','.join(TYPES)}), got {a.type_weight!r}")
        weight = dict(zip(TYPES, w))
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=a.hidden, num_hidden_layers=a.layers,
                      num_attention_heads=a.heads, num_key_value_heads=a.heads, intermediate_size=a.ffn,
                      max_position_embeddings=4096)
    init = torch.load(a.init, map_location="cpu") if a.init else None
    if init:
        if init["vocab"] != tok.vocab:
            raise SystemExit(f"{a.init}: its vocabulary is not world.vocabulary()'s")
        cfg = LlamaConfig.from_hf(init["config"])
        a.layers, a.hidden, a.heads, a.ffn = (cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads,
                                              cfg.intermediate_size)
    model = Llama(cfg)
    if init:
        model.load_state_dict(init["state_dict"])
    opt = torch.optim.AdamW(param_groups(model, a.wd), lr=a.lr, betas=(0.9, 0.95))
    mon = monitor_set(tok, a.monitor_seed, 48)
    # with --mix varied, a second monitor on 1-4 documents of varied length (the short held-out slice's shape)
    mon2 = monitor_set(tok, a.monitor_seed, 64, world.SHORT_SLICE) if "varied" in a.mix else None
    log = open(os.path.join(a.out, "log.jsonl"), "a")
    card = {"world": "tools/model/world.py", "train_seed": a.seed, "monitor_seed": a.monitor_seed,
            "command": " ".join(["/usr/bin/python3", "tools/model/train.py"] + sys.argv[1:]),
            "recipe": {k: v for k, v in vars(a).items() if k not in ("out",)}}

    def emit(d):
        d["t"] = round(time.time() - t0, 1)
        print(json.dumps(d), flush=True)
        log.write(json.dumps(d) + "\n")
        log.flush()

    budget = a.minutes * 60
    t0 = time.time()
    levels, level = CURRICULA[a.curriculum], a.start_level
    if a.level:  # one extra level, pinned
        levels, level, a.pin_level = [(a.level, *EXTRA_LEVELS[a.level])], 0, True
    level_start = 0.0
    level_step = 0
    run = []  # running (ok) over recent answers
    step = 0
    final_start = None
    emit({"event": "start", "params": sum(p.numel() for p in model.parameters()), "vocab": len(tok),
          "level": levels[level][0], **card})
    while True:
        el = time.time() - t0
        if el >= budget or (a.max_steps and step >= a.max_steps):
            break
        name, lv, share, batch = levels[level]
        # level advance: gate on running accuracy, or its time share ran out
        racc = sum(run) / len(run) if len(run) >= 200 and step - level_step >= 20 else 0.0
        if not a.pin_level and level < len(levels) - 1 and (racc >= a.gate or el >= share * budget):
            level += 1
            run.clear()
            level_start = el
            level_step = step
            emit({"event": "level", "step": step, "level": levels[level][0], "why": "gate" if racc >= a.gate else "time",
                  "racc": round(racc, 4)})
            name, lv, share, batch = levels[level]
        if level == len(levels) - 1 and final_start is None:
            final_start = el
        # lr: warmup, constant, cosine to 5% over the final level
        lr = a.lr * min(1.0, (step + 1) / 50)
        if final_start is not None:
            f = min(1.0, (el - final_start) / max(budget - final_start, 1.0))
            lr *= 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * f))
        for g in opt.param_groups:
            g["lr"] = lr
        seqs = make_batch(tok, rng, lv, batch * a.batch_scale, a.questions, weight, a.distinct_questions,
                          a.company_weight, mix)
        opt.zero_grad(set_to_none=True)
        # micro-batches keep each attention tensor small (under glibc's mmap threshold: far less system time); each
        # holds sequences of similar length (sorted), so little is padding
        mbs = micro_batches(seqs, a.micro_tokens)
        res = []
        for ids, kind, qt in mbs:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                l_ans, l_ctx, pred, tgt, k = losses(model, ids, kind)
            ((l_ans + a.lm_weight * l_ctx) / len(mbs)).backward()
            res += answer_correct(pred, tgt, k, qt)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        run.extend(ok for t, ok in res if t != "two_hop")  # the gate ignores two-hop (see TYPE_WEIGHT)
        del run[:-400]
        step += 1
        if step % 25 == 0:
            emit({"event": "train", "step": step, "level": name, "lr": round(lr, 6), "ans": round(l_ans.item(), 4),
                  "ctx": round(l_ctx.item(), 4), "racc": round(sum(run) / len(run), 4),
                  "seq": max(len(sq[0]) for sq in seqs), "bs": len(seqs), "mb": len(mbs)})
        if step % a.eval_every == 0:
            m = monitor(model, tok, mon)
            emit({"event": "monitor", "step": step, "level": name, **m})
            if mon2:
                m2 = monitor(model, tok, mon2)
                emit({"event": "monitor_short", "step": step, **m2})
                card["last_monitor_short"] = m2
            card["last_monitor"] = m
            card.update(steps=step, train_seconds=round(time.time() - t0, 1))  # what this last.pt is (it may be kept)
            save(os.path.join(a.out, "last.pt"), model, tok, cfg, card)
    m = monitor(model, tok, mon)
    if mon2:
        card["last_monitor_short"] = monitor(model, tok, mon2)
        emit({"event": "monitor_short", "step": step, **card["last_monitor_short"]})
    card.update(last_monitor=m, steps=step, train_seconds=round(time.time() - t0, 1), final_level=levels[level][0])
    emit({"event": "done", "step": step, **m})
    save(os.path.join(a.out, "final.pt"), model, tok, cfg, card)


if __name__ == "__main__":
    main()
