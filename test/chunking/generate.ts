import { loadModelConfig, loadTokenizer, type TextTokenizer } from '../../shared/engine';
import { TINY } from '../helpers/model';

export const tokenizer: TextTokenizer = loadTokenizer(loadModelConfig(TINY));

/** mulberry32: a small seeded generator, so every generated document can be reproduced from its seed. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const WORDS = ['the', 'a', 'of', 'city', 'lives', 'works', 'company', 'in', 'and', 'she', 'he', 'was', 'born', 'with'];
const NAMES = ['Mira', 'Lisbon', 'Porto', 'Omar', 'Kovac', 'Zed'];
const ENDS = ['.', '.', '.', '!', '?', '."', '?)'];

/** Character spans of the units a generated document was built from. */
export interface GeneratedDoc {
  text: string;
  /** [start, end) of each sentence, its trailing separator included. */
  sentences: [number, number][];
  lines: [number, number][];
  paragraphs: [number, number][];
}

/**
 * A random document of paragraphs (blank lines), lines and sentences, with abbreviations ("e.g.", "Dr."), initials
 * and decimals inside sentences that must not split, and now and then one very long sentence.
 */
export function generateDocument(seed: number): GeneratedDoc {
  const r = rng(seed);
  const int = (lo: number, hi: number) => lo + Math.floor(r() * (hi - lo + 1));
  const pick = <T>(xs: readonly T[]) => xs[Math.floor(r() * xs.length)];
  const doc: GeneratedDoc = { text: r() < 0.2 ? pick([' ', '\n', '  \n\n']) : '', sentences: [], lines: [], paragraphs: [] };
  const sentence = () => {
    const n = r() < 0.08 ? int(30, 80) : int(2, 12);
    const words = [pick(NAMES)];
    for (let i = 1; i < n; i++) {
      const x = r();
      if (x < 0.04) words.push('e.g.', pick(WORDS));
      else if (x < 0.07) words.push('Dr.', pick(NAMES));
      else if (x < 0.09) words.push('J.', pick(NAMES));
      else if (x < 0.12) words.push(`${int(0, 99)}.${int(0, 9)}`);
      else if (x < 0.2) words.push(pick(NAMES));
      else words.push(pick(WORDS));
    }
    return words.join(r() < 0.1 ? '  ' : ' ') + pick(ENDS);
  };
  const paragraphs = int(1, 8);
  for (let p = 0; p < paragraphs; p++) {
    const pStart = doc.text.length;
    const lines = int(1, 3);
    for (let l = 0; l < lines; l++) {
      const lStart = doc.text.length;
      const sentences = int(1, 4);
      for (let s = 0; s < sentences; s++) {
        const sStart = doc.text.length;
        doc.text += sentence();
        const lastInLine = s === sentences - 1;
        const last = lastInLine && l === lines - 1 && p === paragraphs - 1;
        if (last) doc.text += pick(['', '', ' ', '\n', '\n\n']);
        else if (!lastInLine) doc.text += pick([' ', ' ', '  ', '\t']);
        else if (l < lines - 1) doc.text += pick(['\n', '\n', '\n  ']);
        else doc.text += pick(['\n\n', '\n\n', '\n \n', '\n\n\n']);
        doc.sentences.push([sStart, doc.text.length]);
      }
      doc.lines.push([lStart, doc.text.length]);
    }
    doc.paragraphs.push([pStart, doc.text.length]);
  }
  // Leading whitespace belongs to the first unit of every level.
  for (const spans of [doc.sentences, doc.lines, doc.paragraphs]) spans[0][0] = 0;
  return doc;
}

/**
 * What is wrong with a chunk list, as messages (plain code, not one `expect` per chunk: the property tests check
 * thousands of chunks). Empty when the chunks reproduce `text`, are numbered and placed right, carry exactly
 * `tokenizer.encode(text)`, and have 1..maxTokens tokens.
 */
export function chunkProblems(
  text: string,
  chunks: readonly { text: string; tokens: number[]; index: number; charStart: number; charEnd: number }[],
  maxTokens: number,
): string[] {
  const out: string[] = [];
  if (chunks.map((c) => c.text).join('') !== text) out.push('chunk texts do not concatenate to the text');
  let at = 0;
  chunks.forEach((c, i) => {
    const at_ = `chunk ${i} ${JSON.stringify(c.text)}`;
    if (c.index !== i) out.push(`${at_}: index ${c.index}`);
    if (c.charStart !== at || c.charEnd !== at + c.text.length) out.push(`${at_}: span ${c.charStart}..${c.charEnd}`);
    if (text.slice(c.charStart, c.charEnd) !== c.text) out.push(`${at_}: text is not the slice at its span`);
    const expected = tokenizer.encode(c.text);
    if (expected.length !== c.tokens.length || expected.some((t, k) => t !== c.tokens[k])) out.push(`${at_}: tokens`);
    if (c.tokens.length === 0) out.push(`${at_}: no tokens`);
    if (c.tokens.length > maxTokens) out.push(`${at_}: ${c.tokens.length} tokens > ${maxTokens}`);
    at = c.charEnd;
  });
  return out;
}
