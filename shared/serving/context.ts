import { LayeredModel, type Engine } from '../engine';
import type { KVStore } from '../kvstore';
import type { BlockStore, LinkContext } from '../linking';
import { storeChunkSource } from './store';

/**
 * The link context of a tenant: compiled chunks from the tiered store; prefix mode's hashed blocks in a store of their
 * own (process memory only, like vLLM's block pool: a prefix block is tied to everything before it, so it is cheap to
 * recompute and rarely worth shipping to disk or Redis); per-layer graphs loaded once.
 */
export function linkContextFactory(engine: Engine, store: KVStore, prefixStore: BlockStore): (tenantSalt: string) => LinkContext {
  let layered: Promise<LayeredModel> | undefined;
  const loadLayered = () => (layered ??= LayeredModel.load(engine.config, engine.sessionOptions));
  return (tenantSalt) => ({ engine, source: storeChunkSource(engine, store, tenantSalt), prefixStore, tenantSalt, loadLayered });
}
