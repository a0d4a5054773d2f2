import { kvShape, loadModelConfig, type ModelConfig, type ModelConfigOptions } from './config';
import type { KVShape } from './kv';
import { Rope } from './rope';
import { openRunner, type GraphChoice, type GraphRunner, type RunnerCapabilities } from './runner';
import type { SessionOptions } from './session';
import { loadTokenizer, type TextTokenizer } from './tokenizer';

/** What a loaded model can do: its runner's capabilities, plus whether it ships per-layer graphs. */
export interface EngineCapabilities extends RunnerCapabilities {
  /** Per-layer graphs (config.json epic.graphs.layers) for modes that act between layers (CacheBlend). */
  perLayer: boolean;
}

/**
 * The model: config, tokenizer, RoPE and the graph runner chosen at load (node-llama-cpp's LlamaModel: what is fixed
 * once loaded). Caches (KVCache) hold the per-request state; Engine is the façade that runs calls on them.
 */
export class Model {
  readonly shape: KVShape;
  readonly rope: Rope;
  readonly capabilities: EngineCapabilities;

  private constructor(
    readonly config: ModelConfig,
    readonly tokenizer: TextTokenizer,
    readonly runner: GraphRunner,
    readonly sessionOptions: SessionOptions,
  ) {
    this.shape = kvShape(config);
    this.rope = new Rope(config.headDim, config.ropeTheta, config.ropeScaling);
    this.capabilities = { ...runner.caps, perLayer: !!config.graphs.layers };
  }

  static async load(dir: string, graph: GraphChoice, opts: SessionOptions & ModelConfigOptions = {}): Promise<Model> {
    const config = loadModelConfig(dir, undefined, opts);
    const tokenizer = loadTokenizer(config);
    const runner = await openRunner(config, graph, opts);
    return new Model(config, tokenizer, runner, opts);
  }
}

/**
 * Link modes a model folder can serve, and why the others cannot, from its config alone (the API process loads no
 * sessions). Every mode runs on either graph except CacheBlend, which needs the per-layer graphs.
 */
export function supportedModes(config: ModelConfig): { refused: Record<string, string> } {
  const refused: Record<string, string> = {};
  if (!config.graphs.layers) {
    refused.cacheblend =
      `model ${config.id} ships no per-layer graphs (config.json epic.graphs.layers: embed, layer_{i}, kv_{i}, head), which cacheblend needs ` +
      `(it recomputes selected tokens from its check layer on); every other mode works with this model — export the per-layer graphs with tools/model/export.py or tools/model/import_hf.py`;
  }
  return { refused };
}
