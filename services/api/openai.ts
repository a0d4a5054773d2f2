import { z } from 'zod';
import { chatPrompt, ChatTemplateError, type ChatMessage } from '../../shared/engine/chat';
import { ModeSpec, SamplingFields } from '../../shared/serving/request';
import type { ServeResult } from '../../shared/serving/result';
import type { ApiDeps } from './deps';
import { ApiError } from './errors';
import { DEFAULT_MAX_TOKENS, MAX_TOKENS_CAP } from './limits';
import type { Prepared } from './requests';
import { DocumentsSpec, maxTextChars, type DefaultMaxTokens } from './resolve';
import { usage } from './usage';

/** The two OpenAI request kinds this API serves (routes/completions.ts, routes/chat.ts; both in batch files). */
export type CompletionKind = 'completion' | 'chat';

/**
 * OpenAI-compatible endpoints. Documents go in the extension field `documents` (ids of POSTed documents, or
 * `{text}` inline); `mode`, `k` and `r` pick the link mode. Reuse is reported in usage.prompt_tokens_details.cached_tokens.
 */
const Extensions = {
  documents: DocumentsSpec.optional(),
  mode: ModeSpec.shape.mode.unwrap().optional(),
  k: ModeSpec.shape.k,
  r: ModeSpec.shape.r,
};
const Common = {
  model: z.string().optional(),
  max_tokens: z.number().int().min(0).max(MAX_TOKENS_CAP).nullable().optional(),
  max_completion_tokens: z.number().int().min(0).max(MAX_TOKENS_CAP).nullable().optional(),
  stop: z.union([z.string(), z.array(z.string()).max(4)]).nullable().optional(),
  stream: z.boolean().nullable().optional(),
  stream_options: z.object({ include_usage: z.boolean().optional() }).nullable().optional(),
  n: z.literal(1).nullable().optional(),
  /** temperature, top_p, top_k (vLLM's extension), seed: absent ones from the model's generation_config.json, else greedy. */
  ...SamplingFields,
  user: z.string().max(256).optional(),
  /** vLLM's extension: generate max_tokens tokens even past <eos>. */
  ignore_eos: z.boolean().optional(),
  ...Extensions,
};
export const CompletionBody = z.object({ ...Common, prompt: z.union([z.string(), z.array(z.string()).length(1)]) });
const ChatMessage = z.object({
  role: z.enum(['system', 'user', 'assistant', 'developer', 'tool']),
  content: z.union([z.string(), z.array(z.object({ type: z.literal('text'), text: z.string() }))]).nullable(),
  name: z.string().optional(),
});
export const ChatBody = z.object({ ...Common, messages: z.array(ChatMessage).min(1) });
export type CompletionBody = z.infer<typeof CompletionBody>;
export type ChatBody = z.infer<typeof ChatBody>;

function chatMessages(messages: ChatBody['messages']): ChatMessage[] {
  return messages.map((m) => ({
    role: m.role,
    content: typeof m.content === 'string' ? m.content : (m.content ?? []).map((p) => p.text).join(''),
    ...(m.name !== undefined ? { name: m.name } : {}),
  }));
}

/**
 * A completion's spec, or a chat's: rendered with the model's chat template and split around the documents
 * (shared/engine/chat.ts: prefix | documents' chunks | question); a model without a template joins the contents.
 */
export function prepare(d: ApiDeps, body: CompletionBody | ChatBody, where: string): Prepared {
  for (const id of Object.keys(body.logit_bias ?? {})) {
    if (Number(id) >= d.model.vocabSize) {
      throw new ApiError(400, `${where}: logit_bias names token ${id}, outside the vocabulary (${d.model.vocabSize} tokens)`, 'invalid_request_error', 'logit_bias');
    }
  }
  if ('prompt' in body) return { spec: toSpec(body, [body.prompt].flat()[0]) };
  const messages = chatMessages(body.messages);
  // The template's text is tokenized whole: bound it before rendering, as resolveRequest bounds a question.
  const chars = messages.reduce((n, m) => n + m.content.length, 0);
  if (chars > maxTextChars(d)) {
    throw new ApiError(400, `${where}: the messages' text (${chars} characters) exceeds the model's context length (${d.model.contextLength} tokens)`, 'invalid_request_error', 'messages', 'context_length_exceeded');
  }
  let p;
  try {
    p = chatPrompt(d.tokenizer, messages, (body.documents?.length ?? 0) > 0);
  } catch (e) {
    if (e instanceof ChatTemplateError) throw new ApiError(400, `${where}: ${e.message}`, 'invalid_request_error', 'messages');
    throw e;
  }
  return { spec: toSpec(body, p.question), prefix: p.prefix === undefined ? undefined : d.tokenizer.encode(p.prefix) };
}

/** max_tokens when a request gives none: 16 for completions (OpenAI's default); for chat the rest of the context, at most CHAT_DEFAULT_MAX_TOKENS. */
export function maxTokensDefault(kind: CompletionKind): DefaultMaxTokens {
  return kind === 'chat' ? 'rest' : DEFAULT_MAX_TOKENS;
}

function toSpec(body: CompletionBody | ChatBody, text: string) {
  return {
    documents: body.documents ?? [],
    question: text,
    // Absent: maxTokensDefault's, applied by resolveRequest once the prompt's length is known.
    max_tokens: body.max_completion_tokens ?? body.max_tokens ?? undefined,
    mode: body.mode,
    k: body.k,
    r: body.r,
    stop: body.stop ?? undefined,
    ignore_eos: body.ignore_eos,
    temperature: body.temperature,
    top_p: body.top_p,
    top_k: body.top_k,
    seed: body.seed,
    logit_bias: body.logit_bias,
  };
}

export function completionObject(id: string, model: string, r: ServeResult) {
  return {
    id,
    object: 'text_completion',
    created: Math.floor(Date.now() / 1000),
    model,
    choices: [{ index: 0, text: r.text, finish_reason: r.finishReason, logprobs: null }],
    usage: usage(r),
  };
}

export function chatObject(id: string, model: string, r: ServeResult) {
  return {
    id,
    object: 'chat.completion',
    created: Math.floor(Date.now() / 1000),
    model,
    choices: [{ index: 0, message: { role: 'assistant', content: r.text, refusal: null }, finish_reason: r.finishReason, logprobs: null }],
    usage: usage(r),
  };
}
