import { z } from 'zod';
import { splitDocument, type Chunk } from '../../shared/chunking';
import type { DocumentStore } from '../../shared/catalog';
import { ContextLengthError, type Engine, type ModelConfig, type SamplingDefaults, type TextTokenizer } from '../../shared/engine';
import { chunkKey, type ChunkKey } from '../../shared/kvstore';
import { CHAT_DEFAULT_MAX_TOKENS, DEFAULT_MAX_TOKENS, MAX_TOKENS_CAP } from './limits';
import { ModeSpec, samplingFrom, SamplingFields, type ServeRequest } from '../../shared/serving/request';

/** A request's documents as clients send them: ids of POSTed documents, or `{text}` inline; at most 64. */
export const DocumentsSpec = z.array(z.union([z.string().min(1).max(128), z.object({ text: z.string().min(1) }).strict()])).max(64);

/** A request as clients send it: documents by id or inline, a question (after the documents) or a bare prompt. */
export const RequestSpec = z
  .object({
    documents: DocumentsSpec.default([]),
    question: z.string().optional(),
    prompt: z.string().optional(),
    /** Absent: the caller's default (resolveRequest's `defaultMaxTokens`). */
    max_tokens: z.number().int().min(0).max(MAX_TOKENS_CAP).optional(),
    mode: ModeSpec.shape.mode.unwrap().optional(),
    k: ModeSpec.shape.k,
    r: ModeSpec.shape.r,
    stop: z.union([z.string(), z.array(z.string()).max(4)]).optional(),
    ignore_eos: z.boolean().optional(),
    ...SamplingFields,
  })
  .strict()
  .refine((r) => (r.question ?? r.prompt) !== undefined, { message: 'a request needs a question or a prompt' });
export type RequestSpec = z.infer<typeof RequestSpec>;

export class ResolveError extends Error {
  constructor(
    message: string,
    readonly status = 400,
    readonly param: string | null = null,
    readonly code: string | null = null,
  ) {
    super(message);
  }
}

export interface Resolver {
  model: ModelConfig;
  tokenizer: TextTokenizer;
  documents: DocumentStore;
  /** temperature, top_p and top_k where a request gives none (the model's generation_config.json). */
  samplingDefaults?: SamplingDefaults;
}

/**
 * Most characters a text can have and still fit in `tokens` tokens. Longer texts are refused before they are
 * tokenized: tokenizing megabytes takes seconds of the API's one thread. Twice the strict bound, as slack for
 * normalizers that compose characters (NFC, NFKC).
 */
export function maxTextChars(r: Pick<Resolver, 'model' | 'tokenizer'>, tokens = r.model.contextLength): number {
  return 2 * tokens * (r.tokenizer.maxTokenChars ?? Infinity);
}

/** Chunk a text with KVSplit and key each chunk for a tenant. */
export function chunkText(r: Pick<Resolver, 'model' | 'tokenizer'>, text: string, salt: string): { key: ChunkKey; tokens: number[] }[] {
  return splitDocument(text, r.tokenizer).map((c: Chunk) => ({
    key: chunkKey({ modelId: r.model.id, tokens: c.tokens, tenantSalt: salt }),
    tokens: c.tokens,
  }));
}

/**
 * max_tokens when a request gives none: a number, or `rest`, what the context leaves after the prompt, at most
 * CHAT_DEFAULT_MAX_TOKENS (chat completions; see there).
 */
export type DefaultMaxTokens = number | 'rest';

/** Turn a client request into the worker's plain data: documents resolved to chunk tokens, everything checked. */
export async function resolveRequest(
  r: Resolver,
  spec: RequestSpec,
  id: string,
  tenant: string,
  salt: string,
  defaultMaxTokens: DefaultMaxTokens = DEFAULT_MAX_TOKENS,
  /** Tokens before the documents (a chat template's head); absent: the tokenizer's prompt prefix (BOS or none). */
  prefix?: number[],
): Promise<ServeRequest> {
  const chars = (spec.question ?? spec.prompt ?? '').length + spec.documents.reduce((n, d) => n + (typeof d === 'string' ? 0 : d.text.length), 0);
  if (chars > maxTextChars(r)) {
    throw new ResolveError(`the prompt's text (${chars} characters) exceeds the model's context length (${r.model.contextLength} tokens)`, 400, 'prompt', 'context_length_exceeded');
  }
  const ids = spec.documents.filter((d): d is string => typeof d === 'string');
  const recs = await r.documents.getMany(tenant, ids);
  const missing = ids.filter((_, i) => !recs[i]);
  if (missing.length) throw new ResolveError(`unknown document id ${JSON.stringify(missing[0])}`, 404, 'documents', 'document_not_found');
  const byId = new Map(ids.map((d, i) => [d, recs[i]!]));
  const chunks: number[][] = [];
  for (const d of spec.documents) {
    if (typeof d === 'string') for (const c of byId.get(d)!.chunks) chunks.push(c.tokens);
    else for (const c of chunkText(r, d.text, salt)) chunks.push(c.tokens);
  }
  const text = spec.question ?? spec.prompt ?? '';
  const question = r.tokenizer.encode(text);
  const promptTokens = (prefix ?? r.tokenizer.promptPrefix).length + chunks.reduce((s, c) => s + c.length, 0) + question.length;
  if (spec.max_tokens === undefined && defaultMaxTokens === 'rest' && promptTokens >= r.model.contextLength) {
    const e = new ContextLengthError(promptTokens + 1, r.model.contextLength, `prompt (${promptTokens} tokens) leaves no room for an answer`);
    throw new ResolveError(e.message, 400, 'messages', 'context_length_exceeded');
  }
  const maxTokens = spec.max_tokens ?? (defaultMaxTokens === 'rest' ? Math.min(CHAT_DEFAULT_MAX_TOKENS, r.model.contextLength - promptTokens) : defaultMaxTokens);
  if (promptTokens + maxTokens > r.model.contextLength) {
    const e = new ContextLengthError(promptTokens + maxTokens, r.model.contextLength, `prompt (${promptTokens} tokens) plus max_tokens (${maxTokens})`);
    throw new ResolveError(e.message, 400, 'max_tokens', 'context_length_exceeded');
  }
  if (!chunks.length && !question.length) throw new ResolveError('the prompt is empty', 400, 'prompt');
  const mode = spec.mode ?? (chunks.length ? 'attnlink' : 'full');
  const sampling = samplingFrom(spec, r.samplingDefaults);
  return {
    id,
    tenantSalt: salt,
    chunks,
    question,
    maxTokens,
    mode: { mode, k: spec.k, r: spec.r },
    stop: spec.stop === undefined ? undefined : Array.isArray(spec.stop) ? spec.stop : [spec.stop],
    ignoreEos: spec.ignore_eos,
    ...(prefix ? { prefix } : {}),
    ...(sampling ? { sampling } : {}),
  };
}

export type { Engine };
