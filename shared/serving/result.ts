import type { RowResult } from '../engine/generate';
import type { LinkStats } from '../linking';
import type { ServeRequest, ServeResult } from './request';

/** A served request's result: its text and tokens as generation returned them (stop strings applied), counts, timings. */
export function finish(
  r: ServeRequest,
  gen: RowResult,
  m: { prompt: number; cached: number; compiled?: number; computed: number; mode: string; group: number; batch?: number; ttft: number; decodeMs: number },
): ServeResult {
  const { text, tokens } = gen;
  return {
    id: r.id,
    text,
    tokens,
    finishReason: gen.finish,
    promptTokens: m.prompt,
    cachedTokens: m.cached,
    compiledTokens: m.compiled ?? 0,
    computedTokens: m.computed,
    mode: m.mode,
    groupSize: m.group,
    batchSize: m.batch ?? m.group,
    ttftMs: m.ttft,
    prefillMs: m.ttft,
    decodeMs: m.decodeMs,
  };
}

/** A request's token counts as its link reports them (for finish). */
export function linkedCounts(s: LinkStats): { prompt: number; cached: number; compiled: number; computed: number; mode: string } {
  return { prompt: s.promptTokens, cached: s.reusedTokens, compiled: s.compiledTokens, computed: s.computedTokens, mode: s.mode };
}
