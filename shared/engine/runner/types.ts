import type { KVCache } from '../cache';

/** One row of a forward call: tokens to compute at the given positions, written into `slots` (default: appended). */
export interface RowInput {
  tokens: ArrayLike<number>;
  positions: ArrayLike<number>;
  slots?: ArrayLike<number>;
}

/** KV element type at a graph's boundary; the cache is float32 either way. */
export type KVDtype = 'float32' | 'float16';

/**
 * What a graph runner can do; linking and serving ask this instead of which graph it is (vLLM v1 keeps the model
 * runner behind one interface the scheduler never looks inside; node-llama-cpp's LlamaContext likewise hides the
 * backend from its sequences).
 */
export interface RunnerCapabilities {
  /**
   * A token attends by position: holes and stale slots in the cache, slots after it in the cache, and out-of-order
   * positions within one call all work (the one-pass link path, cross-request batches with placed chunks).
   * Without it a row's tokens see every valid cached slot of the row, so everything cached must precede them.
   */
  positionMasked: boolean;
  /** forward's `pastSlots`: a call may pass only a prefix of the cache as its past. */
  pastSlots: boolean;
  /**
   * The graph takes position ids. Without them (GroupQueryAttention-op graphs) rotary positions come from the
   * past length: a row's tokens must continue its cache contiguously (valid slots 0..n-1, positions n, n+1, ...).
   */
  positionIds: boolean;
  /** Element type of the graph's past/present KV (converted at the boundary; the cache stays float32). */
  kvDtype: KVDtype;
  /**
   * The graph computes logits only for the tokens asked for (the primitive graph's `logits_index`, exports since
   * 2026-12-05). Without it every call returns [B, S, vocab] logits, which a long call must budget for.
   */
  logitsIndex: boolean;
}

export interface RunInput {
  cache: KVCache;
  rows: RowInput[];
  /** Padded tokens per row. */
  S: number;
  /** [B, S] token ids and positions, padded. */
  ids: BigInt64Array;
  pos: BigInt64Array;
  pastSlots?: number;
  /**
   * Which logits the caller reads: every token's, or each row's last real token's. A graph that can select tokens
   * (the primitive graph's `logits_index`) then computes the head for those alone; others return all of them.
   */
  logits: 'last' | 'all';
}

export interface RunOutput {
  /**
   * float32 logits (converted when the graph returns float16): [B, S, vocab], or [B, vocab] (each row's last real
   * token; an empty row's entry is meaningless) when `lastOnly`.
   */
  logits: Float32Array;
  lastOnly: boolean;
  /** Per layer [B, kvHeads, srcLen, headDim]; row b's new token s sits at srcStart[b] + s. */
  newK: Float32Array[];
  newV: Float32Array[];
  srcLen: number;
  srcStart: ArrayLike<number>;
  /** KV floats the graph returned (everything it hands back: the new tokens, or past and new). */
  kvFloatsOut: number;
  /** Floats converted between float32 and float16 in this call (in and out; 0 for float32 graphs). */
  floatsConverted: number;
}

/** A session of one graph contract behind one interface (shared/engine/runner/primitive.ts, stock.ts). */
export interface GraphRunner {
  /** For logs and error messages only: decisions go through `caps`. */
  readonly kind: 'primitive' | 'stock';
  readonly file: string;
  readonly caps: RunnerCapabilities;
  /** Refuse (EngineInputError) a call this graph cannot compute, before any slot is taken. */
  check(cache: KVCache, rows: RowInput[]): void;
  /** How many cached slots a call of S tokens attends over, and whether they are passed as a packed copy. */
  pastPlan(cache: KVCache, S: number, pastSlots?: number): { used: number; compact: boolean; P: number };
  run(input: RunInput): Promise<RunOutput>;
}
