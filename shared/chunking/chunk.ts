/** What a chunker returns, and the one error it raises. */

/** A contiguous slice of a document, tokenised on its own. */
export interface Chunk {
  /** Exactly `document.slice(charStart, charEnd)`; separators and whitespace stay with the text before them. */
  text: string;
  /** `tokenizer.encode(text)`: the chunk tokenised alone, without special tokens. */
  tokens: number[];
  /** Position of the chunk within its document, from 0. */
  index: number;
  /** UTF-16 offsets into the document; chunks are contiguous, so one chunk's `charEnd` is the next one's `charStart`. */
  charStart: number;
  charEnd: number;
}

/** Bad options or input given to a chunker. */
export class ChunkingError extends Error {
  override name = 'ChunkingError';
}

/** Numbers pieces of one document and places them by character offset. */
export function toChunks(pieces: readonly { text: string; tokens: number[] }[]): Chunk[] {
  let charStart = 0;
  return pieces.map((p, index) => {
    const chunk = { text: p.text, tokens: p.tokens, index, charStart, charEnd: charStart + p.text.length };
    charStart = chunk.charEnd;
    return chunk;
  });
}
