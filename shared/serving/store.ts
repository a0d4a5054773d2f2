import type { ServiceConfig } from '../config';
import type { Engine } from '../engine';
import { KVStore } from '../kvstore';

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
