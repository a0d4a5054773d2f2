import { createHash } from 'node:crypto';
import { z } from 'zod';
import type { SamplingParams } from '../engine/sampling';
import type { SamplingDefaults } from '../engine/generation';
import { contextSharable, LINK_MODES, MIN_R, modeLabel, type LinkOptions } from '../linking';

/**
 * A request as the worker serves it: plain data, already tokenised by the API (so the worker never sees document
 * text). With chunks, the prompt is prefix + chunks + question; without, prefix + question (plain completion, full
 * prefill). The prefix is the request's own (chat) or the tokenizer's (BOS, or nothing).
 */
export const ModeSpec = z.object({
  mode: z.enum(LINK_MODES).default('attnlink'),
  k: z.number().int().min(0).optional(),
  r: z.number().min(MIN_R).max(1).optional(),
});
export type ModeSpec = z.infer<typeof ModeSpec>;

/**
 * Sampling as clients send it (OpenAI's names; top_k is vLLM's extension). Absent: the model's generation_config.json
 * defaults where it has them (the API's `samplingDefaults`), else greedy.
 */
export const SamplingFields = {
  temperature: z.number().min(0).max(2).nullable().optional(),
  top_p: z.number().min(0).max(1).nullable().optional(),
  top_k: z.number().int().min(0).nullable().optional(),
  seed: z.number().int().min(Number.MIN_SAFE_INTEGER).max(Number.MAX_SAFE_INTEGER).nullable().optional(),
  /** OpenAI's logit_bias: token id → a bias in [-100, 100] added to its logit before choosing (greedy too). */
  logit_bias: z.record(z.string().regex(/^\d{1,9}$/, 'token ids'), z.number().min(-100).max(100)).nullable().optional(),
};

/** A request's sampling in the job payload (per row: requests that sample differently still share a context). */
export const Sampling = z.object({
  temperature: z.number().min(0).max(2).optional(),
  /** 0 keeps only the most likely token (greedy), as vLLM reads it. */
  topP: z.number().min(0).max(1).optional(),
  topK: z.number().int().min(0).optional(),
  seed: z.number().int().optional(),
  logitBias: z.record(z.string(), z.number()).optional(),
});
export type Sampling = z.infer<typeof Sampling>;

/**
 * The job payload's sampling from the client's fields, a field the client leaves out (or sends as null) taken from
 * `defaults` (the model's generation_config.json); undefined when nothing is set: greedy.
 */
export function samplingFrom(
  b: {
    temperature?: number | null;
    top_p?: number | null;
    top_k?: number | null;
    seed?: number | null;
    logit_bias?: Record<string, number> | null;
  },
  defaults: SamplingDefaults = {},
): Sampling | undefined {
  const s: Sampling = {};
  if (b.logit_bias && Object.keys(b.logit_bias).length) s.logitBias = b.logit_bias;
  const temperature = b.temperature ?? defaults.temperature;
  const topP = b.top_p ?? defaults.topP;
  const topK = b.top_k ?? defaults.topK;
  if (temperature != null) s.temperature = temperature;
  if (topP != null) s.topP = topP;
  if (topK != null) s.topK = topK;
  if (b.seed != null) s.seed = b.seed;
  return Object.keys(s).length ? s : undefined;
}

/**
 * A row's sampling parameters. Without a seed, a sampled request draws from a seed derived from its id: a request run
 * again (a retried group, a re-run job) gives the same tokens, so what was already streamed stays true.
 */
export function samplingParams(r: Pick<ServeRequest, 'id' | 'sampling'>): SamplingParams | undefined {
  const s = r.sampling;
  if (!s) return undefined;
  if (!s.temperature && !s.logitBias) return undefined;
  const seed = s.seed ?? createHash('sha256').update(r.id).digest().readUInt32LE(0);
  const logitBias = s.logitBias && Object.entries(s.logitBias).map(([id, bias]) => [Number(id), bias] as [number, number]);
  return { temperature: s.temperature, topP: s.topP, topK: s.topK, seed, logitBias };
}

export const ServeRequest = z.object({
  /** Stable id (idempotency, results). */
  id: z.string().min(1),
  tenantSalt: z.string().default(''),
  chunks: z.array(z.array(z.number().int().nonnegative()).min(1)),
  question: z.array(z.number().int().nonnegative()),
  maxTokens: z.number().int().min(0),
  mode: ModeSpec,
  stop: z.array(z.string()).optional(),
  /**
   * Tokens before the chunks, computed as-is at position 0: absent, the tokenizer's own prompt prefix (BOS for Llama
   * and the project's models, nothing for Qwen); a chat request's rendered template head (see shared/engine/chat.ts).
   */
  prefix: z.array(z.number().int().nonnegative()).optional(),
  sampling: Sampling.optional(),
  /** Keep generating past <eos> up to maxTokens (vLLM's `ignore_eos`; benchmarks). */
  ignoreEos: z.boolean().optional(),
});
export type ServeRequest = z.infer<typeof ServeRequest>;

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
  h.update(`${modeLabel(o)}\0${r.tenantSalt}\0${r.ignoreEos ? 'ignore-eos' : ''}\0${r.prefix ? r.prefix.join(',') : '-'}\0`);
  for (const c of r.chunks) {
    h.update(Buffer.from(Int32Array.from(c).buffer));
    h.update('\0');
  }
  return h.digest('hex');
}
