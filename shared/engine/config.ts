import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { ModelLoadError } from './errors';
import type { KVShape } from './kv';

/** The subset of a Hugging Face Llama-style config.json the engine relies on. */
const ConfigSchema = z.object({
  _name_or_path: z.string().optional(),
  model_type: z.string().optional(),
  vocab_size: z.number().int().positive(),
  hidden_size: z.number().int().positive(),
  num_hidden_layers: z.number().int().positive(),
  num_attention_heads: z.number().int().positive(),
  num_key_value_heads: z.number().int().positive().optional(),
  head_dim: z.number().int().positive().optional(),
  rope_theta: z.number().positive().default(10000),
  rope_scaling: z.unknown().optional(),
  partial_rotary_factor: z.number().optional(),
  max_position_embeddings: z.number().int().positive(),
  bos_token_id: z.number().int().nonnegative(),
  eos_token_id: z.union([z.number().int().nonnegative(), z.array(z.number().int().nonnegative()).nonempty()]),
  pad_token_id: z.number().int().nonnegative().nullable().optional(),
  epic: z
    .object({
      graphs: z
        .object({
          stock: z.string(),
          primitive: z.string(),
          /** Per-layer graphs; `{i}` in layer and kv stands for the layer index. */
          layers: z.object({ embed: z.string(), layer: z.string(), kv: z.string(), head: z.string() }),
        })
        .partial()
        .optional(),
      rope_style: z.enum(['rotate_half']).optional(),
      sink_token_id: z.number().int().nonnegative().optional(),
    })
    .passthrough()
    .optional(),
});

export interface ModelConfig {
  /** Model id: config's `_name_or_path`, else the folder name. */
  id: string;
  dir: string;
  vocabSize: number;
  layers: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  ropeTheta: number;
  contextLength: number;
  bosTokenId: number;
  eosTokenIds: number[];
  padTokenId: number;
  sinkTokenId?: number;
  /** File names of the graphs, relative to dir. */
  graphs: { stock?: string; primitive?: string; layers?: { embed: string; layer: string; kv: string; head: string } };
  raw: Record<string, unknown>;
}

export function kvShape(c: ModelConfig): KVShape {
  return { layers: c.layers, kvHeads: c.kvHeads, headDim: c.headDim };
}

export function loadModelConfig(dir: string, file = `${dir}/config.json`): ModelConfig {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new ModelLoadError(`model config not found: ${file} (${(e as Error).message})`, file);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new ModelLoadError(`model config is not valid JSON: ${file}: ${(e as Error).message}`, file);
  }
  const parsed = ConfigSchema.safeParse(json);
  if (!parsed.success) {
    const issues = parsed.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ');
    throw new ModelLoadError(`model config ${file} is invalid: ${issues}`, file);
  }
  const c = parsed.data;
  const headDim = c.head_dim ?? c.hidden_size / c.num_attention_heads;
  if (!Number.isInteger(headDim) || headDim % 2 !== 0) {
    throw new ModelLoadError(`model config ${file}: head_dim ${headDim} must be an even integer`, file);
  }
  const kvHeads = c.num_key_value_heads ?? c.num_attention_heads;
  if (c.num_attention_heads % kvHeads !== 0) {
    throw new ModelLoadError(
      `model config ${file}: num_attention_heads ${c.num_attention_heads} is not a multiple of num_key_value_heads ${kvHeads}`,
      file,
    );
  }
  if (c.rope_scaling != null) {
    throw new ModelLoadError(`model config ${file}: rope_scaling is set; position-independent caching needs plain RoPE`, file);
  }
  if (c.partial_rotary_factor != null && c.partial_rotary_factor !== 1) {
    throw new ModelLoadError(
      `model config ${file}: partial_rotary_factor ${c.partial_rotary_factor} (rotary_dim != head_dim) is not supported for re-rotation`,
      file,
    );
  }
  const graphs = c.epic?.graphs ?? { stock: 'model.onnx' };
  return {
    id: c._name_or_path ?? dir.replace(/\/+$/, '').split('/').pop()!,
    dir,
    vocabSize: c.vocab_size,
    layers: c.num_hidden_layers,
    heads: c.num_attention_heads,
    kvHeads,
    headDim,
    ropeTheta: c.rope_theta,
    contextLength: c.max_position_embeddings,
    bosTokenId: c.bos_token_id,
    eosTokenIds: Array.isArray(c.eos_token_id) ? c.eos_token_id : [c.eos_token_id],
    padTokenId: c.pad_token_id ?? 0,
    sinkTokenId: c.epic?.sink_token_id,
    graphs,
    raw: json as Record<string, unknown>,
  };
}
