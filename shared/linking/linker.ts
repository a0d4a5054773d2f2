import { ContextLengthError, LayeredModel, type Engine, type KVCache, type RowInput } from '../engine';
import { linkCacheBlend } from './cacheblend';
import { LinkInputError } from './errors';
import { layout, range } from './layout';
import { chunkCounts, forwardRows, forwardSequential, linkPic, linkTokens, picRow } from './pic';
import { linkPrefix } from './prefix';
import { fetchChunk, LINK_DEFAULTS, LINK_MODES, MIN_R, type BlockStore, type ChunkSource, type CompileVariant, type LinkInput, type LinkOptions, type LinkStats } from './types';

export interface LinkContext {
  engine: Engine;
  /** Compiled chunks (naive, attnlink, attnlink0, cacheblend). */
  source: ChunkSource;
  /** Hashed prefix blocks (prefix mode). */
  prefixStore?: BlockStore;
  /** Per-layer graphs (cacheblend); loaded on first use when absent, through `loadLayered` when given. */
  layered?: LayeredModel;
  loadLayered?: () => Promise<LayeredModel>;
  tenantSalt?: string;
}

export interface Linked {
  cache: KVCache;
  /** The last prompt token's logits: the first generated token is their argmax. */
  logits: Float32Array;
  stats: LinkStats;
  /** Work to do after the first token (prefix mode stores its new blocks). */
  after: () => Promise<void>;
}

/** A readable label for a mode and its option: `attnlink-16`, `cacheblend-15`, `full`. */
export function modeLabel(o: LinkOptions): string {
  if (o.mode === 'attnlink') return `attnlink-${o.k ?? LINK_DEFAULTS.k}`;
  if (o.mode === 'cacheblend') return `cacheblend-${Math.round((o.r ?? LINK_DEFAULTS.r) * 100)}`;
  return o.mode;
}

export function validateLink(engine: Engine, input: LinkInput, o: LinkOptions, maxNewTokens: number, contextOnly = false): void {
  if (!(LINK_MODES as readonly string[]).includes(o.mode)) {
    throw new LinkInputError(`unknown mode '${o.mode}'; one of ${LINK_MODES.join(', ')}`);
  }
  if (o.k !== undefined && (!Number.isInteger(o.k) || o.k < 0)) throw new LinkInputError(`k must be an integer >= 0, got ${o.k}`);
  if (o.r !== undefined && !(o.r >= MIN_R && o.r <= 1)) throw new LinkInputError(`r must be in [${MIN_R}, 1], got ${o.r}`);
  if (o.sinkTokens !== undefined && (!Number.isInteger(o.sinkTokens) || o.sinkTokens < 1)) throw new LinkInputError(`sinkTokens must be an integer >= 1, got ${o.sinkTokens}`);
  if (o.checkLayer !== undefined && (!Number.isInteger(o.checkLayer) || o.checkLayer < 0 || o.checkLayer >= engine.shape.layers)) {
    throw new LinkInputError(`checkLayer must be an integer in [0, ${engine.shape.layers - 1}], got ${o.checkLayer}`);
  }
  if (!input.chunks.length) throw new LinkInputError('a request needs at least one chunk');
  input.chunks.forEach((c, i) => {
    if (!c.length) throw new LinkInputError(`chunk ${i} is empty`);
  });
  if (!contextOnly && !input.question.length) throw new LinkInputError('the question is empty');
  const total = input.prefix.length + input.chunks.reduce((s, c) => s + c.length, 0) + input.question.length;
  if (total + maxNewTokens > engine.contextLength) {
    let end = input.prefix.length;
    const past = input.chunks.findIndex((c) => (end += c.length) > engine.contextLength);
    throw new ContextLengthError(total + maxNewTokens, engine.contextLength, past >= 0 ? `chunk ${past} ends past the context; the request` : 'the request');
  }
}

/**
 * Build a request's KV cache in the given mode and return its last prompt token's logits. With `contextOnly` the
 * question may be empty: the cache then holds the linked context, ready for several questions (see serving/).
 */
export async function link(ctx: LinkContext, input: LinkInput, o: LinkOptions, maxNewTokens = 0, contextOnly = false): Promise<Linked> {
  const { engine } = ctx;
  validateLink(engine, input, o, maxNewTokens, contextOnly);
  const t0 = performance.now();
  const lay = layout(input);
  const cache = engine.newCache(1, lay.total + maxNewTokens);
  const path = o.path ?? (engine.capabilities.positionMasked ? 'one-pass' : 'sequential');
  let logits: Float32Array;
  let computed: number;
  // Prompt tokens read from a store and kept, and tokens of chunks compiled on a miss (LinkStats).
  let reused = 0;
  let compiled = 0;
  let fetchMs = 0;
  let after = async () => {};
  try {
    switch (o.mode) {
      case 'full': {
        const r = await engine.forward(cache, [{ tokens: lay.tokens, positions: range(0, lay.total) }]);
        logits = r.logits[0];
        computed = lay.total;
        break;
      }
      case 'prefix': {
        if (!ctx.prefixStore) throw new LinkInputError('prefix mode needs a prefix block store');
        const r = await linkPrefix(engine, ctx.prefixStore, lay, cache, { blockSize: LINK_DEFAULTS.blockSize, salt: ctx.tenantSalt });
        ({ logits, computed, fetchMs } = r);
        reused = lay.total - computed; // the prompt's blocks found in the prefix store
        after = r.commit;
        break;
      }
      case 'naive':
      case 'attnlink':
      case 'attnlink0': {
        ({ logits, computed, fetchMs, reused, compiled } = await linkPic(engine, ctx.source, input, lay, cache, { ...picPlan(o), path }));
        break;
      }
      case 'cacheblend': {
        ctx.layered ??= await (ctx.loadLayered ? ctx.loadLayered() : LayeredModel.load(engine.config, engine.sessionOptions));
        const r = await linkCacheBlend(engine, ctx.layered, ctx.source, input, lay, cache, {
          r: o.r ?? LINK_DEFAULTS.r,
          checkLayer: o.checkLayer ?? LINK_DEFAULTS.checkLayer,
        });
        ({ logits, computed, fetchMs, reused, compiled } = r);
        break;
      }
    }
  } catch (e) {
    cache.release(); // a failed link (a chunk that cannot be fetched or compiled, a refused call) keeps no buffers
    throw e;
  }
  return { cache, logits, after, stats: linkStats(o, lay.total, computed, performance.now() - t0, fetchMs, reused, compiled) };
}

/** What a position-independent mode compiles (variant) and recomputes (the first k tokens of every chunk). */
function picPlan(o: LinkOptions): { variant: CompileVariant; k: number } {
  const k = o.mode === 'attnlink' ? (o.k ?? LINK_DEFAULTS.k) : 0;
  const variant: CompileVariant = o.mode === 'attnlink0' ? { kind: 'sink', sinkTokens: o.sinkTokens ?? LINK_DEFAULTS.sinkTokens } : { kind: 'plain' };
  return { variant, k };
}

function linkStats(o: LinkOptions, promptTokens: number, computed: number, ttftMs: number, fetchMs: number, reused: number, compiled: number): LinkStats {
  return {
    mode: modeLabel(o),
    promptTokens,
    computedTokens: computed,
    reusedTokens: reused,
    compiledTokens: compiled,
    computedFraction: computed / promptTokens,
    ttftMs,
    fetchMs,
  };
}

/**
 * Whether requests with the same chunks can share one linked context: the context linked alone (`contextOnly`), then
 * each question, gives what linking with the question gives. Not CacheBlend: its blender always recomputes the
 * prompt's last token, which without the question is a context token.
 */
export function contextSharable(o: LinkOptions): boolean {
  return o.mode !== 'cacheblend';
}

/**
 * Modes `linkBatch` can serve: position-independent linking, on the path the engine links with by default — one-pass
 * with position-masked attention (the primitive graph), sequential without it (stock graphs: see forwardSequential).
 */
export function batchable(engine: Engine, o: LinkOptions): boolean {
  const path = engine.capabilities.positionMasked ? 'one-pass' : 'sequential';
  return (o.mode === 'naive' || o.mode === 'attnlink' || o.mode === 'attnlink0') && (o.path ?? path) === path;
}

export interface BatchItem {
  input: LinkInput;
  options: LinkOptions;
  maxNewTokens: number;
}

export interface LinkedBatch {
  /** One row per item. */
  cache: KVCache;
  logits: Float32Array[];
  stats: LinkStats[];
}

/**
 * Link several requests with different contexts at once: each into its own row of one cache, every row's link tokens
 * and question computed in one forward call (continuous batching across requests, as vLLM batches prefills). Only
 * for `batchable` modes; each row gives what `link` gives for it alone.
 */
export async function linkBatch(ctx: LinkContext, items: BatchItem[]): Promise<LinkedBatch> {
  const { engine } = ctx;
  if (!items.length) throw new LinkInputError('linkBatch needs at least one request');
  for (const it of items) {
    validateLink(engine, it.input, it.options, it.maxNewTokens);
    if (!batchable(engine, it.options)) throw new LinkInputError(`mode ${modeLabel(it.options)} cannot be linked in a batch`);
  }
  const t0 = performance.now();
  const lays = items.map((it) => layout(it.input));
  const plans = items.map((it) => picPlan(it.options));
  const f0 = performance.now();
  const fetched = await Promise.all(items.map((it, b) => Promise.all(it.input.chunks.map((c) => fetchChunk(ctx.source, c, plans[b].variant)))));
  const blocks = fetched.map((f) => f.map((x) => x.block));
  const counts = items.map((it, b) => chunkCounts(fetched[b], linkTokens(it.input, plans[b].k)));
  const fetchMs = performance.now() - f0;
  const cache = engine.newCache(items.length, Math.max(...lays.map((l, i) => l.total + items[i].maxNewTokens)));
  let computed: number[];
  let logits: Float32Array[];
  try {
    if (engine.capabilities.positionMasked) {
      const rows = items.map((it, b) => picRow(engine, cache, b, it.input, lays[b], blocks[b], plans[b].k));
      computed = rows.map((r) => r.tokens.length);
      logits = await forwardRows(engine, cache, rows);
    } else {
      // A stock graph: the rows walk their prompts in step, one call per stage for all of them.
      logits = await forwardSequential(engine, cache, items.map((it, b) => ({ input: it.input, lay: lays[b], blocks: blocks[b], k: plans[b].k })));
      computed = items.map((it, b) => lays[b].prefixLen + it.input.chunks.reduce((s, c) => s + Math.min(plans[b].k, c.length), 0) + it.input.question.length);
    }
  } catch (e) {
    cache.release();
    throw e;
  }
  const ttftMs = performance.now() - t0;
  // A row's tokens are exactly what is computed for it: prefix, link tokens, question.
  return { cache, logits, stats: items.map((it, b) => linkStats(it.options, lays[b].total, computed[b], ttftMs, fetchMs, counts[b].reused, counts[b].compiled)) };
}
