"""Where a checkpoint's lookups fail: exact match per relation and per kind of subject (person or company).

    /usr/bin/python3 tools/model/diagnose.py --checkpoint runs/init2.pt [--samples 40] [--seed 2]

For each of --samples 8-document samples (world.Level(), seed --seed: the training monitor's seed, never the held-out
set's), up to 20 of its lookup questions (single-hop and cross-chunk) are asked one at a time after the documents,
teacher-forced like train.py's monitor. Prints, per subject kind and relation, the share answered exactly and how many
were asked; then, of the wrong answers, the share that is the same relation's value for another subject of the same
kind (the model matched the relation and the kind of subject, not the subject).

Measured on the shipped model (tools/model/README.md, "Sixth attempt"): persons' lookups 0.95-1.0, companies'
0.29-0.52, and every company error examined was another company's value of the asked relation.
"""
from __future__ import annotations

import argparse
import os
import random
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train  # noqa: E402
import world  # noqa: E402
from llama import Llama, LlamaConfig  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True, help="a train.py checkpoint (from_onnx.py makes one from a model)")
    ap.add_argument("--samples", type=int, default=40)
    ap.add_argument("--seed", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    ck = torch.load(a.checkpoint, map_location="cpu")
    model = Llama(LlamaConfig.from_hf(ck["config"]))
    model.load_state_dict(ck["state_dict"])
    model.eval()
    tok = train.tokenizer()
    inv = {i: w for w, i in tok.vocab.items()}
    companies = train.COMPANY_NAMES
    rng = random.Random(a.seed)
    res: dict = {}
    wrong = same_kind = 0
    with torch.no_grad():
        for _ in range(a.samples):
            s = world.sample(rng, world.Level())
            qs = [q for q in s.questions if q.type != "two_hop"]
            rng.shuffle(qs)
            ctx = [tok.id("<bos>")] + [t for d in s.documents for t in tok.encode(d)]
            # every (relation, subject) -> value in this sample, to classify wrong answers
            values = {(q.relation, q.entity): q.answer for q in s.questions if q.type != "two_hop"}
            for q in qs[:20]:
                ids = ctx + tok.encode(q.question)
                ans = tok.encode(q.answer)
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    logits = model(torch.tensor([ids + ans[:-1]])).float()[0]
                pred = logits.argmax(-1)[len(ids) - 1:].tolist()
                ok = pred == ans
                kind = "company" if q.entity in companies else "person"
                r = res.setdefault((kind, q.relation), [0, 0])
                r[0] += ok
                r[1] += 1
                if not ok:
                    wrong += 1
                    got = " ".join(inv[t] for t in pred)
                    if any(rel == q.relation and e != q.entity and (e in companies) == (kind == "company") and v == got
                           for (rel, e), v in values.items()):
                        same_kind += 1
    for (kind, rel), (c, n) in sorted(res.items()):
        print(f"{kind:8} {rel:8} {c / n:.3f}  ({n})")
    for kind in ("person", "company"):
        c = sum(v[0] for (k, _), v in res.items() if k == kind)
        n = sum(v[1] for (k, _), v in res.items() if k == kind)
        print(f"{kind:8} all      {c / max(n, 1):.3f}  ({n})")
    print(f"wrong answers that are the relation's value for another subject of the same kind: {same_kind} of {wrong}")


if __name__ == "__main__":
    main()
