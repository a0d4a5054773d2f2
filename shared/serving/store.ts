import type { ServiceConfig } from '../config';
import type { Engine } from '../engine';
import { KVStore } from '../kvstore';

/** Prefix mode's block pool: process memory only. */
export function openPrefixStore(cfg: ServiceConfig, engine: Engine): Promise<KVStore> {
  return KVStore.open({ modelId: engine.id, shape: engine.shape, memory: { budgetBytes: cfg.KV_PREFIX_MEMORY_BYTES }, disk: false, redis: false });
}

/** The tiered KV store as the services configure it: a tier is off when its budget is 0. */
export function openStore(cfg: ServiceConfig, engine: Engine): Promise<KVStore> {
  return KVStore.open({
    modelId: engine.id,
    shape: engine.shape,
    memory: cfg.KV_MEMORY_BYTES > 0 ? { budgetBytes: cfg.KV_MEMORY_BYTES } : false,
    disk: cfg.KV_DISK_BYTES > 0 ? { dir: `${cfg.KV_DISK_DIR}/${engine.id}`, budgetBytes: cfg.KV_DISK_BYTES } : false,
    redis: { url: cfg.KV_REDIS_URL, prefix: cfg.KV_REDIS_PREFIX },
  });
}
