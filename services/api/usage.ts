import type { ServeResult } from '../../shared/serving/result';

/**
 * The OpenAI usage object of a result: the one place the API turns the worker's counts into usage (completions, chat,
 * streams' last chunk, batch output files). cached_tokens: prompt tokens read from the KV store; compiled_tokens (an
 * extension): prompt tokens of chunks compiled on a miss for this request.
 */
export function usage(r: ServeResult) {
  return {
    prompt_tokens: r.promptTokens,
    completion_tokens: r.tokens.length,
    total_tokens: r.promptTokens + r.tokens.length,
    // A result recorded by an older worker may lack compiled tokens.
    prompt_tokens_details: { cached_tokens: r.cachedTokens, compiled_tokens: r.compiledTokens ?? 0 },
  };
}
