import { sliceBlock, type Engine, type KVBlock } from '../engine';
import { chunkKey, type KVStore } from '../kvstore';
import { variantId, type ChunkSource, type CompileVariant } from './types';

/**
 * Compile a chunk alone from position 0 in a variant:
 * - plain: the chunk's tokens at 0..L-1;
 * - sink (LegoLink-0): `sinkTokens` dummy sink tokens at 0..s-1 soak up the attention a chunk start would otherwise
 *   attract; the chunk sits at s..s+L-1 and only its KV is kept (the sinks are dropped).
 */
export async function compileVariant(engine: Engine, tokens: number[], variant: CompileVariant): Promise<KVBlock> {
  if (variant.kind === 'plain') return engine.compile(tokens, 0);
  const sink = engine.config.sinkTokenId ?? engine.config.bosTokenId;
  const s = variant.sinkTokens;
  const block = await engine.compile([...Array(s).fill(sink), ...tokens], 0);
  return sliceBlock(block, s, s + tokens.length);
}

/** Compile on every call: no reuse (tests, and the cost a cache saves). */
export function compileSource(engine: Engine): ChunkSource {
  return { chunk: (tokens, variant) => compileVariant(engine, tokens, variant) };
}

/** Chunks from the tiered KV store, compiled once on a miss (single flight across processes). */
export function storeSource(engine: Engine, store: KVStore, tenantSalt = ''): ChunkSource {
  return {
    chunk: (tokens, variant) =>
      store.getOrCompute(chunkKey({ modelId: engine.id, tokens, tenantSalt, variant: variantId(variant) }), () =>
        compileVariant(engine, tokens, variant),
      ),
  };
}
