import { existsSync } from 'node:fs';
import { z } from 'zod';
import { ModelLoadError } from './errors';
import { checkJson, readJson } from './json';
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
  /** RoPE frequency scaling (config's rope_scaling); absent for plain RoPE. */
  ropeScaling?: RopeScaling;
  /** File names of the graphs, relative to dir. */
  graphs: { stock?: string; primitive?: string; layers?: { embed: string; layer: string; kv: string; head: string } };
  raw: Record<string, unknown>;
}

/**
 * The rope_scaling kinds whose rotation stays a pure per-frequency rotation of the key (so a cached key still moves by
 * R(q - p)): Llama 3's wavelength-dependent rescaling and linear position interpolation (inv_freq / factor).
 */
export type RopeScaling =
  | { type: 'llama3'; factor: number; lowFreqFactor: number; highFreqFactor: number; originalMaxPositionEmbeddings: number }
  | { type: 'linear'; factor: number };

const positive = (field: string) => z.number({ message: `rope_scaling.${field} must be a positive number` }).positive(`rope_scaling.${field} must be positive`);
const Llama3Scaling = z.object({
  factor: positive('factor'),
  low_freq_factor: positive('low_freq_factor'),
  high_freq_factor: positive('high_freq_factor'),
  original_max_position_embeddings: positive('original_max_position_embeddings'),
});
const LinearScaling = z.object({ factor: positive('factor') });

/** config.json's rope_scaling → RopeScaling (undefined for none / "default"); a message naming the field otherwise. */
export function parseRopeScaling(raw: unknown): RopeScaling | undefined | string {
  if (raw == null) return undefined;
  if (typeof raw !== 'object' || Array.isArray(raw)) return 'rope_scaling must be an object or null';
  const o = raw as Record<string, unknown>;
  const type = o.rope_type ?? o.type;
  const field = o.rope_type !== undefined ? 'rope_type' : 'type';
  if (type == null || type === 'default') return undefined;
  const issues = (e: z.ZodError) => e.issues.map((i) => (i.path.length ? i.message : `rope_scaling: ${i.message}`)).join('; ');
  if (type === 'llama3') {
    const p = Llama3Scaling.safeParse(o);
    if (!p.success) return issues(p.error);
    if (p.data.high_freq_factor <= p.data.low_freq_factor) {
      return `rope_scaling.high_freq_factor ${p.data.high_freq_factor} must exceed rope_scaling.low_freq_factor ${p.data.low_freq_factor}`;
    }
    return {
      type: 'llama3',
      factor: p.data.factor,
      lowFreqFactor: p.data.low_freq_factor,
      highFreqFactor: p.data.high_freq_factor,
      originalMaxPositionEmbeddings: p.data.original_max_position_embeddings,
    };
  }
  if (type === 'linear') {
    const p = LinearScaling.safeParse(o);
    if (!p.success) return issues(p.error);
    return { type: 'linear', factor: p.data.factor };
  }
  return (
    `rope_scaling.${field} ${JSON.stringify(type)} is not supported for position-independent caching ` +
    `(supported: "llama3", "linear", "default"; scalings that change attention or depend on the sequence length cannot be re-rotated)`
  );
}

export function kvShape(c: ModelConfig): KVShape {
  return { layers: c.layers, kvHeads: c.kvHeads, headDim: c.headDim };
}

export interface ModelConfigOptions {
  /**
   * The one graph to serve, relative to the model folder (MODEL_FILE): an export's variant such as
   * `onnx/model_fp16.onnx`. It is served as a stock graph, and the folder's own `epic` graphs are not used.
   */
  graphFile?: string;
}

/**
 * The stock graph of a folder without an `epic` block, as exports lay it out: `model.onnx` (Optimum), else
 * `onnx/model.onnx` (onnx-community, whose variants sit beside it: pick one with MODEL_FILE).
 */
function exportGraph(dir: string): string {
  if (!existsSync(`${dir}/model.onnx`) && existsSync(`${dir}/onnx/model.onnx`)) return 'onnx/model.onnx';
  return 'model.onnx';
}

export function loadModelConfig(dir: string, file = `${dir}/config.json`, opts: ModelConfigOptions = {}): ModelConfig {
  const json = readJson(file, 'model config');
  const c = checkJson(file, 'model config', ConfigSchema, json);
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
  const ropeScaling = parseRopeScaling(c.rope_scaling);
  if (typeof ropeScaling === 'string') throw new ModelLoadError(`model config ${file}: ${ropeScaling}`, file);
  if (c.partial_rotary_factor != null && c.partial_rotary_factor !== 1) {
    throw new ModelLoadError(
      `model config ${file}: partial_rotary_factor ${c.partial_rotary_factor} (rotary_dim != head_dim) is not supported for re-rotation`,
      file,
    );
  }
  const graphs = opts.graphFile ? { stock: opts.graphFile } : (c.epic?.graphs ?? { stock: exportGraph(dir) });
  return {
    id: c._name_or_path ?? dir.replace(/\/+$/, '').split('/').pop()!,
    dir,
    vocabSize: c.vocab_size,
    layers: c.num_hidden_layers,
    heads: c.num_attention_heads,
    kvHeads,
    headDim,
    ropeTheta: c.rope_theta,
    ropeScaling,
    contextLength: c.max_position_embeddings,
    bosTokenId: c.bos_token_id,
    eosTokenIds: Array.isArray(c.eos_token_id) ? c.eos_token_id : [c.eos_token_id],
    padTokenId: c.pad_token_id ?? 0,
    sinkTokenId: c.epic?.sink_token_id,
    graphs,
    raw: json as Record<string, unknown>,
  };
}
