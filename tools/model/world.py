"""A synthetic multi-document QA world, deterministic from a seed (the default model's training and evaluation data).

A sample is a list of documents (articles) about random people and companies, and questions about them.  Every name
and value is re-drawn per sample from fixed pools, so only reading the context answers a question.

What the world contains, on purpose (it is what EPIC's linking step exists to repair):
* Articles name their entity once, in the first sentence; later sentences refer back with "She"/"He" or
  "The company", between filler sentences, so a document is ~96-128 tokens and 8 of them fill ~900
  (not ~2,000: see tools/model/README.md, training cost on this machine).
* Continuations: some articles run over two consecutive documents; document i+1 starts "( continued )" and never
  names its entity, only "She"/"He"/"The company".  Compiling document i+1 alone cuts that reference.
* Question types:  "single_hop"  (fact stated in the document that names the entity),
                   "cross_chunk" (fact stated only in a continuation document, by pronoun),
                   "two_hop"     (person -> works at company -> company is based in city; two documents).
* The question segment restates the fact's lead-in and ends there ("Q : Mira lives in"); the answer is the next
  word ("Lisbon"), then <eos>.  (Ending on the lead-in lets induction -- find the earlier occurrence, copy what
  followed -- do the lookup, which small models learn fastest; DESIGN.md section 6.)

Prompt layout used by the engine and by training: <bos>, each document's tokens in order, the question segment, then
(the model's output) the answer and <eos>.  Text is whitespace-separated words of the tokenizer's vocabulary.

    /usr/bin/python3 tools/model/world.py --seed 3 --n 3          # print samples
    /usr/bin/python3 tools/model/world.py --seed 3 --n 600 --write-eval data/eval/qa-heldout.jsonl

Seeds: training uses 1234 and up (train.py --seed), the training monitor 2, the held-out set 3 (never used in training).
"""
from __future__ import annotations

import argparse
import json
import random
from dataclasses import dataclass, field

# ---------------------------------------------------------------- pools (fixed; built from a fixed seed)

_SYL_A = "ba be bi bo da de di do fa fe fi ga go ka ke ki ko la le li lo lu ma me mi mo na ne ni no pa pe po ra re ri ro ru sa se si so ta te ti to va ve vi vo za ze zo".split()
_SYL_B = "n l r s th k m x d v".split()


def _names(rng: random.Random, n: int, syllables: int, ending: list[str], exclude: set) -> list[str]:
    out = []
    while len(out) < n:
        w = "".join(rng.choice(_SYL_A) for _ in range(syllables)) + rng.choice(ending)
        w = w.capitalize()
        if w not in exclude and w.lower() not in exclude:
            exclude.add(w)
            out.append(w)
    return out


_pr = random.Random(20241015)
_used: set = set()
PERSONS = _names(_pr, 240, 2, ["", "n", "a", "l", "r", "s"], _used)
COMPANIES = _names(_pr, 120, 2, ["tek", "corp", "tron", "lex", "dyne", "gen"], _used)
CITIES = _names(_pr, 100, 3, ["", "burg", "ville", "ton", "ia"], _used)
SPORTS = "chess tennis golf rugby hockey cricket squash polo rowing fencing boxing judo karate cycling skiing surfing sailing archery bowling curling darts snooker billiards badminton volleyball handball baseball softball lacrosse netball".split()
PETS = "cat dog parrot rabbit hamster turtle goat pony lizard snake ferret canary mouse owl pig duck goose frog crab llama".split()
COLORS = "red blue green yellow purple orange pink brown black white gray silver gold violet indigo teal maroon olive navy beige".split()
SUBJECTS = "physics biology chemistry history law medicine music art geology economics poetry drama botany zoology algebra geometry statistics philosophy linguistics architecture".split()
LANGUAGES = "Welsh Basque Finnish Danish Greek Polish Czech Hindi Korean Thai Swahili Tamil Hebrew Dutch Irish Latvian Maltese Malay Zulu Icelandic".split()
YEARS = [str(y) for y in range(1950, 2006)]
PRODUCTS = "toys shoes lamps chairs clocks bikes boats tents radios phones kites drums pens soap glass paper rope bricks cheese bread".split()
STAFF = [str(n) for n in range(20, 1000, 20)]

# relation: (lead-in words after the subject, value pool); questions restate the lead-in
PERSON_REL = {
    "lives": ("lives in", CITIES),
    "works": ("works at", COMPANIES),
    "plays": ("plays", SPORTS),
    "owns": ("owns a", PETS),
    "color": ("likes the color", COLORS),
    "born": ("was born in", YEARS),
    "studied": ("studied", SUBJECTS),
    "speaks": ("speaks", LANGUAGES),
}
COMPANY_REL = {
    "based": ("is based in", CITIES),
    "makes": ("makes", PRODUCTS),
    "founded": ("was founded in", YEARS),
    "employs": ("employs", STAFF),
}
TWO_HOP_Q = "works in the city of"

# filler sentences: "<Subj> <adverb> <verb> <object> <time> ." (no relation verbs, no names)
ADVERBS = "often sometimes rarely usually always never quietly gladly".split()
P_VERBS = "visits reads paints cleans builds watches draws cooks writes fixes finds carries".split()
C_VERBS = "sells hires tests ships buys repairs designs packs moves counts stores prints".split()
OBJECTS = ["the garden", "old books", "the river", "small boats", "the old bridge", "long letters", "new maps",
           "the market", "the station", "wooden boxes", "the harbour", "tall towers", "the park", "the museum",
           "new songs", "the hills", "cold soup", "the gate", "the roof", "the clock"]
TIMES = ["in the morning", "on weekends", "at night", "after work", "in winter", "every day", "with friends",
         "for hours", "", "", ""]

STRUCT = ["Q", "A", ":", ".", "?", "(", ")", "continued", "She", "He", "The", "company", "the", "city", "of"]


def vocabulary() -> list[str]:
    """Every word the world can produce, in a fixed order (the tokenizer's words)."""
    words = list(STRUCT)
    for lead, pool in list(PERSON_REL.values()) + list(COMPANY_REL.values()):
        words += lead.split() + list(pool)
    words += TWO_HOP_Q.split() + PERSONS + ADVERBS + P_VERBS + C_VERBS
    for o in OBJECTS + TIMES:
        words += o.split()
    seen, out = set(), []
    for w in words:
        if w and w not in seen:
            seen.add(w)
            out.append(w)
    return out


# ---------------------------------------------------------------- samples

@dataclass
class Question:
    type: str
    question: str  # the question segment, exactly as it goes into the prompt after the documents
    answer: str
    entity: str
    relation: str
    docs: list = field(default_factory=list)  # document indices holding the needed facts


@dataclass
class Sample:
    documents: list
    questions: list


@dataclass
class Level:
    """Shape of a sample; the training curriculum moves through these."""
    n_docs: tuple = (8, 8)  # min, max documents
    facts: tuple = (4, 6)  # facts per person article (companies: up to 4)
    doc_tokens: tuple = (96, 128)  # target document length (0 = no fillers)
    p_company: float = 0.3  # share of articles about a company
    p_continued: float = 0.5  # chance an article (with room left) runs on into the next document
    pronouns: bool = True  # later sentences use She/He/The company
    two_hop: bool = True
    min_companies: int = 2
    pairs: bool = False  # curriculum start: documents are bare "Name Value" pairs, questions "Q : Name"


def _filler(rng: random.Random, subj: str, company: bool) -> str:
    v = rng.choice(C_VERBS if company else P_VERBS)
    parts = [subj, rng.choice(ADVERBS), v, rng.choice(OBJECTS), rng.choice(TIMES)]
    return " ".join(p for p in parts if p) + " ."


def _ntok(s: str) -> int:
    return len(s.split())


def _article(rng, name, company, facts, pron, target, pronouns):
    """facts: list of (rel, lead, value).  Returns sentences (first one names the entity)."""
    sents = []
    for i, (rel, lead, val) in enumerate(facts):
        subj = name if (i == 0 or not pronouns) else pron
        sents.append(f"{subj} {lead} {val} .")
    if target <= 0:
        return sents
    need = target - sum(_ntok(s) for s in sents)
    fill = []
    while need > 6:
        f = _filler(rng, pron if pronouns else name, company)
        fill.append(f)
        need -= _ntok(f)
    # first fact stays first; the rest and the fillers are interleaved at random
    rest = sents[1:] + fill
    rng.shuffle(rest)
    return sents[:1] + rest if sents else rest


ALL_VALUES = sorted({v for _, pool in list(PERSON_REL.values()) + list(COMPANY_REL.values()) for v in pool})


def _pairs_sample(rng, lv, n_questions):
    n_docs = rng.randint(*lv.n_docs)
    names = rng.sample(PERSONS, n_docs * lv.facts[1])
    docs, qs = [], []
    for d in range(n_docs):
        k = rng.randint(*lv.facts)
        parts = []
        for _ in range(k):
            n, v = names.pop(), rng.choice(ALL_VALUES)
            parts.append(f"{n} {v}")
            qs.append(Question("single_hop", f"Q : {n}", v, n, "pair", [d]))
        docs.append(" ".join(parts))
    if n_questions > 0:
        qs = [rng.choice(qs) for _ in range(n_questions)]
    return Sample(docs, qs)


def sample(rng: random.Random, lv: Level = Level(), n_questions: int = 0) -> Sample:
    if lv.pairs:
        return _pairs_sample(rng, lv, n_questions)
    n_docs = rng.randint(*lv.n_docs)
    # plan the documents: list of article specs; a continued article takes two slots
    slots = []
    while len(slots) < n_docs:
        company = rng.random() < lv.p_company
        cont = lv.pronouns and len(slots) + 2 <= n_docs and rng.random() < lv.p_continued
        slots.append(("main", company, cont))
        if cont:
            slots.append(("cont", company, True))
    mains = [i for i, sl in enumerate(slots) if sl[0] == "main"]
    want = min(lv.min_companies, len(mains))
    if sum(1 for i in mains if slots[i][1]) < want:  # force the first mains to be companies
        for i in rng.sample(mains, want):
            kind, _, cont = slots[i]
            slots[i] = (kind, True, cont)
            if cont:
                slots[i + 1] = ("cont", True, True)
    persons = rng.sample(PERSONS, n_docs)
    companies = rng.sample(COMPANIES, n_docs)
    n_comp = sum(1 for s in slots if s[0] == "main" and s[1])
    comp_names = companies[:n_comp]

    documents, facts = [], []  # facts: (entity, rel, value, doc index, how) how in {"main","cont"}
    ci = pi = 0
    pending = None  # continuation of the previous article
    for d, (kind, company, cont) in enumerate(slots):
        target = rng.randint(*lv.doc_tokens) if lv.doc_tokens[1] > 0 else 0
        if kind == "cont":
            name, pron, fs, is_comp = pending
            sents = _article(rng, name, is_comp, fs, pron, target, True)
            sents = [s if not s.startswith(name + " ") else pron + s[len(name):] for s in sents]
            documents.append("( continued ) " + " ".join(sents))
            for rel, lead, val in fs:
                facts.append((name, rel, val, d, "cont"))
            pending = None
            continue
        if company:
            name, ci = comp_names[ci], ci + 1
            pron, rels = "The company", COMPANY_REL
            k = rng.randint(min(lv.facts[0], 3), min(lv.facts[1], 4))
            chosen = ["based"] + rng.sample([r for r in rels if r != "based"], k - 1)
        else:
            name, pi = persons[pi], pi + 1
            pron, rels = rng.choice(["She", "He"]), PERSON_REL
            k = rng.randint(*lv.facts)
            chosen = rng.sample(list(rels), k)
            if "works" not in chosen and comp_names and rng.random() < 0.6:
                chosen[-1] = "works"
        rng.shuffle(chosen)
        fs = []
        for rel in chosen:
            lead, pool = rels[rel]
            if rel == "works" and comp_names and rng.random() < 0.8:
                val = rng.choice(comp_names)  # a company with its own article (two-hop possible)
            else:
                val = rng.choice([v for v in pool if v not in comp_names]) if rel == "works" else rng.choice(pool)
            fs.append((rel, lead, val))
        if cont:  # split facts: at least one on each side
            cut = rng.randint(1, len(fs) - 1) if len(fs) > 1 else 1
            here, later = fs[:cut], fs[cut:]
            if not later:
                later = [here.pop()] if len(here) > 1 else []
            pending = (name, pron, later, company)
        else:
            here = fs
        sents = _article(rng, name, company, here, pron, target, lv.pronouns)
        documents.append(" ".join(sents))
        for rel, lead, val in here:
            facts.append((name, rel, val, d, "main"))

    return Sample(documents, _questions(rng, facts, lv, n_questions))


def all_questions(facts, lv: Level):
    qs = []
    by_comp = {}
    for ent, rel, val, d, how in facts:
        if rel == "based":
            by_comp[ent] = (val, d)
    for ent, rel, val, d, how in facts:
        lead = (PERSON_REL.get(rel) or COMPANY_REL[rel])[0]
        qs.append(Question("cross_chunk" if how == "cont" else "single_hop", f"Q : {ent} {lead}", val,
                           ent, rel, [d]))
        if lv.two_hop and rel == "works" and val in by_comp:
            city, d2 = by_comp[val]
            qs.append(Question("two_hop", f"Q : {ent} {TWO_HOP_Q}", city, ent, "works+based", [d, d2]))
    return qs


def _questions(rng, facts, lv, n):
    qs = all_questions(facts, lv)
    if n <= 0:
        return qs
    return [rng.choice(qs) for _ in range(n)]  # with replacement


def eval_items(seed: int, n: int, lv: Level = Level(), per_type: dict | None = None):
    """Held-out items: one question per item, types balanced by quota (default: equal thirds)."""
    rng = random.Random(seed)
    types = ["single_hop", "cross_chunk", "two_hop"]
    quota = per_type or {t: n // 3 + (1 if i < n % 3 else 0) for i, t in enumerate(types)}
    got = {t: 0 for t in quota}
    out = []
    while len(out) < n:
        s = sample(rng, lv)
        qs = all_questions_for(s)
        want = [t for t in quota if got[t] < quota[t] and any(q.type == t for q in qs)]
        if not want:
            continue
        t = min(want, key=lambda t: got[t] / max(quota[t], 1))
        q = rng.choice([q for q in qs if q.type == t])
        got[t] += 1
        out.append({"id": f"qa-{seed}-{len(out):05d}", "type": t, "documents": s.documents, "question": q.question,
                    "answer": q.answer, "entity": q.entity, "relation": q.relation, "fact_docs": q.docs})
    return out


def all_questions_for(s: Sample):
    return s.questions


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--n", type=int, default=1)
    ap.add_argument("--write-eval", metavar="PATH", help="write --n held-out items (one question each) as JSONL")
    a = ap.parse_args()
    if a.write_eval:
        with open(a.write_eval, "w") as f:
            for it in eval_items(a.seed, a.n):
                f.write(json.dumps(it) + "\n")
        return
    rng = random.Random(a.seed)
    for _ in range(a.n):
        s = sample(rng)
        print(json.dumps({"documents": s.documents, "questions": [q.__dict__ for q in s.questions]}, indent=1))


if __name__ == "__main__":
    main()
