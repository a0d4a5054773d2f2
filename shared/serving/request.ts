import { createHash } from 'node:crypto';
import { z } from 'zod';
import { contextSharable, LINK_MODES, MIN_R, modeLabel, type LinkOptions } from '../linking';

/**
 * A request as the worker serves it: plain data, already tokenised by the API (so the worker never sees document
 * text). With chunks, the prompt is BOS + chunks + question; without, BOS + question (plain completion, full prefill).
 */
export const ModeSpec = z.object({
  mode: z.enum(LINK_MODES).default('attnlink'),
  k: z.number().int().min(0).optional(),
  r: z.number().min(MIN_R).max(1).optional(),
});
export type ModeSpec = z.infer<typeof ModeSpec>;

export const ServeRequest = z.object({
  /** Stable id (idempotency, results). */
  id: z.string().min(1),
  tenantSalt: z.string().default(''),
  chunks: z.array(z.array(z.number().int().nonnegative()).min(1)),
  question: z.array(z.number().int().nonnegative()),
  maxTokens: z.number().int().min(0),
  mode: ModeSpec,
  stop: z.array(z.string()).optional(),
  /** Keep generating past <eos> up to maxTokens (vLLM's `ignore_eos`; benchmarks). */
  ignoreEos: z.boolean().optional(),
});
export type ServeRequest = z.infer<typeof ServeRequest>;

export interface ServeResult {
  id: string;
  text: string;
  tokens: number[];
  finishReason: 'stop' | 'length';
  promptTokens: number;
  /** Prompt tokens whose KV came from a cache (OpenAI's usage.prompt_tokens_details.cached_tokens). */
  cachedTokens: number;
  /** Prompt tokens run through the model. */
  computedTokens: number;
  mode: string;
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

/** Epoch milliseconds with sub-millisecond precision, comparable across processes of one machine. */
export function wallClockMs(): number {
  return performance.timeOrigin + performance.now();
}

export function linkOptions(m: ModeSpec): LinkOptions {
  return { mode: m.mode, k: m.k, r: m.r };
}

/**
 * Requests that can share one linked context: same mode and options, same tenant salt, same chunk sequence; a request
 * whose mode cannot share a context (contextSharable) is alone in its group.
 * Plain requests (no chunks) group with each other and run as one padded batch.
 */
export function groupKey(r: ServeRequest): string {
  if (!r.chunks.length) return r.ignoreEos ? 'plain:ignore-eos' : 'plain';
  const o = linkOptions(r.mode);
  if (!contextSharable(o)) return `alone:${r.id}`;
  const h = createHash('sha256');
  h.update(`${modeLabel(o)}\0${r.tenantSalt}\0${r.ignoreEos ? 'ignore-eos' : ''}\0`);
  for (const c of r.chunks) {
    h.update(Buffer.from(Int32Array.from(c).buffer));
    h.update('\0');
  }
  return h.digest('hex');
}
