import * as ort from 'onnxruntime-node';
import type { KVCache } from '../cache';
import { ModelLoadError } from '../errors';
import type { KVShape } from '../kv';
import { BufferPool } from '../pool';
import { kvOutputNames, pastInputNames, type GraphSession } from '../session';
import { buildBias, NEG_INF } from './bias';
import type { GraphRunner, RunInput, RunnerCapabilities, RunOutput } from './types';

/**
 * The primitive graph (model_epic.onnx: input_ids, position_ids, attn_bias [B,1,S,P+S], past → logits, new KV of the
 * call's tokens only). The cache's buffers go in whole (views, no copy) and the bias hides what a query must not see,
 * so holes, stale slots and out-of-order positions all work in one call.
 */
export class PrimitiveRunner implements GraphRunner {
  readonly kind = 'primitive' as const;
  readonly caps: RunnerCapabilities;
  readonly file: string;
  /**
   * Attention-bias buffers, pooled apart from KV buffers: a KV buffer is handed out uncleared (KVCache), which is safe
   * only if all it can hold is KV; a bias buffer's -1e9s in a masked key slot would outweigh the mask.
   */
  private readonly biasPool = new BufferPool(64 * 1024 * 1024);
  /**
   * Packed pasts (pastPlan's compact copies), one buffer per layer's keys and values, grown to the largest call and
   * reused as views. Drawn from the KV pool they were kept per size class: a chunked 4,129-token prefill at
   * the SmolLM2-135M shape passes pasts of 258, 516, ... slots and left 465 MB of them pooled. A set is lent to one
   * call at a time (calls may overlap: onnxruntime runs them off the JavaScript thread); one idle set is kept.
   */
  private scratch: Float32Array[] | null = null;

  constructor(
    private readonly graph: GraphSession,
    private readonly shape: KVShape,
  ) {
    this.file = graph.file;
    this.caps = { positionMasked: true, pastSlots: true, positionIds: true, kvDtype: 'float32', logitsIndex: graph.session.inputNames.includes('logits_index') };
    const meta = graph.session.inputMetadata.find((m) => m.name === 'past_key_values.0.key');
    if (meta?.isTensor && meta.type !== 'float32') {
      throw new ModelLoadError(`primitive graph ${graph.file} takes ${meta.type} KV; the primitive contract is float32`, graph.file);
    }
  }

  check(): void {}

  /**
   * How many cached slots a call of S tokens attends over (P). A past much shorter than the cache (a prefix-cache hit
   * followed by a long prefill, or forward's `pastSlots`) is passed as a copy of its first `used` slots when the keys
   * that saves outweigh the copy; otherwise the cache's buffers go in whole (views, no copy). An empty past is passed
   * as one masked zero slot: some exported graphs (GQA head repetition) reject a zero-length past.
   */
  pastPlan(cache: KVCache, S: number, pastSlots = Infinity): { used: number; compact: boolean; P: number } {
    const C = cache.capacity;
    const used = Math.min(cache.usedSlots(), pastSlots);
    const compact = used > 0 && used < C && (C - used) * S > used * this.shape.headDim;
    return { used, compact, P: used === 0 ? 1 : compact ? used : C };
  }

  async run({ cache, rows, S, ids, pos, pastSlots, logits }: RunInput): Promise<RunOutput> {
    const B = cache.batch;
    const { kvHeads, headDim, layers } = this.shape;
    const { used, compact, P } = this.pastPlan(cache, S, pastSlots);
    const T = P + S;
    // The bias is B × S × (P + S) floats (megabytes for a batch): pooled, so it is not garbage on every call.
    const bias = buildBias(cache, rows, S, P, cache.slotValid, this.biasPool.acquire(B * S * T, NEG_INF));
    const feeds: Record<string, ort.Tensor> = {
      input_ids: new ort.Tensor('int64', ids, [B, S]),
      position_ids: new ort.Tensor('int64', pos, [B, S]),
      attn_bias: new ort.Tensor('float32', bias, [B, 1, S, T]),
    };
    const lastOnly = this.caps.logitsIndex && logits === 'last';
    if (this.caps.logitsIndex) {
      // [B, 1]: each row's last real token (an empty row's 0 is computed and ignored); [B, S]: every token.
      const L = lastOnly ? 1 : S;
      const index = new BigInt64Array(B * L);
      for (let b = 0; b < B; b++) {
        if (lastOnly) index[b] = BigInt(Math.max(0, rows[b].tokens.length - 1));
        else for (let s = 0; s < S; s++) index[b * S + s] = BigInt(s);
      }
      feeds.logits_index = new ort.Tensor('int64', index, [B, L]);
    }
    const names = pastInputNames(layers);
    const dummy = used > 0 ? null : new Float32Array(B * kvHeads * headDim);
    const packed = B * kvHeads * P * headDim;
    let scratch: Float32Array[] | null = null;
    if (compact) {
      scratch = this.scratch && this.scratch[0].length >= packed ? this.scratch : null;
      this.scratch = scratch ? null : this.scratch;
      // Grown by doubling, capped at the cache's size: a chunked prefill's growing past regrows it a few times, not
      // per call, and leaves less than one cache's worth of old sets to the garbage collector.
      const floats = Math.min(B * kvHeads * cache.capacity * headDim, Math.max(packed, 2 * (this.scratch?.[0].length ?? 0)));
      scratch ??= Array.from({ length: 2 * layers }, () => new Float32Array(floats));
    }
    const past = (buf: Float32Array, i: number): Float32Array => {
      if (dummy) return dummy;
      if (!scratch) return buf;
      return cache.packSlots(buf, P, P, scratch[i].subarray(0, packed));
    };
    const dims = [B, kvHeads, P, headDim];
    for (let l = 0; l < layers; l++) {
      feeds[names[2 * l]] = new ort.Tensor('float32', past(cache.keys[l], 2 * l), dims);
      feeds[names[2 * l + 1]] = new ort.Tensor('float32', past(cache.values[l], 2 * l + 1), dims);
    }
    let res: ort.InferenceSession.OnnxValueMapType;
    try {
      res = await this.graph.session.run(feeds);
    } finally {
      this.biasPool.release(bias);
      // keep the larger of the idle set and this one
      if (scratch && (!this.scratch || this.scratch[0].length < scratch[0].length)) this.scratch = scratch;
    }
    const outNames = kvOutputNames('primitive', layers);
    const newK: Float32Array[] = [];
    const newV: Float32Array[] = [];
    let kvFloatsOut = 0;
    for (let l = 0; l < layers; l++) {
      newK.push(res[outNames[2 * l]].data as Float32Array);
      newV.push(res[outNames[2 * l + 1]].data as Float32Array);
      kvFloatsOut += newK[l].length + newV[l].length;
    }
    return { logits: res.logits.data as Float32Array, lastOnly, newK, newV, srcLen: S, srcStart: new Int32Array(B), kvFloatsOut, floatsConverted: 0 };
  }
}

