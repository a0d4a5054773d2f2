import {
  type Chunk,
  ChunkingError,
  KVSPLIT_DEFAULTS,
  resolveKVSplitOptions,
  splitDocument,
  splitDocuments,
} from '../../shared/chunking';
import { chunkProblems, generateDocument, rng, tokenizer } from './generate';

const count = (text: string) => tokenizer.encode(text).length;

/** Invariants every KVSplit result must satisfy, whatever the input. */
function expectWellFormed(text: string, chunks: Chunk[], maxTokens: number): void {
  expect(chunkProblems(text, chunks, maxTokens)).toEqual([]);
}

/** A sentence of `n` words, each one token. */
const words = (n: number, first = 'A') => [first, ...Array.from({ length: n - 1 }, (_, i) => ['the', 'city', 'of', 'a'][i % 4])].join(' ');

describe('splitDocument', () => {
  it('packs whole sentences up to the target and may pass it, up to the maximum, to keep one whole', () => {
    // Ten sentences of 5 tokens (4 words + "."), one line: too big for one chunk, so cut at sentences.
    const text = Array.from({ length: 10 }, () => `${words(4)}.`).join(' ');
    const chunks = splitDocument(text, tokenizer, { targetTokens: 12, maxTokens: 16 });
    expectWellFormed(text, chunks, 16);
    expect(chunks.map((c) => c.tokens.length)).toEqual([15, 15, 15, 5]);
    for (const c of chunks.slice(0, -1)) expect(c.text.endsWith('. ')).toBe(true);
  });

  it('keeps a paragraph that fits whole rather than fill the previous chunk with part of it', () => {
    const a = `${words(7)}.`; // 8 tokens
    const b = `${words(4)}. ${words(4)}. ${words(4)}.`; // 15 tokens
    const text = `${a}\n\n${b}`;
    const chunks = splitDocument(text, tokenizer, { targetTokens: 12, maxTokens: 16 });
    expect(chunks.map((c) => c.text)).toEqual([`${a}\n\n`, b]);
    // Small paragraphs pack together up to the target.
    const small = splitDocument(`${a}\n\n${a}\n\n${a}`, tokenizer, { targetTokens: 12, maxTokens: 16 });
    expect(small.map((c) => c.tokens.length)).toEqual([16, 8]);
  });

  it('cuts a paragraph over the maximum at lines before sentences', () => {
    const line = `${words(4)}. ${words(4)}.`; // 10 tokens
    const text = [line, line, line].join('\n');
    const chunks = splitDocument(text, tokenizer, { targetTokens: 8, maxTokens: 12 });
    expect(chunks.map((c) => c.text)).toEqual([`${line}\n`, `${line}\n`, line]);
  });

  it('cuts one sentence longer than the maximum between words into pieces within it', () => {
    const sentence = `${words(40)}.`; // 41 tokens
    const text = `${words(3)}. ${sentence} ${words(3)}.`;
    const chunks = splitDocument(text, tokenizer, { targetTokens: 8, maxTokens: 10 });
    expectWellFormed(text, chunks, 10);
    expect(chunks[0].text).toBe(`${words(3)}. `);
    expect(chunks[chunks.length - 1].text).toBe(`${words(3)}.`);
    const inner = chunks.slice(1, -1);
    expect(inner.map((c) => c.text).join('')).toBe(`${sentence} `);
    expect(inner.map((c) => c.tokens.length)).toEqual([8, 8, 8, 8, 9]); // the last word carries the "."
    for (const c of inner) expect(c.text.endsWith(' ')).toBe(true); // never inside a word
  });

  it('cuts a word longer than the maximum between characters', () => {
    const chunks = splitDocument('Supercalifragilistic', tokenizer, { targetTokens: 3, maxTokens: 4 });
    expectWellFormed('Supercalifragilistic', chunks, 4);
    expect(chunks.length).toBe(5);
  });

  it('gives [] for empty or whitespace-only text and rejects non-strings', () => {
    expect(splitDocument('', tokenizer)).toEqual([]);
    expect(splitDocument(' \n\n\t ', tokenizer)).toEqual([]);
    expect(() => splitDocument(undefined as unknown as string, tokenizer)).toThrow(ChunkingError);
  });

  it('keeps whitespace around the text in the chunks', () => {
    const text = '\n\n  Mira lives in the city.  \n\n\n';
    const chunks = splitDocument(text, tokenizer);
    expect(chunks.map((c) => c.text)).toEqual([text]);
  });

  it('gives one paragraph the same tokens in two documents when it starts a chunk in both', () => {
    const shared = `${words(6, 'Omar')}. ${words(6)}.`; // 14 tokens: at least the target, so it closes its chunk
    const sharedLong = Array.from({ length: 5 }, () => `${words(6, 'Porto')}.`).join(' '); // over the maximum
    const a = `${words(13)}.\n\n${shared}\n\n${words(3)}.\n\n${sharedLong}\n\n${words(5)}.`;
    const b = `${words(4)}. ${words(9)}.\n\n${shared}\n\n${words(2)}.\n\n${words(12)}.\n\n${sharedLong}`;
    const opts = { targetTokens: 12, maxTokens: 20 };
    const [ca, cb] = splitDocuments([a, b], tokenizer, opts);
    expectWellFormed(a, ca, 20);
    expectWellFormed(b, cb, 20);
    const tokensOf = (cs: Chunk[], text: string) => cs.filter((c) => c.text.startsWith(text)).map((c) => c.tokens);
    expect(tokensOf(ca, shared)).toEqual(tokensOf(cb, shared));
    expect(tokensOf(ca, shared)).toHaveLength(1);
    const partsOf = (cs: Chunk[], doc: string) => {
      const start = doc.indexOf(sharedLong);
      return cs.filter((c) => c.charStart >= start && c.charStart < start + sharedLong.length).map((c) => c.tokens);
    };
    expect(partsOf(ca, a).length).toBeGreaterThan(1);
    expect(partsOf(ca, a)).toEqual(partsOf(cb, b));
  });

  it('splits documents apart and in order', () => {
    const docs = ['Mira lives in the city.', '', 'Omar works at the company. He was born in Porto.'];
    const out = splitDocuments(docs, tokenizer, { targetTokens: 4, maxTokens: 8 });
    expect(out).toHaveLength(3);
    expect(out[1]).toEqual([]);
    out.forEach((chunks, i) => expect(chunks).toEqual(splitDocument(docs[i], tokenizer, { targetTokens: 4, maxTokens: 8 })));
  });
});

describe('KVSplit options', () => {
  it('defaults to KVSPLIT_DEFAULTS and fills a missing size from their ratio', () => {
    expect(resolveKVSplitOptions()).toEqual({ targetTokens: 256, maxTokens: 384 });
    expect(resolveKVSplitOptions({})).toEqual(KVSPLIT_DEFAULTS);
    expect(resolveKVSplitOptions({ targetTokens: 100 })).toEqual({ targetTokens: 100, maxTokens: 150 });
    expect(resolveKVSplitOptions({ maxTokens: 600 })).toEqual({ targetTokens: 400, maxTokens: 600 });
    expect(resolveKVSplitOptions({ maxTokens: 1 })).toEqual({ targetTokens: 1, maxTokens: 1 });
  });

  it.each([
    [{ targetTokens: 0 }, /targetTokens/],
    [{ targetTokens: -5, maxTokens: 10 }, /targetTokens/],
    [{ maxTokens: 2.5 }, /maxTokens.*|expected int/s],
    [{ targetTokens: 100, maxTokens: 50 }, /maxTokens must be at least targetTokens/],
    [{ targetTokens: '10' }, /targetTokens/],
    [{ target: 10 }, /Unrecognized key/],
  ])('rejects %j with a clear error', (opts, message) => {
    expect(() => splitDocument('Mira.', tokenizer, opts as never)).toThrow(ChunkingError);
    expect(() => splitDocument('Mira.', tokenizer, opts as never)).toThrow(message);
  });
});

describe('KVSplit over random documents (seeded)', () => {
  const DOCS = 300;

  it(`holds every invariant on ${DOCS} generated documents`, () => {
    const r = rng(20241015);
    const problems: string[] = [];
    let cutInsideSentences = 0;
    let chunksSeen = 0;
    for (let seed = 0; seed < DOCS; seed++) {
      const doc = generateDocument(seed);
      const targetTokens = 1 + Math.floor(r() * 40);
      const maxTokens = targetTokens + Math.floor(r() * 30);
      const opts = { targetTokens, maxTokens };
      const chunks = splitDocument(doc.text, tokenizer, opts);
      const found = chunkProblems(doc.text, chunks, maxTokens);
      if (JSON.stringify(splitDocument(doc.text, tokenizer, opts)) !== JSON.stringify(chunks)) found.push('not deterministic');

      // A chunk ends at a sentence end, unless it ends inside a sentence that alone is over the maximum.
      const ends = new Set(doc.sentences.map(([, e]) => e));
      for (const c of chunks) {
        if (ends.has(c.charEnd)) continue;
        const [s, e] = doc.sentences.find(([s, e]) => s < c.charEnd && c.charEnd < e)!;
        if (count(doc.text.slice(s, e)) <= maxTokens) found.push(`chunk ${c.index} ends inside a sentence that fits`);
        cutInsideSentences++;
      }
      // Priority: a chunk that crosses a paragraph (line) boundary is made of whole paragraphs (lines).
      for (const [what, spans] of [['paragraph', doc.paragraphs], ['line', doc.lines]] as const) {
        const starts = new Set(spans.map(([s]) => s));
        for (const c of chunks) {
          const crosses = spans.some(([s]) => c.charStart < s && s < c.charEnd);
          if (crosses && !(starts.has(c.charStart) && (starts.has(c.charEnd) || c.charEnd === doc.text.length))) {
            found.push(`chunk ${c.index} crosses a ${what} boundary but holds part of a ${what}`);
          }
        }
      }
      problems.push(...found.map((p) => `seed ${seed} ${JSON.stringify(opts)}: ${p}`));
      chunksSeen += chunks.length;
    }
    expect(problems).toEqual([]);
    // The generator must exercise the over-long sentence path and produce real work.
    expect(cutInsideSentences).toBeGreaterThan(10);
    expect(chunksSeen).toBeGreaterThan(DOCS);
  });
});
