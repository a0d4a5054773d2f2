/** Request limits the API enforces before anything is enqueued. */
export const MAX_TOKENS_CAP = 4096;
export const MAX_BATCH_REQUESTS = 10_000;
/** max_tokens when a request gives none (OpenAI's completions default); chat's is below. */
export const DEFAULT_MAX_TOKENS = 16;
/**
 * Chat's max_tokens when a request gives none: what the context leaves after the prompt, at most this. OpenAI and
 * vLLM leave it at the context; here a request's KV cache is sized for prompt + max_tokens up front, and so are
 * batches and groups, so an unbounded default would make every chat as costly as the longest possible one.
 */
export const CHAT_DEFAULT_MAX_TOKENS = 256;
