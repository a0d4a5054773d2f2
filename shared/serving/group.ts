import { contextSharable, link, modeLabel, type LinkContext } from '../linking';
import { finish, linkedCounts } from './result';
import { linkOptions, type ServeRequest, type ServeResult } from './request';

/**
 * Serve requests that share one context: link the context once (in the group's mode), copy it into one row per
 * request, compute every question in one padded call, and decode the rows together.
 */
export async function serveGroup(
  ctx: LinkContext,
  reqs: ServeRequest[],
  onToken?: (index: number, token: number) => void,
): Promise<ServeResult[]> {
  const { engine } = ctx;
  if (!reqs.length) return [];
  const t0 = performance.now();
  const bos = engine.config.bosTokenId;
  const maxNew = reqs.map((r) => r.maxTokens);
  // A group shares ignore_eos (it is part of the group key).
  const stopIds = reqs[0].ignoreEos ? [] : undefined;
  if (!reqs[0].chunks.length) {
    // Plain completions: a padded batch, full prefill.
    const prompts = reqs.map((r) => [bos, ...r.question]);
    const { cache, logits } = await engine.prefill(prompts, Math.max(...maxNew));
    const ttft = performance.now() - t0;
    const gen = await engine.generate(cache, logits, { maxTokens: maxNew, onToken, stopIds });
    const decodeMs = performance.now() - t0 - ttft;
    return reqs.map((r, i) =>
      finish(engine, r, gen.tokens[i], gen.finish[i], { prompt: prompts[i].length, cached: 0, computed: prompts[i].length, mode: 'full', group: reqs.length, ttft, decodeMs }),
    );
  }
  const mode = linkOptions(reqs[0].mode);
  if (reqs.length > 1 && !contextSharable(mode)) throw new Error(`mode ${modeLabel(mode)} cannot share a linked context (see contextSharable)`);
  if (reqs.length === 1 && reqs[0].question.length) {
    // One request: link with its question in place (no context copy).
    const r = reqs[0];
    const one = await link(ctx, { prefix: [bos], chunks: r.chunks, question: r.question }, mode, r.maxTokens);
    const ttft = performance.now() - t0;
    await one.after();
    const gen = await engine.generate(one.cache, [one.logits], { maxTokens: r.maxTokens, onToken, stopIds });
    one.cache.release();
    return [
      finish(engine, r, gen.tokens[0], gen.finish[0], {
        ...linkedCounts(one.stats),
        group: 1,
        ttft,
        decodeMs: performance.now() - t0 - ttft,
      }),
    ];
  }
  const linked = await link(ctx, { prefix: [bos], chunks: reqs[0].chunks, question: [] }, mode, 0, true);
  const ctxLen = linked.stats.promptTokens;
  const qMax = Math.max(...reqs.map((r) => r.question.length));
  const cache = engine.newCache(reqs.length, ctxLen + qMax + Math.max(...maxNew));
  for (let b = 0; b < reqs.length; b++) cache.copyRow(linked.cache, 0, b, ctxLen);
  const rows = reqs.map((r) => ({ tokens: r.question, positions: r.question.map((_, i) => ctxLen + i) }));
  const empty = rows.some((r) => !r.tokens.length);
  const { logits } = empty
    ? { logits: rows.map((r) => (r.tokens.length ? undefined : linked.logits)) as Float32Array[] }
    : await engine.forward(cache, rows);
  if (empty) {
    // A request without a question continues straight from the context's last token.
    const withQ = rows.map((r) => (r.tokens.length ? r : { tokens: [], positions: [] }));
    const res = await engine.forward(cache, withQ);
    rows.forEach((r, i) => {
      if (r.tokens.length) logits[i] = res.logits[i];
    });
  }
  const ttft = performance.now() - t0;
  await linked.after();
  linked.cache.release();
  const gen = await engine.generate(cache, logits, { maxTokens: maxNew, onToken, stopIds });
  cache.release();
  const decodeMs = performance.now() - t0 - ttft;
  return reqs.map((r, i) => {
    const prompt = ctxLen + r.question.length;
    const computedCtx = linked.stats.computedTokens;
    return finish(engine, r, gen.tokens[i], gen.finish[i], {
      prompt,
      cached: Math.max(0, Math.round(ctxLen - computedCtx)),
      computed: computedCtx + r.question.length,
      mode: linked.stats.mode,
      group: reqs.length,
      ttft,
      decodeMs,
    });
  });
}
