import { sliceBlock, type Engine, type KVBlock, type KVCache, type RowInput } from '../engine';
import { range, type Layout } from './layout';
import { fetchChunk, type ChunkSource, type CompileVariant, type FetchedChunk, type LinkInput } from './types';

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
  /** Chunk tokens read from the store and not recomputed; chunk tokens compiled on a miss (chunkCounts). */
  reused: number;
  compiled: number;
}

export async function linkPic(engine: Engine, source: ChunkSource, input: LinkInput, lay: Layout, cache: KVCache, plan: PicPlan): Promise<PicResult> {
  const t0 = performance.now();
  const fetched = await Promise.all(input.chunks.map((c) => fetchChunk(source, c, plan.variant)));
  const blocks = fetched.map((f) => f.block);
  const fetchMs = performance.now() - t0;
  const ks = linkTokens(input, plan.k);
  const computed = lay.prefixLen + ks.reduce((a, b) => a + b, 0) + input.question.length;
  const { reused, compiled } = chunkCounts(fetched, ks);

  if (plan.path === 'sequential') {
    const [logits] = await forwardSequential(engine, cache, [{ input, lay, blocks, k: plan.k }]);
    return { logits, computed, fetchMs, reused, compiled };
  }

  // one-pass
  const row = picRow(engine, cache, 0, input, lay, blocks, plan.k);
  const logits = await forwardRows(engine, cache, [row]);
  return { logits: logits[0], computed, fetchMs, reused, compiled };
}

/**
 * Of a request's chunks: the tokens read from the store and kept (a hit's tokens less the `recomputed` link tokens of
 * that chunk), and the tokens compiled on a miss (a miss's whole chunk). What usage's cached tokens count.
 */
export function chunkCounts(fetched: FetchedChunk[], recomputed: number[]): { reused: number; compiled: number } {
  let reused = 0;
  let compiled = 0;
  fetched.forEach((f, i) => {
    if (f.hit) reused += f.block.length - recomputed[i];
    else compiled += f.block.length;
  });
  return { reused, compiled };
}

/** One request of a sequential link: its input and layout, its chunks' compiled blocks, the link tokens per chunk. */
export interface SequentialItem {
  input: LinkInput;
  lay: Layout;
  blocks: KVBlock[];
  k: number;
}

/**
 * The sequential path for one request or a batch of them (row b of the cache is items[b]): walk the prompts in
 * position order, every row in step — the prefixes in one call; then per chunk index, every row's first k tokens
 * of that chunk in one call, and the rest of those chunks placed; then every question in one call. Each call only
 * looks back (every token sees all its row has cached, and its row's earlier tokens), so it is what a graph without
 * position-masked attention can compute: 2 + (chunks with link tokens) calls whatever the number of rows. Rows
 * whose prompt has no chunk at an index, or no link token there, sit that call out. Returns each row's last logits.
 */
export async function forwardSequential(engine: Engine, cache: KVCache, items: SequentialItem[]): Promise<Float32Array[]> {
  const { rope } = engine;
  const none: RowInput = { tokens: [], positions: [] };
  const ks = items.map((it) => linkTokens(it.input, it.k));
  if (items.some((it) => it.lay.prefixLen)) {
    await engine.forward(cache, items.map((it) => (it.lay.prefixLen ? { tokens: it.input.prefix, positions: range(0, it.lay.prefixLen) } : none)));
  }
  const chunks = Math.max(0, ...items.map((it) => it.blocks.length));
  for (let i = 0; i < chunks; i++) {
    const rows = items.map((it, b): RowInput => (i < it.blocks.length && ks[b][i] ? { tokens: it.input.chunks[i].slice(0, ks[b][i]), positions: range(it.lay.chunkOffsets[i], ks[b][i]) } : none));
    if (rows.some((r) => r.tokens.length)) await engine.forward(cache, rows);
    items.forEach((it, b) => {
      if (i >= it.blocks.length) return;
      const k = ks[b][i];
      const block = it.blocks[i];
      if (k < block.length) cache.place(b, k ? sliceBlock(block, k, block.length) : block, range(it.lay.chunkOffsets[i] + k, block.length - k), rope);
    });
  }
  const { logits } = await engine.forward(cache, items.map((it) => ({ tokens: it.input.question, positions: range(it.lay.questionOffset, it.input.question.length) })));
  return logits;
}

/** A row built by picRow: its input, and how many of its leading tokens belong to the first half of its chunks. */
export type PicRow = { tokens: number[]; positions: number[]; slots: number[]; split: number; /** tokens before the first link token (the prefix) */ linkFrom: number };

/**
 * Compute one-pass rows (picRow) in two calls: first each row's prefix and the link tokens of its first half of chunks,
 * over only the slots those can see (forward's `pastSlots`); then the rest and the question, over the whole cache,
 * where the first call's tokens are now cached. Every token sees what it sees in one call, so the result is the same
 * (to float rounding); the attention work is less: with 8 chunks the first half's link tokens attend over ~half the
 * prompt instead of all of it (a quarter fewer query-key pairs in all). One call when the split would not shorten
 * the first call's past (few chunks, few link tokens: Engine.pastPlan), on the stock graph (no pastSlots), or when a
 * row would have nothing left for the second call. Returns each row's last-token logits.
 */
export async function forwardRows(engine: Engine, cache: KVCache, rows: PicRow[]): Promise<Float32Array[]> {
  const pastSlots = splitPast(engine, cache, rows);
  if (pastSlots === undefined) return (await engine.forward(cache, rows)).logits;
  const part = (r: PicRow, from: number, to: number): RowInput => ({ tokens: r.tokens.slice(from, to), positions: r.positions.slice(from, to), slots: r.slots.slice(from, to) });
  await engine.forward(cache, rows.map((r) => part(r, 0, r.split)), { pastSlots });
  return (await engine.forward(cache, rows.map((r) => part(r, r.split, r.tokens.length)))).logits;
}

/**
 * The first call's `pastSlots` when splitting pays, else undefined. Its tokens see only slots up to their own: every
 * row's slots are in prompt order, so the past ends after the last slot of a first-call token.
 */
function splitPast(engine: Engine, cache: KVCache, rows: PicRow[]): number | undefined {
  if (!engine.capabilities.pastSlots) return undefined;
  // Every row keeps a token for the second call (its logits come from there), and some row has link tokens to move.
  if (rows.some((r) => r.tokens.length && r.split >= r.tokens.length)) return undefined;
  if (!rows.some((r) => r.split > r.linkFrom)) return undefined;
  let pastSlots = 0;
  for (const r of rows) for (let t = 0; t < r.split; t++) pastSlots = Math.max(pastSlots, r.slots[t] + 1);
  const S1 = Math.max(...rows.map((r) => r.split));
  return engine.pastPlan(cache, S1, pastSlots).P < engine.pastPlan(cache, S1).P ? pastSlots : undefined;
}

/**
 * One-pass placement of one request into row `row` of a cache: every chunk placed whole (keys re-rotated), the first
 * k slots of each chunk marked stale; returns the row's input (prefix, link tokens, question) for one forward call.
 * Rows of different requests can go into the same call (serving's cross-request batches).
 */
export function picRow(engine: Engine, cache: KVCache, row: number, input: LinkInput, lay: Layout, blocks: KVBlock[], k: number): PicRow {
  const { rope } = engine;
  const ks = linkTokens(input, k);
  const prefixSlots = lay.prefixLen ? range(cache.reserve(row, lay.prefixLen), lay.prefixLen) : [];
  const tokens: number[] = [...input.prefix];
  const positions: number[] = range(0, lay.prefixLen);
  const slots: number[] = [...prefixSlots];
  const valid = cache.rowSlots(row).valid;
  // forwardRows' split: the prefix and the first half of the chunks' link tokens (none below 4 chunks).
  const half = blocks.length >= 4 ? Math.floor(blocks.length / 2) : 0;
  let split = 0;
  for (let i = 0; i < blocks.length; i++) {
    if (i === half && half) split = tokens.length;
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
  return { tokens, positions, slots, split, linkFrom: lay.prefixLen };
}

/** How many tokens of each chunk are recomputed: the first k, or the whole chunk when it is shorter. */
export function linkTokens(input: LinkInput, k: number): number[] {
  return input.chunks.map((c) => Math.min(k, c.length));
}
