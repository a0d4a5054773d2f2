import type { Engine, KVCache } from '../engine';
import { generateAll, type RowResult, type RowSpec } from '../engine/generate';
import { contextSharable, link, modeLabel, type LinkContext } from '../linking';
import { linkOptions, samplingParams, type ServeRequest } from './request';
import { finish, promptCounts, type ServeResult } from './result';

/** A generated token and the text it adds to its request's stream ('' while held back: see shared/engine/generate.ts). */
export type OnToken = (index: number, token: number, text: string) => void;

/** The tokens a request's prompt starts with: its own prefix (a chat template's head) or the tokenizer's (BOS or none). */
export function promptPrefix(engine: Pick<Engine, 'tokenizer'>, r: ServeRequest): number[] {
  return r.prefix ?? engine.tokenizer.promptPrefix;
}

/** A request's row in a generation: its max tokens, sampling, stop strings and stop ids. */
export function rowSpec(r: ServeRequest): RowSpec {
  return { maxTokens: r.maxTokens, sampling: samplingParams(r), stop: r.stop, stopIds: r.ignoreEos ? [] : undefined };
}

/** Decode every row of `cache` from its last logits (generate.ts), passing each token and its text to onToken. */
export function decodeRows(engine: Engine, cache: KVCache, logits: Float32Array[], reqs: ServeRequest[], onToken?: OnToken): Promise<RowResult[]> {
  return generateAll(engine, cache, logits, reqs.map(rowSpec), onToken && ((e) => e.kind === 'token' && onToken(e.row, e.token, e.text)));
}

/**
 * Serve requests that share one context: link the context once (in the group's mode), copy it into one row per
 * request, compute every question in one padded call, and decode the rows together (each with its own sampling).
 */
export async function serveGroup(ctx: LinkContext, reqs: ServeRequest[], onToken?: OnToken): Promise<ServeResult[]> {
  const { engine } = ctx;
  if (!reqs.length) return [];
  const t0 = performance.now();
  if (!reqs[0].chunks.length) {
    // Plain completions: a padded batch, full prefill.
    const prompts = reqs.map((r) => [...promptPrefix(engine, r), ...r.question]);
    const { cache, logits } = await engine.prefill(prompts, Math.max(...reqs.map((r) => r.maxTokens)));
    let gen: RowResult[];
    const ttft = performance.now() - t0;
    try {
      gen = await decodeRows(engine, cache, logits, reqs, onToken);
    } finally {
      cache.release();
    }
    const decodeMs = performance.now() - t0 - ttft;
    return reqs.map((r, i) =>
      finish(r, gen[i], { promptTokens: prompts[i].length, cachedTokens: 0, compiledTokens: 0, computedTokens: prompts[i].length, mode: 'full' }, { group: reqs.length, ttft, decodeMs }),
    );
  }
  const mode = linkOptions(reqs[0].mode);
  if (reqs.length > 1 && !contextSharable(mode)) throw new Error(`mode ${modeLabel(mode)} cannot share a linked context (see contextSharable)`);
  // A group shares its prefix (it is part of the group key).
  const prefix = promptPrefix(engine, reqs[0]);
  if (reqs.length === 1 && reqs[0].question.length) {
    // One request: link with its question in place (no context copy).
    const r = reqs[0];
    const one = await link(ctx, { prefix, chunks: r.chunks, question: r.question }, mode, r.maxTokens);
    let gen: RowResult[];
    const ttft = performance.now() - t0;
    try {
      await one.after();
      gen = await decodeRows(engine, one.cache, [one.logits], reqs, onToken);
    } finally {
      one.cache.release();
    }
    return [finish(r, gen[0], promptCounts(one.stats), { group: 1, ttft, decodeMs: performance.now() - t0 - ttft })];
  }
  const linked = await link(ctx, { prefix, chunks: reqs[0].chunks, question: [] }, mode, 0, true);
  const ctxLen = linked.stats.promptTokens;
  const qMax = Math.max(...reqs.map((r) => r.question.length));
  let cache: KVCache | undefined;
  let gen: RowResult[];
  let ttft: number;
  try {
    cache = engine.newCache(reqs.length, ctxLen + qMax + Math.max(...reqs.map((r) => r.maxTokens)));
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
    ttft = performance.now() - t0;
    await linked.after();
    linked.cache.release();
    gen = await decodeRows(engine, cache, logits, reqs, onToken);
  } finally {
    linked.cache.release();
    cache?.release();
  }
  const decodeMs = performance.now() - t0 - ttft;
  // The context's counts are the group's; each row adds its own question, computed here.
  const ctxCounts = promptCounts(linked.stats);
  return reqs.map((r, i) =>
    finish(
      r,
      gen[i],
      { ...ctxCounts, promptTokens: ctxLen + r.question.length, computedTokens: ctxCounts.computedTokens + r.question.length },
      { group: reqs.length, ttft, decodeMs },
    ),
  );
}
