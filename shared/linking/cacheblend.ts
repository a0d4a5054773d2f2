import type { Engine, KVCache, LayeredModel } from '../engine';
import { range, type Layout } from './layout';
import { fetchChunk, type ChunkSource, type LinkInput } from './types';

/**
 * CacheBlend-r, as LMCache's blender does it: chunks placed like naive; layers before the check layer recompute every
 * token; at the check layer each cached token's fresh key is compared with its cached key (squared L2 over heads and
 * dims), the top r of cached tokens by deviation are kept together with every uncached token (prefix, question —
 * the last token always), and only those run through the check layer and the layers after it, attending to cached
 * KV for everything else. Needs the per-layer graphs (LayeredModel).
 */
export interface BlendResult {
  logits: Float32Array;
  /** Token-layers computed ÷ layers. */
  computed: number;
  fetchMs: number;
  selected: number;
  /** Tokens of chunks read from the store that were not recomputed after the check layer; tokens of chunks compiled on a miss. */
  reused: number;
  compiled: number;
}

export async function linkCacheBlend(
  engine: Engine,
  layered: LayeredModel,
  source: ChunkSource,
  input: LinkInput,
  lay: Layout,
  cache: KVCache,
  opts: { r: number; checkLayer: number },
): Promise<BlendResult> {
  const { layers, kvHeads, headDim } = engine.shape;
  const N = lay.total;
  const t0 = performance.now();
  const fetched = await Promise.all(input.chunks.map((c) => fetchChunk(source, c, { kind: 'plain' })));
  const blocks = fetched.map((f) => f.block);
  const fetchMs = performance.now() - t0;
  // Tokens whose KV was read from the store (hit chunks), and those compiled on a miss.
  const hit = new Uint8Array(N);
  let compiled = 0;
  fetched.forEach((f, i) => (f.hit ? hit.fill(1, lay.chunkOffsets[i], lay.chunkOffsets[i] + f.block.length) : (compiled += f.block.length)));

  // Naive placement: slot s holds position s.
  const prefixStart = cache.reserve(0, lay.prefixLen);
  blocks.forEach((b, i) => cache.place(0, b, range(lay.chunkOffsets[i], b.length), engine.rope));
  const qStart = cache.reserve(0, input.question.length);
  if (prefixStart !== 0 || qStart !== lay.questionOffset) throw new Error('cacheblend expects an empty cache');
  const cached = new Uint8Array(N);
  for (let i = 0; i < blocks.length; i++) cached.fill(1, lay.chunkOffsets[i], lay.chunkOffsets[i] + blocks[i].length);

  const positions = range(0, N);
  let hidden = await layered.embed(lay.tokens);
  const d = hidden.length / N;

  // Layers before the check layer: every token, plain causal attention among themselves.
  const check = Math.min(opts.checkLayer, layers);
  for (let l = 0; l < check; l++) {
    const out = await layered.causal(l, hidden, positions, engine.callBudget);
    cache.writeLayer(l, out.key, out.value, N, positions);
    hidden = out.hidden;
  }
  if (check >= layers) {
    cache.markValid(0, positions, positions, lay.tokens);
    const logits = await layered.head(hidden.subarray((N - 1) * d), 1);
    return { logits, computed: N, fetchMs, selected: N, reused: 0, compiled };
  }

  // Check layer: deviation of fresh vs cached keys for cached tokens.
  const fresh = await layered.kv(check, hidden, positions);
  const dev: { t: number; v: number }[] = [];
  const ck = cache.keys[check];
  for (let t = 0; t < N; t++) {
    if (!cached[t]) continue;
    let s = 0;
    for (let h = 0; h < kvHeads; h++) {
      const a = (h * N + t) * headDim;
      const b = cache.offset(0, h, t);
      for (let x = 0; x < headDim; x++) {
        const diff = fresh.key[a + x] - ck[b + x];
        s += diff * diff;
      }
    }
    dev.push({ t, v: s });
  }
  dev.sort((a, b) => b.v - a.v || a.t - b.t);
  const keep = Math.ceil(opts.r * dev.length);
  const sel = new Uint8Array(N);
  for (let i = 0; i < keep; i++) sel[dev[i].t] = 1;
  for (let t = 0; t < N; t++) if (!cached[t]) sel[t] = 1;
  sel[N - 1] = 1;
  const selSlots = positions.filter((t) => sel[t]);
  const S = selSlots.length;
  const selTokens = selSlots.map((t) => lay.tokens[t]);

  // Check layer and after: only the selected tokens, over cached KV of the rest.
  let h: Float32Array = new Float32Array(S * d);
  selSlots.forEach((t, i) => h.set(hidden.subarray(t * d, (t + 1) * d), i * d));
  const valid = new Uint8Array(cache.slotValid.length);
  for (let t = 0; t < N; t++) valid[t] = cached[t] && !sel[t] ? 1 : 0;
  for (let l = check; l < layers; l++) {
    const out = await layered.attend(l, cache, h, selTokens, selSlots, valid);
    cache.writeLayer(l, out.key, out.value, S, selSlots);
    h = out.hidden;
  }
  cache.markValid(0, positions, positions, lay.tokens);
  const logits = await layered.head(h.subarray((S - 1) * d), 1);
  let reused = 0;
  for (let t = 0; t < N; t++) if (hit[t] && !sel[t]) reused++;
  return { logits, computed: (check * N + (layers - check) * S) / layers, fetchMs, selected: S, reused, compiled };
}
