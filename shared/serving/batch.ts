import { batchable, linkBatch, type LinkContext } from '../linking';
import { linkOptions, type ServeRequest, type ServeResult } from './request';
import { finish, linkedCounts } from './result';

/**
 * Whether a request can join a cross-request batch: it has chunks and a question, and its mode links with one forward
 * call per row (naive, attnlink, attnlink0 on the primitive graph).
 */
export function canBatch(ctx: LinkContext, r: ServeRequest): boolean {
  return r.chunks.length > 0 && r.question.length > 0 && batchable(ctx.engine, linkOptions(r.mode));
}

/**
 * Serve requests with *different* contexts together (continuous batching, as vLLM batches sequences): each request
 * is linked into its own cache row, all link tokens and questions run in one forward call, and the rows decode
 * together. Every row gets what it would get alone. The requests share a tenant salt and ignore_eos.
 */
export async function serveBatch(ctx: LinkContext, reqs: ServeRequest[], onToken?: (index: number, token: number) => void): Promise<ServeResult[]> {
  const { engine } = ctx;
  if (!reqs.length) return [];
  const t0 = performance.now();
  const bos = engine.config.bosTokenId;
  const linked = await linkBatch(
    ctx,
    reqs.map((r) => ({ input: { prefix: [bos], chunks: r.chunks, question: r.question }, options: linkOptions(r.mode), maxNewTokens: r.maxTokens })),
  );
  const ttft = performance.now() - t0;
  const stopIds = reqs[0].ignoreEos ? [] : undefined;
  let gen;
  try {
    gen = await engine.generate(linked.cache, linked.logits, { maxTokens: reqs.map((r) => r.maxTokens), onToken, stopIds });
  } finally {
    linked.cache.release();
  }
  const decodeMs = performance.now() - t0 - ttft;
  return reqs.map((r, i) => finish(engine, r, gen.tokens[i], gen.finish[i], { ...linkedCounts(linked.stats[i]), group: 1, batch: reqs.length, ttft, decodeMs }));
}
