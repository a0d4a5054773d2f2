/**
 * Default per-call budget of floats a graph call may spend on attention scores (Engine.forward's chunked prefill,
 * LayeredModel.causal): 2^24 floats, 64 MB a score tensor (a call holds a few at once). At the SmolLM2-135M shape a
 * 4,129-token prefill then runs as 16 calls of ~258 tokens; one such prefill alone peaked at 2.96 GB RSS as one call
 * and at 1.3-1.5 GB chunked, in no more time (README, bench:shapes).
 */
export const CALL_BUDGET = 2 ** 24;
/** Calls are not cut below this many tokens a row (the weights would be read once per few tokens). */
export const MIN_CALL_TOKENS = 64;

/**
 * Tokens per call for S tokens whose call of n tokens costs cost(n) floats: S when that fits `budget` (or S is
 * small), else S cut into the fewest equal calls of a size halved from S until it fits (not below MIN_CALL_TOKENS).
 */
export function tokensPerCall(S: number, cost: (n: number) => number, budget: number): number {
  if (S <= MIN_CALL_TOKENS || cost(S) <= budget) return S;
  let n = S;
  while (n > MIN_CALL_TOKENS && cost(n) > budget) n = Math.max(MIN_CALL_TOKENS, Math.ceil(n / 2));
  return Math.ceil(S / Math.ceil(S / n));
}
