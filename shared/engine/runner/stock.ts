import * as ort from 'onnxruntime-node';
import type { KVCache } from '../cache';
import { EngineInputError, ModelLoadError } from '../errors';
import { floatsToHalf, halfToFloats } from '../half';
import type { KVShape } from '../kv';
import { kvOutputNames, pastInputNames, type GraphSession } from '../session';
import type { GraphRunner, KVDtype, RowInput, RunInput, RunnerCapabilities, RunOutput } from './types';

/**
 * A stock decoder-with-past graph as exporters write it (Optimum: input_ids, attention_mask, position_ids, past →
 * logits, present = past and new concatenated; onnxruntime-genai's GroupQueryAttention graphs: the same names, no
 * position_ids, rotary positions from the past length). Its past must be dense, so each call packs the cache's used
 * slots into a fresh past (converted to float16 on the way when the graph's KV is float16) and the attention mask
 * hides invalid ones; a token sees every valid slot of its row, so a call's rows must come after all they cache.
 */
export class StockRunner implements GraphRunner {
  readonly kind = 'stock' as const;
  readonly caps: RunnerCapabilities;
  readonly file: string;

  constructor(
    private readonly graph: GraphSession,
    private readonly shape: KVShape,
  ) {
    this.file = graph.file;
    const s = graph.session;
    const kvDtype = tensorType(s.inputMetadata, 'past_key_values.0.key');
    if (kvDtype !== 'float32' && kvDtype !== 'float16') {
      throw new ModelLoadError(`stock graph ${graph.file}: past_key_values are ${kvDtype}; float32 and float16 KV are supported`, graph.file);
    }
    const presentType = tensorType(s.outputMetadata, kvOutputNames('stock', 1)[0]);
    if (presentType !== kvDtype) {
      throw new ModelLoadError(`stock graph ${graph.file}: past_key_values are ${kvDtype} but present is ${presentType}`, graph.file);
    }
    this.caps = { positionMasked: false, pastSlots: false, positionIds: s.inputNames.includes('position_ids'), kvDtype };
  }

  check(cache: KVCache, rows: RowInput[]): void {
    const C = cache.capacity;
    for (let b = 0; b < rows.length; b++) {
      const r = rows[b];
      const n = r.tokens.length;
      if (!n) continue;
      let first = Infinity;
      for (let s = 0; s < n; s++) {
        first = Math.min(first, r.positions[s]);
        if (s && r.positions[s] <= r.positions[s - 1]) {
          throw new EngineInputError(
            `row ${b}: positions must increase within a call on the stock graph (${r.positions[s - 1]} then ${r.positions[s]}); out-of-order positions need position-masked attention, which only the primitive graph (model_epic.onnx) provides`,
          );
        }
      }
      let valid = 0;
      let contiguous = true;
      for (let j = 0; j < C; j++) {
        if (!cache.slotValid[b * C + j]) continue;
        if (cache.slotPos[b * C + j] >= first) {
          throw new EngineInputError(
            'the stock graph attends to every valid cached slot; this call needs position-masked attention, which only the primitive graph (model_epic.onnx) provides',
          );
        }
        if (j !== valid || cache.slotPos[b * C + j] !== j) contiguous = false;
        valid++;
      }
      if (!this.caps.positionIds) {
        let follows = contiguous;
        for (let s = 0; s < n && follows; s++) follows = r.positions[s] === valid + s;
        if (!follows) {
          throw new EngineInputError(
            `row ${b}: ${this.file} takes no position_ids (rotary positions come from the past length), so a row's tokens must continue its cache ` +
              `contiguously: ${valid} cached slot(s) at positions 0..${valid - 1} in slots 0..${valid - 1}, then positions ${valid}.. ` +
              `(got positions ${Array.from(r.positions).slice(0, 4).join(', ')}${n > 4 ? ', …' : ''}${contiguous ? '' : '; the cache has holes or moved slots'})`,
          );
        }
      }
    }
  }

  pastPlan(cache: KVCache): { used: number; compact: boolean; P: number } {
    const used = cache.usedSlots();
    return { used, compact: true, P: Math.max(used, 1) };
  }

  async run({ cache, rows, S, ids, pos }: RunInput): Promise<RunOutput> {
    const B = cache.batch;
    const C = cache.capacity;
    const { kvHeads, headDim, layers } = this.shape;
    // Slots copied from the cache; an empty past becomes one masked zero slot (some graphs reject a zero-length past).
    const dense = cache.usedSlots();
    const P = Math.max(dense, 1);
    const T = P + S;
    const mask = new BigInt64Array(B * T);
    for (let b = 0; b < B; b++) {
      for (let j = 0; j < dense; j++) mask[b * T + j] = BigInt(cache.slotValid[b * C + j]);
      for (let s = 0; s < S; s++) mask[b * T + P + s] = s < rows[b].tokens.length ? 1n : 0n;
    }
    const feeds: Record<string, ort.Tensor> = {
      input_ids: new ort.Tensor('int64', ids, [B, S]),
      attention_mask: new ort.Tensor('int64', mask, [B, T]),
    };
    if (this.caps.positionIds) feeds.position_ids = new ort.Tensor('int64', pos, [B, S]);
    const names = pastInputNames(layers);
    const dims = [B, kvHeads, P, headDim];
    const half = this.caps.kvDtype === 'float16';
    let floatsConverted = 0;
    const past = (buf: Float32Array): ort.Tensor => {
      if (!half) return new ort.Tensor('float32', cache.packSlots(buf, dense, P, new Float32Array(B * kvHeads * P * headDim)), dims);
      // Packed and converted in one pass: the float16 past is the only copy.
      const out = new Uint16Array(B * kvHeads * P * headDim);
      for (let b = 0; b < B; b++) {
        for (let h = 0; h < kvHeads; h++) floatsToHalf(buf, out, cache.offset(b, h, 0), (b * kvHeads + h) * P * headDim, dense * headDim);
      }
      floatsConverted += B * kvHeads * dense * headDim;
      return new ort.Tensor('float16', out, dims);
    };
    for (let l = 0; l < layers; l++) {
      feeds[names[2 * l]] = past(cache.keys[l]);
      feeds[names[2 * l + 1]] = past(cache.values[l]);
    }
    const res = await this.graph.session.run(feeds);
    const outNames = kvOutputNames('stock', layers);
    const newK: Float32Array[] = [];
    const newV: Float32Array[] = [];
    let kvFloatsOut = 0;
    // present is [B, kvHeads, P + S, headDim]: the call's tokens follow the past.
    const fresh = (t: ort.Tensor): Float32Array => {
      kvFloatsOut += t.size;
      if (!half) return t.data as Float32Array;
      // Only the call's tokens come back to float32: the past half of present is what went in.
      const src = t.data as Uint16Array;
      const out = new Float32Array(B * kvHeads * S * headDim);
      for (let bh = 0; bh < B * kvHeads; bh++) halfToFloats(src, out, (bh * T + P) * headDim, bh * S * headDim, S * headDim);
      floatsConverted += out.length;
      return out;
    };
    for (let l = 0; l < layers; l++) {
      newK.push(fresh(res[outNames[2 * l]]));
      newV.push(fresh(res[outNames[2 * l + 1]]));
    }
    let logits: Float32Array;
    if (res.logits.type === 'float16') {
      const src = res.logits.data as Uint16Array;
      logits = new Float32Array(src.length);
      halfToFloats(src, logits);
      floatsConverted += src.length;
    } else logits = res.logits.data as Float32Array;
    const srcStart = new Int32Array(B).fill(half ? 0 : P);
    return { logits, newK, newV, srcLen: half ? S : T, srcStart, kvFloatsOut, floatsConverted };
  }
}

function tensorType(meta: readonly ort.InferenceSession.ValueMetadata[], name: string): string {
  const m = meta.find((x) => x.name === name);
  return m && m.isTensor ? m.type : 'unknown';
}

export type { KVDtype };
