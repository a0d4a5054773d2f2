import type { Engine } from '../engine';
import type { LinkStats } from '../linking';
import { applyStop } from './stop';
import type { ServeRequest, ServeResult } from './request';

/** A served request's result: its text (stop strings applied), token counts and timings. */
export function finish(
  engine: Engine,
  r: ServeRequest,
  tokens: number[],
  why: 'stop' | 'length',
  m: { prompt: number; cached: number; computed: number; mode: string; group: number; batch?: number; ttft: number; decodeMs: number },
): ServeResult {
  const { text, stopped } = applyStop(engine.tokenizer.decode(tokens), r.stop);
  return {
    id: r.id,
    text,
    tokens,
    finishReason: stopped || why === 'stop' ? 'stop' : 'length',
    promptTokens: m.prompt,
    cachedTokens: m.cached,
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
export function linkedCounts(s: LinkStats): { prompt: number; cached: number; computed: number; mode: string } {
  return { prompt: s.promptTokens, cached: Math.max(0, Math.round(s.reusedTokens)), computed: s.computedTokens, mode: s.mode };
}
