import type { TextTokenizer } from '../engine/tokenizer';
import { splitWords } from './boundaries';
import { type Chunk, ChunkingError, toChunks } from './chunk';
import { type FixedSplitOptions, resolveFixedOptions } from './options';
import { packText } from './pack';

/**
 * Fixed-size chunking, the baseline KVSplit is measured against: boundaries ignore meaning.
 *
 * Text spans come from words, not from decoded tokens (decoding loses whitespace): the text is cut after each run of
 * whitespace, and each chunk takes as many whole words as fit in `chunkTokens` tokens. A chunk is therefore full up
 * to the subword tokens of one word (it ends early rather than cut a word), and only a word longer than
 * `chunkTokens` tokens by itself is cut between characters. Chunk texts concatenate to `text` exactly; `tokens` is
 * `tokenizer.encode(chunk.text)`. A text without tokens gives `[]`.
 */
export function splitFixed(text: string, tokenizer: TextTokenizer, options?: FixedSplitOptions): Chunk[] {
  const { chunkTokens } = resolveFixedOptions(options);
  if (typeof text !== 'string') throw new ChunkingError(`text must be a string, got ${typeof text}`);
  const pieces = packText(text, [splitWords], tokenizer, { target: chunkTokens, max: chunkTokens });
  if (pieces.every((p) => p.tokens.length === 0)) return [];
  return toChunks(pieces);
}
