/**
 * EPIC's RAG workload at a real shape, as bench:shapes runs it (8 chunks of 512 tokens + a 32-token question after
 * `<bos>`, seeded random token ids), and the process-memory readings the shape benches take. bench:peer draws its
 * prompts from a pool of chunks here.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { shuffled } from '../common';

export const CHUNKS = 8;
export const CHUNK_TOKENS = 512;
export const QUESTION_TOKENS = 32;
export const ANSWER_TOKENS = 8;

/** Deterministic ids in [lo, hi) (bench:shapes' generator: the same seed gives the same ids). */
export function ids(n: number, seed: number, lo: number, hi: number): number[] {
  let s = seed >>> 0;
  return Array.from({ length: n }, () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return lo + (s % (hi - lo));
  });
}

export interface PoolPrompt {
  /** Which pool chunks, in prompt order. */
  picks: number[];
  chunks: number[][];
  question: number[];
  /** A second question over the same chunks in the same order (the "same documents, next question" prompt). */
  followUp: number[];
}

/**
 * Prompts drawn from a pool of `poolSize` chunks: prompt q takes `CHUNKS` distinct pool chunks in a seeded shuffled
 * order, so consecutive prompts share chunks but rarely a first chunk (a prefix cache's miss). Ids in [lo, hi).
 */
export class ChunkPool {
  readonly chunks: number[][];

  constructor(
    readonly poolSize: number,
    readonly lo: number,
    readonly hi: number,
  ) {
    this.chunks = Array.from({ length: poolSize }, (_, k) => ids(CHUNK_TOKENS, 7919 * (k + 1), lo, hi));
  }

  prompt(q: number): PoolPrompt {
    const picks = shuffled(Array.from({ length: this.poolSize }, (_, i) => i), 1000 + q).slice(0, CHUNKS);
    return {
      picks,
      chunks: picks.map((k) => this.chunks[k]),
      question: ids(QUESTION_TOKENS, 31 * (q + 1) + 5, this.lo, this.hi),
      followUp: ids(QUESTION_TOKENS, 37 * (q + 1) + 11, this.lo, this.hi),
    };
  }
}

/** `<bos>`, the chunks in order, the question: the prompt's token ids. */
export function promptTokens(bos: number, chunks: number[][], question: number[]): number[] {
  return [bos, ...chunks.flat(), ...question];
}

/** Peak resident set since the last reset (VmHWM), in bytes. */
export function vmHWM(): number {
  const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'));
  return m ? Number(m[1]) * 1024 : process.resourceUsage().maxRSS * 1024;
}

/** Reset VmHWM to the current resident set (Linux's /proc/self/clear_refs); false where that is refused. */
export function resetHWM(): boolean {
  try {
    writeFileSync('/proc/self/clear_refs', '5');
    return true;
  } catch {
    return false;
  }
}
