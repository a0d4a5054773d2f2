import type { TextTokenizer } from '../engine/tokenizer';
import { ChunkingError } from './chunk';
import type { Splitter } from './boundaries';

/** A run of text with its tokens (`tokenizer.encode(text)`). */
export interface Piece {
  text: string;
  tokens: number[];
}

export interface PackLimits {
  /** Stop growing a chunk once it has this many tokens. */
  target: number;
  /** Never exceed this many tokens. */
  max: number;
}

/**
 * Hierarchical greedy packing. The text is cut at the first splitter's boundaries; consecutive pieces are packed
 * whole, each chunk growing while it is under `target` and the next piece keeps it within `max`. A piece over `max`
 * is cut with the next splitter, and its parts are packed among themselves only (they never merge with neighbours,
 * so a stronger boundary always stays a chunk boundary). Past the last splitter, text is cut between characters.
 *
 * Sizes are summed from each piece tokenised alone, then every chunk is tokenised whole and checked against `max`
 * (dropping its last piece until it fits), so the limit holds even for a tokenizer that is not additive at the cuts.
 */
export function packText(text: string, splitters: readonly Splitter[], tok: TextTokenizer, limits: PackLimits): Piece[] {
  const split = (part: string, level: number): Piece[] => {
    if (level === splitters.length) return splitCharacters(part, tok, limits.max);
    const out: Piece[] = [];
    let run: Piece[] = [];
    for (const sub of splitters[level](part)) {
      const tokens = tok.encode(sub);
      if (tokens.length <= limits.max) {
        run.push({ text: sub, tokens });
        continue;
      }
      out.push(...packRun(run, tok, limits), ...split(sub, level + 1));
      run = [];
    }
    out.push(...packRun(run, tok, limits));
    return out;
  };
  return absorbEmpty(split(text, 0), tok, limits.max);
}

/** Greedy packing of pieces that each fit `max` alone. */
function packRun(run: readonly Piece[], tok: TextTokenizer, { target, max }: PackLimits): Piece[] {
  const out: Piece[] = [];
  let i = 0;
  while (i < run.length) {
    let j = i + 1;
    let n = run[i].tokens.length;
    // Zero-token pieces (whitespace) are always taken along, so they never form a chunk of their own.
    while (j < run.length && (n < target || run[j].tokens.length === 0) && n + run[j].tokens.length <= max) {
      n += run[j].tokens.length;
      j++;
    }
    let piece: Piece;
    for (;;) {
      if (j - i === 1) {
        piece = run[i];
        break;
      }
      const text = run.slice(i, j).map((p) => p.text).join('');
      piece = { text, tokens: tok.encode(text) };
      if (piece.tokens.length <= max) break;
      j--;
    }
    out.push(piece);
    i = j;
  }
  return out;
}

/** Cuts text between code points into the longest prefixes that fit `max` tokens. */
function splitCharacters(text: string, tok: TextTokenizer, max: number): Piece[] {
  const chars = Array.from(text);
  const encode = (a: number, b: number) => tok.encode(chars.slice(a, b).join(''));
  const out: Piece[] = [];
  let start = 0;
  while (start < chars.length) {
    // Gallop to bracket the longest fitting end, then bisect: `lo` fits, `hi` does not.
    let lo = start;
    let hi = -1;
    for (let step = 1; hi < 0; step *= 2) {
      const end = Math.min(start + step, chars.length);
      if (encode(start, end).length > max) hi = end;
      else if (end === chars.length) lo = hi = end;
      else lo = end;
    }
    while (hi - lo > 1) {
      const mid = (lo + hi) >> 1;
      if (encode(start, mid).length <= max) lo = mid;
      else hi = mid;
    }
    if (lo === start) {
      throw new ChunkingError(
        `the character ${JSON.stringify(chars[start])} alone is more than ${max} tokens: raise the maximum chunk size`,
      );
    }
    out.push({ text: chars.slice(start, lo).join(''), tokens: encode(start, lo) });
    start = lo;
  }
  return out;
}

/** Joins a chunk without tokens (whitespace, or text the tokenizer drops) to its neighbour where the result fits. */
function absorbEmpty(pieces: readonly Piece[], tok: TextTokenizer, max: number): Piece[] {
  const out: Piece[] = [];
  for (const p of pieces) {
    const prev = out[out.length - 1];
    if (prev && (p.tokens.length === 0 || prev.tokens.length === 0)) {
      const text = prev.text + p.text;
      const tokens = tok.encode(text);
      if (tokens.length <= max) {
        out[out.length - 1] = { text, tokens };
        continue;
      }
    }
    out.push(p);
  }
  return out;
}
