import type { KVBlock } from '../engine';

/** How a request's context is turned into KV (see ../shared/DESIGN.md §1 of the design notes). */
export const LINK_MODES = ['full', 'prefix', 'naive', 'attnlink', 'attnlink0', 'cacheblend'] as const;
export type LinkMode = (typeof LINK_MODES)[number];

export const LINK_DEFAULTS = {
  /** AttnLink: tokens recomputed at the start of each chunk (the paper's headline k). */
  k: 16,
  /** CacheBlend: fraction of chunk tokens recomputed after the check layer (LMCache's default 15%). */
  r: 0.15,
  /** CacheBlend: the check layer (LMCache checks layer 1). */
  checkLayer: 1,
  /** LegoLink-0: dummy sink tokens compiled before each chunk and dropped at link time. */
  sinkTokens: 4,
  /** Prefix mode: tokens per hashed block (vLLM's default block size). */
  blockSize: 16,
};

/**
 * CacheBlend's smallest r. CacheBlend keeps ceil(r × n) deviating tokens, so for any context up to 10,000 tokens every
 * r in (0, MIN_R] keeps exactly one: nothing useful is refused. And a worker reads doubles below 2.2e-308 as zero
 * (shared/engine/session.ts, flushDenormals): a bound far above that keeps the API's and the worker's checks the same.
 */
export const MIN_R = 1e-4;

export interface LinkOptions {
  mode: LinkMode;
  k?: number;
  r?: number;
  checkLayer?: number;
  sinkTokens?: number;
  /**
   * `one-pass` (default on the primitive graph): every recomputed token in one forward call, stale slots masked.
   * `sequential`: chunk by chunk in position order — what a stock Optimum graph can do.
   */
  path?: 'one-pass' | 'sequential';
}

/** A request's prompt as token segments: a prefix computed as-is at 0 (BOS, system prompt), chunks, the question. */
export interface LinkInput {
  prefix: number[];
  chunks: number[][];
  question: number[];
}

/** How a chunk was compiled. */
export type CompileVariant = { kind: 'plain' } | { kind: 'sink'; sinkTokens: number };

export function variantId(v: CompileVariant): string {
  return v.kind === 'plain' ? '' : `legolink0:sink=${v.sinkTokens}`;
}

/** Where compiled chunks come from (the KV store, or a fresh compile). */
export interface ChunkSource {
  chunk(tokens: number[], variant: CompileVariant): Promise<KVBlock>;
  /** Like chunk, and says whether the block was read from a store (a hit in any tier) or compiled on a miss. */
  fetch?(tokens: number[], variant: CompileVariant): Promise<FetchedChunk>;
}

/** A chunk's KV, and whether it was read from a store (`hit`) or compiled for this request (a miss). */
export interface FetchedChunk {
  block: KVBlock;
  hit: boolean;
}

/** A chunk from `source`: a source that cannot tell where its blocks come from counts as compiling them (no hit). */
export function fetchChunk(source: ChunkSource, tokens: number[], variant: CompileVariant): Promise<FetchedChunk> {
  return source.fetch ? source.fetch(tokens, variant) : source.chunk(tokens, variant).then((block) => ({ block, hit: false }));
}

/** Key-value block storage for prefix mode's hashed blocks (the KV store satisfies it). */
export interface BlockStore {
  get(key: string): Promise<KVBlock | undefined>;
  put(key: string, block: KVBlock): Promise<void>;
}

export interface LinkStats {
  mode: string;
  promptTokens: number;
  /** Tokens run through the model (CacheBlend: token-layers ÷ layers). */
  computedTokens: number;
  /**
   * Prompt tokens whose KV was read from a store (a chunk's hit in any tier, a prefix block) and kept, unchanged or
   * re-rotated: not recomputed, not compiled on a miss (OpenAI's and vLLM's cached tokens). Whole tokens in every mode
   * (CacheBlend: the hit chunks' tokens it did not recompute after the check layer).
   */
  reusedTokens: number;
  /** Prompt tokens of chunks compiled on a miss for this request (their KV was not in the store). */
  compiledTokens: number;
  computedFraction: number;
  /** Milliseconds from the call to the first token's logits: chunk fetch, placement and compute. */
  ttftMs: number;
  fetchMs: number;
}
