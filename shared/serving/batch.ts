import { linkBatch, type LinkContext } from '../linking';
import type { RowResult } from '../engine/generate';
import { decodeRows, promptPrefix, type OnToken } from './group';
import { linkOptions, type ServeRequest } from './request';
import { finish, promptCounts, type ServeResult } from './result';

/**
 * Serve requests with *different* contexts together (continuous batching, as vLLM batches sequences): each request
 * is linked into its own cache row, all link tokens and questions run in one forward call, and the rows decode
 * together. Every row gets what it would get alone (its own prefix, sampling and stop strings). The requests share a
 * tenant salt and ignore_eos.
 */
export async function serveBatch(ctx: LinkContext, reqs: ServeRequest[], onToken?: OnToken): Promise<ServeResult[]> {
  const { engine } = ctx;
  if (!reqs.length) return [];
  const t0 = performance.now();
  const linked = await linkBatch(
    ctx,
    reqs.map((r) => ({ input: { prefix: promptPrefix(engine, r), chunks: r.chunks, question: r.question }, options: linkOptions(r.mode), maxNewTokens: r.maxTokens })),
  );
  const ttft = performance.now() - t0;
  let gen: RowResult[];
  try {
    gen = await decodeRows(engine, linked.cache, linked.logits, reqs, onToken);
  } finally {
    linked.cache.release();
  }
  const decodeMs = performance.now() - t0 - ttft;
  return reqs.map((r, i) => finish(r, gen[i], promptCounts(linked.stats[i]), { group: 1, batch: reqs.length, ttft, decodeMs }));
}
