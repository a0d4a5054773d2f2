import type { RowResult } from '../engine/generate';
import type { LinkStats } from '../linking';
import type { ServeRequest } from './request';

/**
 * What a request's prompt cost, counted once where it is linked and carried unchanged to the API's usage and the
 * metrics: the one set of names from the link to the client.
 */
export interface PromptCounts {
  promptTokens: number;
  /**
   * Prompt tokens whose KV was read from a store (a hit in any tier) and not recomputed: OpenAI's
   * usage.prompt_tokens_details.cached_tokens. Never a chunk compiled on a miss.
   */
  cachedTokens: number;
  /** Prompt tokens of chunks compiled on a miss for this request (usage.prompt_tokens_details.compiled_tokens). */
  compiledTokens: number;
  /** Prompt tokens run through the model. */
  computedTokens: number;
  /** The link mode as run (`attnlink-16`, `full`, …). */
  mode: string;
}

/** A served request's result, from the worker to the API (reply, stream, batch record) as one type. */
export interface ServeResult extends PromptCounts {
  id: string;
  /** Text and tokens as generation returned them (stop strings applied). */
  text: string;
  tokens: number[];
  finishReason: 'stop' | 'length';
  /** Requests that shared this request's linked context. */
  groupSize: number;
  /** Requests computed in the same forward calls (a shared-context group, or a batch of different contexts). */
  batchSize: number;
  ttftMs: number;
  prefillMs: number;
  decodeMs: number;
  /** Wall-clock instants (epoch ms, sub-ms precision; see `wallClockMs`) the worker took the job and had its result. */
  worker?: { pickedAt: number; doneAt: number };
}

/** A link's counts in the result's names (LinkStats.reusedTokens is the tokens read from the store: cachedTokens). */
export function promptCounts(s: LinkStats): PromptCounts {
  return { promptTokens: s.promptTokens, cachedTokens: s.reusedTokens, compiledTokens: s.compiledTokens, computedTokens: s.computedTokens, mode: s.mode };
}

/** A served request's result: its generation, its prompt's counts, and how it was served. */
export function finish(r: ServeRequest, gen: RowResult, counts: PromptCounts, m: { group: number; batch?: number; ttft: number; decodeMs: number }): ServeResult {
  return {
    id: r.id,
    text: gen.text,
    tokens: gen.tokens,
    finishReason: gen.finish,
    ...counts,
    groupSize: m.group,
    batchSize: m.batch ?? m.group,
    ttftMs: m.ttft,
    prefillMs: m.ttft,
    decodeMs: m.decodeMs,
  };
}
