import type { ServiceConfig } from '../config';
import type { Engine } from '../engine';
import { chunkKey, KVStore, type ResidencyListener } from '../kvstore';
import { compileVariant, variantId, type ChunkSource, type CompileVariant, type FetchedChunk } from '../linking';

/** Prefix mode's block pool: process memory only. */
export function openPrefixStore(cfg: ServiceConfig, engine: Engine): Promise<KVStore> {
  return KVStore.open({ modelId: engine.id, shape: engine.shape, memory: { budgetBytes: cfg.KV_PREFIX_MEMORY_BYTES }, disk: false, redis: false });
}

/**
 * The tiered KV store as the services configure it: a tier is off when its budget is 0. `residency` hears its memory
 * and disk tiers' residency events (the worker publishes them to the routing index).
 */
export function openStore(cfg: ServiceConfig, engine: Engine, residency?: ResidencyListener): Promise<KVStore> {
  return KVStore.open({
    ...(residency ? { residency } : {}),
    modelId: engine.id,
    shape: engine.shape,
    dtype: engine.capabilities.kvDtype,
    memory: cfg.KV_MEMORY_BYTES > 0 ? { budgetBytes: cfg.KV_MEMORY_BYTES } : false,
    disk: cfg.KV_DISK_BYTES > 0 ? { dir: `${cfg.KV_DISK_DIR}/${engine.id}`, budgetBytes: cfg.KV_DISK_BYTES } : false,
    redis: { url: cfg.KV_REDIS_URL, prefix: cfg.KV_REDIS_PREFIX },
  });
}

/**
 * The worker's chunks: from the tiered KV store, compiled once on a miss (single flight across processes), each saying
 * whether it was a hit. A block read from any tier, or from another process's compile that this one waited for in
 * Redis, is a hit; a compile here on a miss is not; a call that joined another in this process counts as that one.
 * What usage's cached tokens count (LinkStats.reusedTokens) and compiled tokens count.
 */
export function storeChunkSource(engine: Engine, store: KVStore, tenantSalt = ''): ChunkSource {
  const fetch = async (tokens: number[], variant: CompileVariant): Promise<FetchedChunk> => {
    const key = chunkKey({ modelId: engine.id, tokens, tenantSalt, variant: variantId(variant) });
    const r = await store.lookupOrCompute(key, () => compileVariant(engine, tokens, variant));
    return { block: r.block, hit: (r.source === 'joined' ? r.leader : r.source) !== 'compiled' };
  };
  return { fetch, chunk: async (tokens, variant) => (await fetch(tokens, variant)).block };
}
