import { LayeredModel, type Engine } from '../engine';
import type { KVStore } from '../kvstore';
import { storeSource, type LinkContext } from '../linking';

/** The link context of a tenant: chunks and prefix blocks from the tiered store; per-layer graphs loaded once. */
export function linkContextFactory(engine: Engine, store: KVStore): (tenantSalt: string) => LinkContext {
  let layered: Promise<LayeredModel> | undefined;
  const loadLayered = () => (layered ??= LayeredModel.load(engine.config));
  return (tenantSalt) => ({ engine, source: storeSource(engine, store, tenantSalt), prefixStore: store, tenantSalt, loadLayered });
}
