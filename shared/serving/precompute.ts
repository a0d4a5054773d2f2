import { z } from 'zod';
import type { Engine } from '../engine';
import { chunkKey, type ChunkKey, type KVStore } from '../kvstore';

/** A precompute job: one chunk's tokens to compile alone from position 0 into the store. */
export const PrecomputeJob = z.object({
  tokens: z.array(z.number().int().nonnegative()).min(1),
  tenantSalt: z.string().default(''),
  variant: z.string().default(''),
});
export type PrecomputeJob = z.infer<typeof PrecomputeJob>;

export interface PrecomputeResult {
  key: ChunkKey;
  tokens: number;
  /** Where the chunk came from: already in a tier, or compiled now. */
  source: string;
  ms: number;
}

/** Warm the store with one chunk (compiled once across processes by the store's single flight). */
export async function precomputeChunk(engine: Engine, store: KVStore, job: PrecomputeJob): Promise<PrecomputeResult> {
  if (job.variant !== '') throw new Error(`unknown compile variant '${job.variant}'`);
  const t0 = performance.now();
  const key = chunkKey({ modelId: engine.id, tokens: job.tokens, tenantSalt: job.tenantSalt, variant: job.variant });
  const r = await store.lookupOrCompute(key, () => engine.compile(job.tokens, 0));
  // Found in this process's memory or disk: the shared tier (Redis, what other workers and the API's warm count read)
  // may have lost it since (an eviction, a restart); it is written there again if so (one EXISTS when it is not).
  if (r.source === 'memory' || r.source === 'disk') await store.restore(key, r.block, r.source);
  // 'compiled' by this call; anything else (a tier, or another call's compile) was already cached.
  const source = r.source === 'compiled' ? 'compiled' : 'cached';
  return { key, tokens: job.tokens.length, source, ms: performance.now() - t0 };
}
