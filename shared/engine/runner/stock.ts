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
    private readonly vocabSize: number,
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
    this.caps = { positionMasked: false, pastSlots: false, positionIds: s.inputNames.includes('position_ids'), kvDtype, logitsIndex: false };
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
    return { used, compact: true, P: this.caps.positionIds ? Math.max(used, 1) : used };
  }

  /**
   * One call. Optimum graphs: the rows together, present returned as it is (float32) with each row's tokens at P + s.
   * GroupQueryAttention graphs (no position_ids) read each row's length from its attention_mask sum and write its
   * tokens at slots sum - n.. of present; they refuse several new tokens over a non-empty past in a batch of more
   * than one row (test/engine/gqa.test.ts pins these down), so such a call runs row by row.
   */
  async run({ cache, rows, S, ids, pos }: RunInput): Promise<RunOutput> {
    const B = cache.batch;
    const live = rows.map((r, b) => (r.tokens.length ? b : -1)).filter((b) => b >= 0);
    // A GroupQueryAttention row with no tokens and nothing cached would read seqlens_k = -1, which the op refuses:
    // such a call also runs row by row, leaving that row out (serving's in-step link calls have rows that sit out).
    const emptyRowNoPast = rows.some((r, b) => !r.tokens.length && cache.length[b] === 0);
    const perRow = !this.caps.positionIds && B > 1 && ((S > 1 && cache.usedSlots() > 0) || emptyRowNoPast);
    if (!perRow && this.caps.kvDtype === 'float32') {
      const c = await this.call(cache, Array.from({ length: B }, (_, b) => b), rows, S, ids, pos);
      const logits = this.floats(c.logits);
      return { logits: logits.data, lastOnly: false, newK: c.keys.map((t) => t.data as Float32Array), newV: c.values.map((t) => t.data as Float32Array), srcLen: c.T, srcStart: c.starts, kvFloatsOut: c.kvFloatsOut, floatsConverted: logits.converted };
    }
    // Compact outputs [B, kvHeads, S, headDim]: only the call's tokens, converted from float16 where the graph's KV is.
    const { kvHeads, headDim, layers } = this.shape;
    const V = this.vocabSize;
    const out: RunOutput = {
      logits: new Float32Array(B * S * V),
      lastOnly: false,
      newK: Array.from({ length: layers }, () => new Float32Array(B * kvHeads * S * headDim)),
      newV: Array.from({ length: layers }, () => new Float32Array(B * kvHeads * S * headDim)),
      srcLen: S,
      srcStart: new Int32Array(B),
      kvFloatsOut: 0,
      floatsConverted: 0,
    };
    const groups = perRow ? live.map((b) => [b]) : [Array.from({ length: B }, (_, b) => b)];
    for (const sel of groups) {
      const n = perRow ? rows[sel[0]].tokens.length : S;
      const sub = (a: BigInt64Array) => (perRow ? a.subarray(sel[0] * S, sel[0] * S + n) : a);
      const c = await this.call(cache, sel, rows, n, sub(ids), sub(pos));
      out.kvFloatsOut += c.kvFloatsOut;
      out.floatsConverted += c.floatsConverted;
      const lg = this.floats(c.logits);
      out.floatsConverted += lg.converted;
      sel.forEach((b, i) => out.logits.set(lg.data.subarray(i * n * V, (i + 1) * n * V), b * S * V));
      for (let l = 0; l < layers; l++) {
        for (const [src, dst] of [
          [c.keys[l], out.newK[l]],
          [c.values[l], out.newV[l]],
        ] as const) {
          sel.forEach((b, i) => {
            for (let h = 0; h < kvHeads; h++) {
              const from = ((i * kvHeads + h) * c.T + c.starts[i]) * headDim;
              const to = (b * kvHeads + h) * S * headDim;
              if (src.type === 'float16') halfToFloats(src.data as Uint16Array, dst, from, to, n * headDim);
              else dst.set((src.data as Float32Array).subarray(from, from + n * headDim), to);
            }
          });
          if (src.type === 'float16') out.floatsConverted += sel.length * kvHeads * n * headDim;
        }
      }
    }
    return out;
  }

  /** logits as float32 (float16 logits converted). */
  private floats(t: ort.Tensor): { data: Float32Array; converted: number } {
    if (t.type !== 'float16') return { data: t.data as Float32Array, converted: 0 };
    const data = new Float32Array(t.size);
    halfToFloats(t.data as Uint16Array, data);
    return { data, converted: t.size };
  }

  /** Per cache, its KV as float16 and the slotGen each slot had when converted (float16 graphs). */
  private readonly mirrors = new WeakMap<KVCache, { k: Uint16Array[]; v: Uint16Array[]; gen: Uint32Array }>();

  /**
   * The cache's float16 mirror with slots [0, dense) of rows `sel` brought up to date: each run of slots written since
   * it was last converted (KVCache.slotGen) is converted, the rest is reused. A decode step converts its one new token
   * per row instead of the whole past. Costs half the cache's bytes again while the cache lives.
   */
  private halfMirror(cache: KVCache, sel: number[], dense: number) {
    const { kvHeads, headDim, layers } = this.shape;
    const C = cache.capacity;
    let m = this.mirrors.get(cache);
    if (!m) {
      const n = cache.batch * kvHeads * C * headDim;
      m = { k: Array.from({ length: layers }, () => new Uint16Array(n)), v: Array.from({ length: layers }, () => new Uint16Array(n)), gen: new Uint32Array(cache.batch * C) };
      this.mirrors.set(cache, m);
    }
    let converted = 0;
    for (const b of sel) {
      let j = 0;
      while (j < dense) {
        if (cache.slotGen[b * C + j] === m.gen[b * C + j]) {
          j++;
          continue;
        }
        let end = j + 1;
        while (end < dense && cache.slotGen[b * C + end] !== m.gen[b * C + end]) end++;
        for (let l = 0; l < layers; l++) {
          for (let h = 0; h < kvHeads; h++) {
            const at = cache.offset(b, h, j);
            floatsToHalf(cache.keys[l], m.k[l], at, at, (end - j) * headDim);
            floatsToHalf(cache.values[l], m.v[l], at, at, (end - j) * headDim);
          }
        }
        m.gen.set(cache.slotGen.subarray(b * C + j, b * C + end), b * C + j);
        converted += 2 * layers * kvHeads * (end - j) * headDim;
        j = end;
      }
    }
    return { k: m.k, v: m.v, converted };
  }

  /** Feeds for rows `sel` of the cache (S tokens each, ids/pos [sel.length, S]) and the graph's outputs. */
  private async call(cache: KVCache, sel: number[], rows: RowInput[], S: number, ids: BigInt64Array, pos: BigInt64Array) {
    const Bs = sel.length;
    const C = cache.capacity;
    const { kvHeads, headDim, layers } = this.shape;
    // Slots copied from the cache: up to the last valid slot of the rows. Optimum graphs get one masked zero slot for
    // an empty past (some reject a zero-length past); GQA graphs an empty past, which is how they see a first prompt.
    let dense = 0;
    for (const b of sel) for (let j = C - 1; j >= dense; j--) if (cache.slotValid[b * C + j]) {
      dense = j + 1;
      break;
    }
    const P = this.caps.positionIds ? Math.max(dense, 1) : dense;
    const T = P + S;
    const mask = new BigInt64Array(Bs * T);
    const starts: number[] = [];
    sel.forEach((b, i) => {
      let valid = 0;
      for (let j = 0; j < dense; j++) {
        mask[i * T + j] = BigInt(cache.slotValid[b * C + j]);
        valid += cache.slotValid[b * C + j];
      }
      for (let s = 0; s < S; s++) mask[i * T + P + s] = s < rows[b].tokens.length ? 1n : 0n;
      // where the row's tokens land in present: after the whole past (Optimum), after the row's own length (GQA)
      starts.push(this.caps.positionIds ? P : valid);
    });
    const feeds: Record<string, ort.Tensor> = {
      input_ids: new ort.Tensor('int64', ids, [Bs, S]),
      attention_mask: new ort.Tensor('int64', mask, [Bs, T]),
    };
    if (this.caps.positionIds) feeds.position_ids = new ort.Tensor('int64', pos, [Bs, S]);
    const names = pastInputNames(layers);
    const dims = [Bs, kvHeads, P, headDim];
    const half = this.caps.kvDtype === 'float16';
    let floatsConverted = 0;
    const mirror = half ? this.halfMirror(cache, sel, dense) : undefined;
    if (mirror) floatsConverted += mirror.converted;
    const past = (l: number, kind: 'k' | 'v'): ort.Tensor => {
      const n = Bs * kvHeads * P * headDim;
      // float16: packed from the cache's float16 mirror, where only slots written since the last call were converted
      const src = mirror ? mirror[kind][l] : kind === 'k' ? cache.keys[l] : cache.values[l];
      const out = half ? new Uint16Array(n) : new Float32Array(n);
      sel.forEach((b, i) => {
        for (let h = 0; h < kvHeads; h++) {
          const from = cache.offset(b, h, 0);
          out.set(src.subarray(from, from + dense * headDim), (i * kvHeads + h) * P * headDim);
        }
      });
      return half ? new ort.Tensor('float16', out as Uint16Array, dims) : new ort.Tensor('float32', out as Float32Array, dims);
    };
    for (let l = 0; l < layers; l++) {
      feeds[names[2 * l]] = past(l, 'k');
      feeds[names[2 * l + 1]] = past(l, 'v');
    }
    const res = await this.graph.session.run(feeds);
    const outNames = kvOutputNames('stock', layers);
    const keys: ort.Tensor[] = [];
    const values: ort.Tensor[] = [];
    let kvFloatsOut = 0;
    for (let l = 0; l < layers; l++) {
      keys.push(res[outNames[2 * l]]);
      values.push(res[outNames[2 * l + 1]]);
      kvFloatsOut += keys[l].size + values[l].size;
    }
    // present is [Bs, kvHeads, max(T, P), headDim]
    return { logits: res.logits, keys, values, T: keys[0].dims[2], starts, kvFloatsOut, floatsConverted };
  }
}

function tensorType(meta: readonly ort.InferenceSession.ValueMetadata[], name: string): string {
  const m = meta.find((x) => x.name === name);
  return m && m.isTensor ? m.type : 'unknown';
}

export type { KVDtype };
