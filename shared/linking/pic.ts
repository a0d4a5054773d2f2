import { sliceBlock, type Engine, type KVBlock, type KVCache, type RowInput } from '../engine';
import { range, type Layout } from './layout';
import type { ChunkSource, CompileVariant, LinkInput } from './types';

/**
 * Position-independent linking: cached chunks placed at their offsets (keys re-rotated), then a few tokens
 * recomputed in context.
 *
 * - naive: only the prefix and the question are computed;
 * - attnlink (AttnLink / LegoLink-k): also the first k tokens of every chunk, each attending causally to everything
 *   before it — cached KV for untouched tokens, fresh KV for earlier recomputed ones;
 * - attnlink0 (LegoLink-0): chunks compiled behind sink tokens (variant `sink`), linked like naive.
 *
 * Two paths give the same result. one-pass: place every chunk whole, mask the link tokens' stale slots, and compute
 * prefix, link tokens and question in one call (needs the primitive graph's position-masked attention).
 * sequential: walk the prompt in position order — compute the prefix, then per chunk compute its first k tokens and
 * place the rest, then compute the question — so every call only looks back (what a stock graph can do).
 */
export interface PicPlan {
  variant: CompileVariant;
  /** Tokens recomputed at the start of each chunk (0 for naive and attnlink0). */
  k: number;
  path: 'one-pass' | 'sequential';
}

export interface PicResult {
  logits: Float32Array;
  computed: number;
  fetchMs: number;
}

export async function linkPic(engine: Engine, source: ChunkSource, input: LinkInput, lay: Layout, cache: KVCache, plan: PicPlan): Promise<PicResult> {
  const t0 = performance.now();
  const blocks = await Promise.all(input.chunks.map((c) => source.chunk(c, plan.variant)));
  const fetchMs = performance.now() - t0;
  const { rope } = engine;
  const ks = linkTokens(input, plan.k);
  const computed = lay.prefixLen + ks.reduce((a, b) => a + b, 0) + input.question.length;

  if (plan.path === 'sequential') {
    if (lay.prefixLen) await engine.forward(cache, [{ tokens: input.prefix, positions: range(0, lay.prefixLen) }]);
    for (let i = 0; i < blocks.length; i++) {
      const off = lay.chunkOffsets[i];
      const k = ks[i];
      if (k) await engine.forward(cache, [{ tokens: input.chunks[i].slice(0, k), positions: range(off, k) }]);
      if (k < blocks[i].length) cache.place(0, k ? sliceBlock(blocks[i], k, blocks[i].length) : blocks[i], range(off + k, blocks[i].length - k), rope);
    }
    const { logits } = await engine.forward(cache, [{ tokens: input.question, positions: range(lay.questionOffset, input.question.length) }]);
    return { logits: logits[0], computed, fetchMs };
  }

  // one-pass
  const row = picRow(engine, cache, 0, input, lay, blocks, plan.k);
  const { logits } = await engine.forward(cache, [row]);
  return { logits: logits[0], computed, fetchMs };
}

/**
 * One-pass placement of one request into row `row` of a cache: every chunk placed whole (keys re-rotated), the first
 * k slots of each chunk marked stale; returns the row's input (prefix, link tokens, question) for one forward call.
 * Rows of different requests can go into the same call (serving's cross-request batches).
 */
export function picRow(engine: Engine, cache: KVCache, row: number, input: LinkInput, lay: Layout, blocks: KVBlock[], k: number): RowInput & { slots: number[] } {
  const { rope } = engine;
  const ks = linkTokens(input, k);
  const prefixSlots = lay.prefixLen ? range(cache.reserve(row, lay.prefixLen), lay.prefixLen) : [];
  const tokens: number[] = [...input.prefix];
  const positions: number[] = range(0, lay.prefixLen);
  const slots: number[] = [...prefixSlots];
  const valid = cache.rowSlots(row).valid;
  for (let i = 0; i < blocks.length; i++) {
    const off = lay.chunkOffsets[i];
    const first = cache.place(row, blocks[i], range(off, blocks[i].length), rope);
    for (let t = 0; t < ks[i]; t++) {
      valid[first + t] = 0; // stale: recomputed in this call
      tokens.push(input.chunks[i][t]);
      positions.push(off + t);
      slots.push(first + t);
    }
  }
  const qStart = cache.reserve(row, input.question.length);
  for (let t = 0; t < input.question.length; t++) {
    tokens.push(input.question[t]);
    positions.push(lay.questionOffset + t);
    slots.push(qStart + t);
  }
  return { tokens, positions, slots };
}

/** How many tokens of each chunk are recomputed: the first k, or the whole chunk when it is shorter. */
function linkTokens(input: LinkInput, k: number): number[] {
  return input.chunks.map((c) => Math.min(k, c.length));
}
