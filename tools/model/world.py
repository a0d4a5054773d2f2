"""A synthetic multi-document QA world, deterministic from a seed (the default model's training and evaluation data).

A sample is a list of documents (articles) about random people and companies, and questions about them.  Every name
and value is re-drawn per sample from fixed pools, so only reading the context answers a question.

What the world contains, on purpose (it is what EPIC's linking step exists to repair):
* Articles about people and companies, written as records and notes: a fact is "city Mira Lisbon ." (relation,
  subject, value), a note is a filler sentence such as "Mira often visits the garden .".  Each article is 3-6 facts
  (a company's 2-4) and 3-5 notes about one subject, in random order; 12-16 people and 3-4 companies per sample.
* Pages: the articles are written one after another and the stream is cut into 8 pages of about equal length
  (~100 tokens each; 640-1,040 in all, median ~820), anywhere, even inside a fact.  A page break inside a fact leaves its end on the
  next page ("... city Mira" | "Lisbon . ..."): the next page's first tokens only mean something after the page
  before.  Compiling that page alone cuts the reference; recomputing its first tokens in context (AttnLink)
  repairs it.  (The earlier world's pronoun references, "She works at ...", were not learnt within the training
  budget: the model shipped with it read 51.7%; see tools/model/README.md.)
* Question types:  "single_hop"  (the fact lies inside one page),
                   "cross_chunk" (a page break falls inside the fact),
                   "two_hop"     ("city employer Mira": the city of the company Mira works at; two articles),
                                 answered chained: the employer, then its city ("Rolagen Lisbon"; issue #22).
* Documents of varied number and length (Level.page_tokens; VARIED, SHORT_SLICE): 1-8 documents of 20-400 tokens
  each (log-uniform), the stream cut at their boundaries, anywhere; one short document can hold a single article.
* The question segment is the fact without its value ("city Mira"); the answer is the value ("Lisbon"), then
  <eos>.  The subject sits right before the value, so the lookup is induction (find the earlier occurrence of the
  subject, copy what followed) checked against the relation one token back -- what small models learn fastest
  (DESIGN.md section 6).  Measured here (tools/model/README.md): with a "Q :" marker before the question the recall
  circuit did not form in 1,800 steps (without it, ~1,450); with the subject further from the value ("Mira lives in
  Lisbon .", "The city of Mira is Lisbon .") the model matched the relation but not the subject and stalled at
  ~0.6 on the multi-fact level, where the record form passed 0.9 in 400 steps.
* Curriculum levels (train.py) shrink this: bare "Name Value" pairs from small name pools, one article per document,
  fewer facts, no notes.

Prompt layout used by the engine and by training: <bos>, each document's tokens in order, the question segment, then
(the model's output) the answer and <eos>.  Text is whitespace-separated words of the tokenizer's vocabulary.

    /usr/bin/python3 tools/model/world.py --seed 3 --n 3          # print samples
    /usr/bin/python3 tools/model/world.py --seed 3 --n 600 --write-eval data/eval/qa-heldout.jsonl
    /usr/bin/python3 tools/model/world.py --seed 22 --n 300 --shape short --write-eval data/eval/qa-short.jsonl

Seeds: training uses 1234 and up (train.py --seed), the training monitor 2, the held-out set 3 and the short
held-out slice 22 (never used in training).
"""
from __future__ import annotations

import argparse
import json
import math
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

# relation: (the noun that names it, value pool).  A fact is a record "city Mira Lisbon ." (relation, subject, value);
# its question is everything before the value: "city Mira" -> "Lisbon".  The subject sits right before the value,
# so the lookup is the recall the first curriculum level teaches (find the subject, copy what follows) plus a check
# of the relation one token further back.  Two forms that put the subject further from the value stalled at
# matching the relation alone: "Mira lives in Lisbon ." and "The city of Mira is Lisbon ." (tools/model/README.md).
PERSON_REL = {
    "lives": ("city", CITIES),
    "works": ("employer", COMPANIES),
    "plays": ("sport", SPORTS),
    "owns": ("pet", PETS),
    "color": ("color", COLORS),
    "born": ("year", YEARS),
    "studied": ("subject", SUBJECTS),
    "speaks": ("language", LANGUAGES),
}
COMPANY_REL = {
    "based": ("city", CITIES),
    "makes": ("product", PRODUCTS),
    "founded": ("year", YEARS),
    "employs": ("staff", STAFF),
}


def fact_words(name: str, noun: str) -> list:
    """A fact's words before its value (the question segment is exactly these)."""
    return [noun, name]


TWO_HOP_Q = "city employer"  # + name: the city of the subject's employer
# The two-hop answer is chained: the employer (the bridge), then its city ("city employer Mira" -> "Rolagen Lisbon").
# "restated" writes the second step as a plain lookup ("Rolagen city Rolagen Lisbon"); train.py --two-hop-form.
TWO_HOP_FORMS = ("bridge", "restated")
TWO_HOP_FORM = "bridge"


def two_hop_answer(company: str, city: str, form: str | None = None) -> str:
    form = form or TWO_HOP_FORM
    if form == "bridge":
        return f"{company} {city}"
    if form == "restated":
        return f"{company} city {company} {city}"
    raise ValueError(f"unknown two-hop form {form!r}; one of {', '.join(TWO_HOP_FORMS)}")

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
    n_docs: tuple = (8, 8)  # min, max documents (pages)
    persons: tuple = (12, 16)  # person articles per sample
    companies: tuple = (3, 4)  # company articles per sample
    facts: tuple = (3, 6)  # facts per person article (companies: up to 4)
    fillers: tuple = (3, 5)  # filler sentences per article
    cut: bool = True  # cut the stream into pages by length; False = one article per document
    two_hop: bool = True
    pool: int = 0  # draw names from the first `pool` of each name pool (0 = all): small pools first
    pairs: bool = False  # curriculum start: documents are bare "Name Value" pairs, questions "Name"
    pair_names: str = "persons"  # whose names the pairs use: "persons", "companies" or "both"
    # (min, max) tokens per document, drawn log-uniform per document: documents of varied length (the stream is
    # built to their sum and cut at their boundaries, anywhere); persons/companies/cut are then not used
    page_tokens: tuple = (0, 0)
    max_tokens: int = 1600  # varied documents: their sum is scaled down to this (training cost grows with length)


# documents of varied number and length (train.py's "varied" level, the short held-out slice)
VARIED = Level(n_docs=(1, 8), page_tokens=(20, 400), fillers=(1, 5))
SHORT_SLICE = Level(n_docs=(1, 4), page_tokens=(20, 400), fillers=(1, 5))
SHAPES = {"pages": Level(), "short": SHORT_SLICE}


def _filler(rng: random.Random, subj: str, company: bool) -> str:
    v = rng.choice(C_VERBS if company else P_VERBS)
    parts = [subj, rng.choice(ADVERBS), v, rng.choice(OBJECTS), rng.choice(TIMES)]
    return " ".join(p for p in parts if p) + " ."


ALL_VALUES = sorted({v for _, pool in list(PERSON_REL.values()) + list(COMPANY_REL.values()) for v in pool})


def _pool(names, lv):
    return names[:lv.pool] if lv.pool else names


def _pairs_sample(rng, lv, n_questions):
    n_docs = rng.randint(*lv.n_docs)
    pool = {"persons": _pool(PERSONS, lv), "companies": _pool(COMPANIES, lv),
            "both": _pool(PERSONS, lv) + _pool(COMPANIES, lv)}[lv.pair_names]
    names = rng.sample(pool, n_docs * lv.facts[1])
    docs, qs = [], []
    for d in range(n_docs):
        k = rng.randint(*lv.facts)
        parts = []
        for _ in range(k):
            n, v = names.pop(), rng.choice(ALL_VALUES)
            parts.append(f"{n} {v}")
            qs.append(Question("single_hop", f"{n}", v, n, "pair", [d]))
        docs.append(" ".join(parts))
    if n_questions > 0:
        qs = [rng.choice(qs) for _ in range(n_questions)]
    return Sample(docs, qs)


def sample(rng: random.Random, lv: Level = Level(), n_questions: int = 0) -> Sample:
    """Articles about people and companies, every sentence naming its subject, written one after another and cut
    into pages of about equal length, so a page break can fall inside a sentence: the next page then starts with
    the rest of a fact whose subject is on the page before (question type cross_chunk)."""
    if lv.pairs:
        return _pairs_sample(rng, lv, n_questions)
    if lv.page_tokens[0]:
        return _varied_sample(rng, lv, n_questions)
    n_docs = rng.randint(*lv.n_docs)
    n_p, n_c = rng.randint(*lv.persons), rng.randint(*lv.companies)
    persons = rng.sample(_pool(PERSONS, lv), n_p)
    comps = rng.sample(_pool(COMPANIES, lv), n_c)
    cities = _pool(CITIES, lv)
    # every article's facts first (companies, then persons), then the articles in a random order, each written out
    articles = [(c, _facts(rng, lv, c, True, comps, cities), True) for c in comps]
    articles += [(p, _facts(rng, lv, p, False, comps, cities), False) for p in persons]
    rng.shuffle(articles)
    # the token stream; facts remembered as (entity, rel, value, first token, value token)
    words, facts, starts = [], [], []
    for name, fs, company in articles:
        starts.append(len(words))
        ws, wf = _write(rng, lv, name, company, fs)
        facts += [(name, rel, val, len(words) + st, len(words) + vp) for rel, val, st, vp in wf]
        words += ws
    # pages: the stream cut into n_docs pages of about equal length, anywhere (even inside a sentence); or, with
    # cut=False, one article per document
    if lv.cut:
        step = len(words) / max(n_docs, 1)
        jitter = int(step * 0.15)
        cuts = [int(step * i) + rng.randint(-jitter, jitter) for i in range(1, n_docs)]
        cuts = sorted({c for c in cuts if 0 < c < len(words)})  # no empty page, even for a stream shorter than n_docs
    else:
        cuts = starts[1:]
    bounds = [0] + cuts + [len(words)]
    documents = [" ".join(words[bounds[i]:bounds[i + 1]]) for i in range(len(bounds) - 1)]

    def doc_of(t):
        return max(i for i in range(len(bounds) - 1) if bounds[i] <= t)

    fact_list = []  # (entity, rel, value, doc of the value, split by a page break)
    for name, rel, val, start, vpos in facts:
        d0, d1 = doc_of(start), doc_of(vpos)
        fact_list.append((name, rel, val, d1, d0 != d1))
    return Sample(documents, _questions(rng, fact_list, lv, n_questions))


def _facts(rng, lv, name, company, comps, cities):
    """One article's facts as (rel, lead, value): a company is always `based` somewhere; a person mostly works at
    one of the sample's companies (the bridge of a two-hop question)."""
    if company:
        k = rng.randint(min(lv.facts[0], 2), min(lv.facts[1], 4))
        rels = ["based"] + rng.sample([r for r in COMPANY_REL if r != "based"], k - 1)
    else:
        k = rng.randint(*lv.facts)
        rels = rng.sample(list(PERSON_REL), k)
        if "works" not in rels and comps and rng.random() < 0.7:
            rels[-1] = "works"
    fs = []
    for r in rels:
        lead, pool = (COMPANY_REL if company else PERSON_REL)[r]
        if r == "works":
            val = rng.choice(comps) if comps and rng.random() < 0.85 else \
                rng.choice([v for v in _pool(COMPANIES, lv) if v not in comps])
        else:
            val = rng.choice(cities if pool is CITIES else pool)
        fs.append((r, lead, val))
    return fs


def _write(rng, lv, name, company, fs):
    """An article's words: its facts and some prose notes in a random order.  Returns (words, facts as (rel, value,
    first token, value token) relative to the article)."""
    sents = [("fact", f) for f in fs] + [("fill", None)] * rng.randint(*lv.fillers)
    rng.shuffle(sents)
    words, out = [], []
    for kind, f in sents:
        if kind == "fill":
            words += _filler(rng, name, company).split()
            continue
        rel, lead, val = f
        start = len(words)
        words += fact_words(name, lead) + [val, "."]
        out.append((rel, val, start, len(words) - 2))
    return words, out


def _varied_sample(rng, lv, n_questions):
    """1-8 documents of varied length: each document's length is drawn log-uniform in lv.page_tokens (20-400: median
    ~90), articles are written until the stream reaches their sum, and the stream is cut at the documents' (scaled)
    boundaries, anywhere, also inside a fact.  One short document holding one article is the README's example."""
    n_docs = rng.randint(*lv.n_docs)
    lo, hi = lv.page_tokens
    lengths = [math.exp(rng.uniform(math.log(lo), math.log(hi))) for _ in range(n_docs)]
    if sum(lengths) > lv.max_tokens:
        lengths = [max(lo, x * lv.max_tokens / sum(lengths)) for x in lengths]
    total = sum(lengths)
    n_c = 0 if total < 100 and rng.random() < 0.5 else max(1, min(4, round(total / 250)))
    comps = rng.sample(_pool(COMPANIES, lv), n_c)
    cities = _pool(CITIES, lv)
    persons = rng.sample(_pool(PERSONS, lv), 40)
    articles, size = [], 0  # (name, company, words, facts as (rel, value, start, value pos) relative to the article)
    for name, company in [(c, True) for c in comps] + [(p, False) for p in persons]:
        if size >= total and not company and any(not a[1] for a in articles):
            break
        words, fs = _write(rng, lv, name, company, _facts(rng, lv, name, company, comps, cities))
        articles.append((name, company, words, fs))
        size += len(words)
    rng.shuffle(articles)
    words, facts = [], []
    for name, _, ws, fs in articles:
        facts += [(name, rel, val, len(words) + st, len(words) + vp) for rel, val, st, vp in fs]
        words += ws
    acc, cuts = 0.0, []
    for x in lengths[:-1]:
        acc += x
        cuts.append(round(len(words) * acc / total))
    cuts = sorted({c for c in cuts if 0 < c < len(words)})
    bounds = [0] + cuts + [len(words)]
    documents = [" ".join(words[bounds[i]:bounds[i + 1]]) for i in range(len(bounds) - 1)]

    def doc_of(t):
        return max(i for i in range(len(bounds) - 1) if bounds[i] <= t)

    fact_list = [(name, rel, val, doc_of(vpos), doc_of(start) != doc_of(vpos)) for name, rel, val, start, vpos in facts]
    return Sample(documents, _questions(rng, fact_list, lv, n_questions))


def all_questions(facts, lv: Level):
    qs = []
    by_comp = {}
    for ent, rel, val, d, split in facts:
        if rel == "based":
            by_comp[ent] = (val, d, split)
    for ent, rel, val, d, split in facts:
        lead = (PERSON_REL.get(rel) or COMPANY_REL[rel])[0]
        qs.append(Question("cross_chunk" if split else "single_hop", " ".join(fact_words(ent, lead)), val, ent, rel,
                           [d]))
        if lv.two_hop and rel == "works" and val in by_comp:
            city, d2, _ = by_comp[val]
            qs.append(Question("two_hop", f"{TWO_HOP_Q} {ent}", two_hop_answer(val, city), ent, "works+based",
                               [d, d2]))
    return qs


def _questions(rng, facts, lv, n):
    qs = all_questions(facts, lv)
    if n <= 0:
        return qs
    return [rng.choice(qs) for _ in range(n)]  # with replacement


def eval_items(seed: int, n: int, lv: Level = Level(), per_type: dict | None = None):
    """Held-out items: one question per item, types by quota (default: 5/12 single-hop, 5/12 cross-chunk, 1/6
    two-hop).  Cross-chunk questions are ~2% of a sample's questions, so they are drawn far more often than they
    occur: they are what linking repairs.  Two-hop gets a smaller share: a 2-layer model cannot chain two lookups
    (tools/model/README.md), so it is measured, not weighted like the lookups."""
    rng = random.Random(seed)
    if per_type:
        quota = dict(per_type)
    else:
        two = n // 6
        quota = {"single_hop": (n - two + 1) // 2, "cross_chunk": (n - two) // 2, "two_hop": two}
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
    global TWO_HOP_FORM
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--n", type=int, default=1)
    ap.add_argument("--write-eval", metavar="PATH", help="write --n held-out items (one question each) as JSONL")
    ap.add_argument("--shape", choices=sorted(SHAPES), default="pages",
                    help="pages: 8 pages of ~100 tokens (qa-heldout); short: 1-4 documents of 20-400 tokens (qa-short)")
    ap.add_argument("--two-hop-form", choices=TWO_HOP_FORMS, default=TWO_HOP_FORM)
    a = ap.parse_args()
    TWO_HOP_FORM = a.two_hop_form
    lv = SHAPES[a.shape]
    if a.write_eval:
        with open(a.write_eval, "w") as f:
            for it in eval_items(a.seed, a.n, lv):
                f.write(json.dumps(it) + "\n")
        return
    rng = random.Random(a.seed)
    for _ in range(a.n):
        s = sample(rng, lv)
        print(json.dumps({"documents": s.documents, "questions": [q.__dict__ for q in s.questions]}, indent=1))


if __name__ == "__main__":
    main()
