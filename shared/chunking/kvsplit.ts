import type { TextTokenizer } from '../engine/tokenizer';
import { splitLines, splitParagraphs, splitSentences, splitWords } from './boundaries';
import { type Chunk, ChunkingError, toChunks } from './chunk';
import { type KVSplitOptions, resolveKVSplitOptions } from './options';
import { packText } from './pack';

/**
 * KVSplit: cuts a document into semantically whole chunks for position-independent caching (EPIC §KVSplit).
 *
 * Boundaries by priority: paragraph (blank line) > line > sentence; a sentence is cut between words only when it
 * alone exceeds `maxTokens` (and a word between characters only when it alone does). Whole units are packed
 * greedily: a chunk grows while it has fewer than `targetTokens` tokens and the next unit keeps it within
 * `maxTokens`. A paragraph too big for one chunk is cut at its lines (then sentences) and its parts never merge with
 * the next paragraph, so a paragraph that starts a chunk in two documents yields the same chunks in both.
 *
 * Guarantees: chunk texts concatenate to `text` exactly; every chunk has 1..maxTokens tokens, `tokens` being
 * `tokenizer.encode(chunk.text)`; the result depends only on the text, the tokenizer and the options.
 * A text without tokens (empty or whitespace only) gives `[]`.
 */
export function splitDocument(text: string, tokenizer: TextTokenizer, options?: KVSplitOptions): Chunk[] {
  return split(text, tokenizer, resolveKVSplitOptions(options));
}

/** Splits each document on its own (a chunk never spans two documents); one chunk list per document. */
export function splitDocuments(docs: readonly string[], tokenizer: TextTokenizer, options?: KVSplitOptions): Chunk[][] {
  const limits = resolveKVSplitOptions(options);
  if (!Array.isArray(docs)) throw new ChunkingError('documents must be an array of strings');
  return docs.map((doc, i) => split(doc, tokenizer, limits, `document ${i}`));
}

const LEVELS = [splitParagraphs, splitLines, splitSentences, splitWords];

function split(text: string, tok: TextTokenizer, o: Required<KVSplitOptions>, what = 'text'): Chunk[] {
  if (typeof text !== 'string') throw new ChunkingError(`${what} must be a string, got ${typeof text}`);
  const pieces = packText(text, LEVELS, tok, { target: o.targetTokens, max: o.maxTokens });
  if (pieces.every((p) => p.tokens.length === 0)) return [];
  return toChunks(pieces);
}
