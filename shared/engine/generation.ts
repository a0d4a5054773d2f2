import { existsSync } from 'node:fs';
import { z } from 'zod';
import { checkJson, readJson } from './json';

/**
 * A model's generation_config.json (Hugging Face): the token ids that end generation, and the sampling its authors
 * recommend. Sampling defaults exist only where the file says `do_sample: true`, as in transformers' generate(), which
 * decodes greedily otherwise; then the keys the file gives (temperature, top_p, top_k) are the defaults, and no others
 * are made up (vLLM's `--generation-config auto` reads the same keys). Llama 3.1 Instruct: temperature 0.6, top_p 0.9;
 * Qwen3: temperature 0.6, top_p 0.95, top_k 20.
 */
export interface GenerationConfig {
  eosTokenIds: number[];
  sampling?: SamplingDefaults;
}

export interface SamplingDefaults {
  temperature?: number;
  topP?: number;
  topK?: number;
}

const tokenId = z.number().int().nonnegative();
const StopSchema = z.object({ eos_token_id: z.union([tokenId, z.array(tokenId)]).nullable().optional() }).passthrough();
/** Checked only where they are used: do_sample true, and the caller wants sampling defaults. */
const SamplingSchema = z
  .object({
    temperature: z.number().min(0).max(2, 'temperature above 2 is past what the API accepts (GENERATION_CONFIG=none serves the model without the file\'s sampling)').nullable().optional(),
    top_p: z.number().gt(0).max(1).nullable().optional(),
    top_k: z.number().int().min(0).nullable().optional(),
  })
  .passthrough();

/**
 * The folder's generation_config.json; none: no extra stop ids and no sampling defaults. `sampling: false` (the
 * tokenizer, which needs the stop ids only; the API with GENERATION_CONFIG=none) reads and checks only eos_token_id.
 */
export function loadGenerationConfig(dir: string, opts: { sampling?: boolean } = {}): GenerationConfig {
  const file = `${dir}/generation_config.json`;
  if (!existsSync(file)) return { eosTokenIds: [] };
  const json = readJson(file, 'generation config');
  const eos = checkJson(file, 'generation config', StopSchema, json).eos_token_id;
  const eosTokenIds = Array.isArray(eos) ? eos : eos == null ? [] : [eos];
  if (opts.sampling === false || (json as { do_sample?: unknown }).do_sample !== true) return { eosTokenIds };
  const g = checkJson(file, 'generation config', SamplingSchema, json);
  const sampling: SamplingDefaults = {};
  if (g.temperature != null) sampling.temperature = g.temperature;
  if (g.top_p != null) sampling.topP = g.top_p;
  if (g.top_k != null) sampling.topK = g.top_k;
  return { eosTokenIds, sampling };
}
