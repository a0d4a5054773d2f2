import { createHash } from 'node:crypto';
import type { Engine, KVCache } from '../engine';
import { range, type Layout } from './layout';
import type { BlockStore } from './types';

/**
 * Exact prefix reuse, block-hashed like vLLM's automatic prefix caching: the prompt is cut into fixed blocks, block j's
 * key hashes block j's tokens with block j-1's key, so a block is found only when everything before it matched.
 * The longest run of cached leading blocks is reused (its KV sits at the same positions: no re-rotation), at least one
 * token is always computed (the last one's logits are needed), and the blocks computed now are stored afterwards.
 */
export function prefixBlockKeys(modelId: string, salt: string, tokens: number[], blockSize: number): string[] {
  const keys: string[] = [];
  let parent = createHash('sha256').update(`epic-serve/prefix/v1\0${modelId}\0${salt}`).digest('hex');
  for (let j = 0; (j + 1) * blockSize <= tokens.length; j++) {
    const h = createHash('sha256').update(parent);
    h.update(Buffer.from(Int32Array.from(tokens.slice(j * blockSize, (j + 1) * blockSize)).buffer));
    parent = h.digest('hex');
    keys.push(parent);
  }
  return keys;
}

export interface PrefixResult {
  logits: Float32Array;
  computed: number;
  reused: number;
  fetchMs: number;
  /** Store the blocks this call computed (run after the first token: it is not on the TTFT path). */
  commit: () => Promise<void>;
}

export async function linkPrefix(
  engine: Engine,
  store: BlockStore,
  lay: Layout,
  cache: KVCache,
  opts: { blockSize: number; salt?: string },
): Promise<PrefixResult> {
  const bs = opts.blockSize;
  const keys = prefixBlockKeys(engine.id, opts.salt ?? '', lay.tokens, bs);
  const usable = Math.floor((lay.total - 1) / bs); // never reuse the block holding the last token
  const t0 = performance.now();
  let hit = 0;
  for (; hit < Math.min(usable, keys.length); hit++) {
    const block = await store.get(keys[hit]);
    if (!block) break;
    cache.place(0, block, block.positions, engine.rope);
  }
  const fetchMs = performance.now() - t0;
  const from = hit * bs;
  const { logits } = await engine.forward(cache, [{ tokens: lay.tokens.slice(from), positions: range(from, lay.total - from) }]);
  return {
    logits: logits[0],
    computed: lay.total - from,
    reused: from,
    fetchMs,
    commit: async () => {
      for (let j = hit; j < keys.length; j++) await store.put(keys[j], cache.toBlock(0, j * bs, (j + 1) * bs));
    },
  };
}
