import * as ort from 'onnxruntime-node';
import { tokensPerCall } from './budget';
import type { KVCache } from './cache';
import type { ModelConfig } from './config';
import { ModelLoadError, UnsupportedModeError } from './errors';
import { supportedModes } from './model';
import { buildBias, NEG_INF } from './runner/bias';
import { openSession, type SessionOptions } from './session';

/**
 * The model one layer at a time, for modes that act between layers (CacheBlend's check layer). Graphs (see
 * tools/model/export.py): embed (input_ids → hidden), layer_i (hidden, position_ids, attn_bias, past_key, past_value →
 * hidden_out, new_key, new_value), kv_i (hidden, position_ids → key, value: the layer's K/V projection with RoPE only)
 * and head (hidden → logits). Batch 1.
 */
export class LayeredModel {
  private constructor(
    readonly config: ModelConfig,
    private readonly embedS: ort.InferenceSession,
    private readonly layerS: ort.InferenceSession[],
    private readonly kvS: ort.InferenceSession[],
    private readonly headS: ort.InferenceSession,
  ) {}

  static async load(config: ModelConfig, opts: SessionOptions = {}): Promise<LayeredModel> {
    const g = config.graphs.layers;
    if (!g) {
      throw new UnsupportedModeError(supportedModes(config).refused.cacheblend);
    }
    const open = (f: string) => openSession(`${config.dir}/${f}`, opts);
    const per = (pattern: string) => Promise.all(Array.from({ length: config.layers }, (_, i) => open(pattern.replace('{i}', String(i)))));
    const [embed, layers, kvs, head] = await Promise.all([open(g.embed), per(g.layer), per(g.kv), open(g.head)]);
    for (const [s, want] of [
      [embed, ['input_ids']],
      [head, ['hidden']],
      ...layers.map((l) => [l, ['hidden', 'position_ids', 'attn_bias', 'past_key', 'past_value']] as const),
      ...kvs.map((k) => [k, ['hidden', 'position_ids']] as const),
    ] as [ort.InferenceSession, readonly string[]][]) {
      const missing = want.filter((n) => !s.inputNames.includes(n));
      if (missing.length) throw new ModelLoadError(`a per-layer graph of ${config.dir} lacks inputs [${missing.join(', ')}]`, config.dir);
    }
    return new LayeredModel(config, embed, layers, kvs, head);
  }

  private int64(v: ArrayLike<number>): ort.Tensor {
    return new ort.Tensor('int64', BigInt64Array.from(Array.from(v), (x) => BigInt(x)), [1, v.length]);
  }

  /** [S, hidden] */
  async embed(ids: ArrayLike<number>): Promise<Float32Array> {
    const r = await this.embedS.run({ input_ids: this.int64(ids) });
    return r.hidden.data as Float32Array;
  }

  /** One decoder layer over `S` tokens with a past of `P` slots ([1, kvHeads, P, headDim] buffers, used in place). */
  async layer(
    i: number,
    hidden: Float32Array,
    positions: ArrayLike<number>,
    bias: Float32Array,
    pastKey: Float32Array,
    pastValue: Float32Array,
    P: number,
  ): Promise<{ hidden: Float32Array; key: Float32Array; value: Float32Array }> {
    const S = positions.length;
    const c = this.config;
    const dims = [1, c.kvHeads, P, c.headDim];
    const r = await this.layerS[i].run({
      hidden: new ort.Tensor('float32', hidden, [1, S, hidden.length / S]),
      position_ids: this.int64(positions),
      attn_bias: new ort.Tensor('float32', bias, [1, 1, S, P + S]),
      past_key: new ort.Tensor('float32', pastKey, dims),
      past_value: new ort.Tensor('float32', pastValue, dims),
    });
    return { hidden: r.hidden_out.data as Float32Array, key: r.new_key.data as Float32Array, value: r.new_value.data as Float32Array };
  }

  /**
   * Layer i over `S` tokens of row 0 at `positions`, each attending causally by position among themselves and to the
   * cache's slots marked in `visible` (by position too). The layered runner's own bias-building entry: callers say
   * what a token may see, the engine builds the bias. (With no past at all: `causal`.)
   */
  async attend(
    i: number,
    cache: KVCache,
    hidden: Float32Array,
    tokens: number[],
    positions: number[],
    visible: Uint8Array,
  ): Promise<{ hidden: Float32Array; key: Float32Array; value: Float32Array }> {
    const S = positions.length;
    const bias = buildBias(cache, [{ tokens, positions }], S, cache.capacity, visible);
    return this.layer(i, hidden, positions, bias, cache.keys[i], cache.values[i], cache.capacity);
  }

  /**
   * Layer i over a whole sequence with no past (tokens at increasing `positions`, each seeing the ones before it):
   * as one call, or, where its attention scores (heads × S × S floats) would pass `budget`, as calls of fewer
   * tokens each over the keys and values of the ones before (a packed copy), as Engine.forward's chunked prefill.
   * Returns hidden [S, hidden] and key/value [1, kvHeads, S, headDim].
   */
  async causal(i: number, hidden: Float32Array, positions: number[], budget: number): Promise<{ hidden: Float32Array; key: Float32Array; value: Float32Array }> {
    const S = positions.length;
    const { kvHeads, headDim, heads } = this.config;
    const d = hidden.length / S;
    const n = tokensPerCall(S, (m) => heads * m * S, budget);
    if (n >= S) {
      const none = new Float32Array(kvHeads * headDim);
      const bias = new Float32Array(S * (S + 1)).fill(NEG_INF);
      for (let s = 0; s < S; s++) bias.fill(0, s * (S + 1) + 1, s * (S + 1) + 2 + s);
      return this.layer(i, hidden, positions, bias, none, none, 1);
    }
    const out = { hidden: new Float32Array(S * d), key: new Float32Array(kvHeads * S * headDim), value: new Float32Array(kvHeads * S * headDim) };
    for (let a = 0; a < S; a += n) {
      const q = Math.min(n, S - a);
      // the past: slots [0, a) of every head, packed [1, kvHeads, a, headDim]; a first call gets one masked slot
      const P = Math.max(1, a);
      const pk = new Float32Array(kvHeads * P * headDim);
      const pv = new Float32Array(kvHeads * P * headDim);
      for (let h = 0; h < kvHeads; h++) {
        pk.set(out.key.subarray(h * S * headDim, (h * S + a) * headDim), h * P * headDim);
        pv.set(out.value.subarray(h * S * headDim, (h * S + a) * headDim), h * P * headDim);
      }
      const T = P + q;
      const bias = new Float32Array(q * T).fill(NEG_INF);
      for (let s = 0; s < q; s++) {
        if (a) bias.fill(0, s * T, s * T + a);
        bias.fill(0, s * T + P, s * T + P + s + 1);
      }
      const r = await this.layer(i, hidden.subarray(a * d, (a + q) * d), positions.slice(a, a + q), bias, pk, pv, P);
      out.hidden.set(r.hidden, a * d);
      for (let h = 0; h < kvHeads; h++) {
        out.key.set(r.key.subarray(h * q * headDim, (h + 1) * q * headDim), (h * S + a) * headDim);
        out.value.set(r.value.subarray(h * q * headDim, (h + 1) * q * headDim), (h * S + a) * headDim);
      }
    }
    return out;
  }

  /** Layer i's keys (post-RoPE) and values for hidden states at positions, without attention. */
  async kv(i: number, hidden: Float32Array, positions: ArrayLike<number>): Promise<{ key: Float32Array; value: Float32Array }> {
    const S = positions.length;
    const r = await this.kvS[i].run({
      hidden: new ort.Tensor('float32', hidden, [1, S, hidden.length / S]),
      position_ids: this.int64(positions),
    });
    return { key: r.key.data as Float32Array, value: r.value.data as Float32Array };
  }

  /** [S, vocab] */
  async head(hidden: Float32Array, S: number): Promise<Float32Array> {
    const r = await this.headS.run({ hidden: new ort.Tensor('float32', hidden, [1, S, hidden.length / S]) });
    return r.logits.data as Float32Array;
  }
}
