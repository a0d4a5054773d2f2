import type { LinkInput } from './types';

/** Where each segment of a prompt sits: prefix at 0, chunks end to end, then the question. */
export interface Layout {
  tokens: number[];
  total: number;
  prefixLen: number;
  chunkOffsets: number[];
  questionOffset: number;
}

export function layout(input: LinkInput): Layout {
  const tokens = [...input.prefix];
  const chunkOffsets: number[] = [];
  for (const c of input.chunks) {
    chunkOffsets.push(tokens.length);
    for (const t of c) tokens.push(t);
  }
  const questionOffset = tokens.length;
  for (const t of input.question) tokens.push(t);
  return { tokens, total: tokens.length, prefixLen: input.prefix.length, chunkOffsets, questionOffset };
}

export function range(start: number, n: number): number[] {
  return Array.from({ length: n }, (_, i) => start + i);
}
