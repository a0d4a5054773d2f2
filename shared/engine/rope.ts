import type { RopeScaling } from './config';
import type { KVBlock } from './kv';

const f32 = Math.fround;

/**
 * RoPE inverse frequencies as transformers computes them in float32: inv_freq[i] = 1 / theta^(2i / headDim), then
 * rescaled for rope_scaling. linear: inv_freq / factor (positions divided by factor). llama3 (transformers'
 * _compute_llama3_parameters): wavelen = 2π / inv_freq; wavelengths below original_max / high_freq_factor are kept,
 * those above original_max / low_freq_factor are divided by factor, and those between are interpolated smoothly:
 * s = (original_max / wavelen - low) / (high - low), inv = (1 - s) · inv / factor + s · inv. Every operation is
 * rounded to float32 as torch rounds it (a Python scalar meets a float32 tensor as a float32), so the angles match the
 * exported graph's to the last bit where the graph bakes the same table in.
 */
export function ropeInvFreq(headDim: number, theta: number, scaling?: RopeScaling): Float32Array {
  const half = headDim / 2;
  const inv = new Float32Array(half);
  for (let i = 0; i < half; i++) {
    const exponent = f32(f32(2 * i) / headDim);
    inv[i] = f32(1 / f32(Math.pow(theta, exponent)));
  }
  if (!scaling) return inv;
  const factor = f32(scaling.factor);
  if (scaling.type === 'linear') {
    for (let i = 0; i < half; i++) inv[i] = f32(inv[i] / factor);
    return inv;
  }
  const old = scaling.originalMaxPositionEmbeddings;
  const low = scaling.lowFreqFactor;
  const high = scaling.highFreqFactor;
  // Python floats: these two are computed in double, then compared with a float32 tensor.
  const lowFreqWavelen = old / low;
  const highFreqWavelen = old / high;
  const twoPi = f32(2 * Math.PI);
  const span = f32(high - low);
  for (let i = 0; i < half; i++) {
    const wavelen = f32(twoPi / inv[i]);
    let llama = wavelen > f32(lowFreqWavelen) ? f32(inv[i] / factor) : inv[i];
    const medium = !(wavelen < f32(highFreqWavelen)) && !(wavelen > f32(lowFreqWavelen));
    if (medium) {
      const smooth = f32(f32(f32(f32(old) / wavelen) - f32(low)) / span);
      const a = f32(f32(f32(1 - smooth) * llama) / factor);
      const b = f32(smooth * llama);
      llama = f32(a + b);
    }
    inv[i] = llama;
  }
  return inv;
}

/**
 * RoPE delta rotation of cached keys (Hugging Face Llama's rotate_half convention: dimension i pairs with
 * i + headDim/2). A key computed at position p carries R(p); multiplying it by R(q - p) gives R(q), which is exactly
 * the key the model would have produced at q — RoPE is relative, so a chunk compiled alone at 0 and rotated to P
 * equals the chunk compiled alone at P. Values carry no position and are never touched.
 *
 * Angles are formed as the exported graph forms them (float32 inverse frequencies, float32 position × frequency) so
 * the rotated key matches a key computed in place to float32 rounding.
 */
export class Rope {
  readonly invFreq: Float64Array;
  readonly half: number;

  constructor(
    readonly headDim: number,
    readonly theta: number,
    /** rope_scaling (llama3, linear): only the frequencies change; a key still moves by a pure rotation. */
    readonly scaling?: RopeScaling,
  ) {
    this.half = headDim / 2;
    this.invFreq = Float64Array.from(ropeInvFreq(headDim, theta, scaling));
  }

  private cosT?: Float64Array;
  private sinT?: Float64Array;
  private tableSize = 0;

  /** cos/sin of every frequency's angle at positions [0, n), computed once (grown on demand). */
  private table(n: number): { cos: Float64Array; sin: Float64Array } {
    if (!this.cosT || n > this.tableSize) {
      const size = Math.max(n, 2 * this.tableSize, 4096);
      const cos = new Float64Array(size * this.half);
      const sin = new Float64Array(size * this.half);
      for (let p = 0; p < size; p++) {
        for (let i = 0; i < this.half; i++) {
          const a = this.angle(p, i);
          cos[p * this.half + i] = Math.cos(a);
          sin[p * this.half + i] = Math.sin(a);
        }
      }
      this.cosT = cos;
      this.sinT = sin;
      this.tableSize = size;
    }
    return { cos: this.cosT, sin: this.sinT! };
  }

  private scratchCos = new Float64Array(0);
  private scratchSin = new Float64Array(0);

  /**
   * Per token t, cos/sin of the rotation from `from[t]` to `to[t]` ([n, headDim/2] each), from the angle table:
   * cos(b−a) = cos b cos a + sin b sin a, sin(b−a) = sin b cos a − cos b sin a.
   * The arrays are this Rope's scratch space, overwritten by the next call: rotate with them before calling again (both
   * callers do so synchronously). Fresh arrays cost 64 KB of garbage per 256-token chunk placed, ~0.5 MB a request.
   */
  deltas(from: ArrayLike<number>, to: ArrayLike<number>): { cos: Float64Array; sin: Float64Array } {
    const n = from.length;
    let max = 0;
    for (let t = 0; t < n; t++) max = Math.max(max, from[t], to[t]);
    const T = this.table(max + 1);
    const h = this.half;
    if (this.scratchCos.length < n * h) {
      const size = Math.max(n * h, 2 * this.scratchCos.length);
      this.scratchCos = new Float64Array(size);
      this.scratchSin = new Float64Array(size);
    }
    const cos = this.scratchCos.subarray(0, n * h);
    const sin = this.scratchSin.subarray(0, n * h);
    for (let t = 0; t < n; t++) {
      const a = from[t] * h;
      const b = to[t] * h;
      for (let i = 0; i < h; i++) {
        const ca = T.cos[a + i];
        const sa = T.sin[a + i];
        const cb = T.cos[b + i];
        const sb = T.sin[b + i];
        cos[t * h + i] = cb * ca + sb * sa;
        sin[t * h + i] = sb * ca - cb * sa;
      }
    }
    return { cos, sin };
  }

  /**
   * Rotate, in place, a run of n head-rows (n × headDim floats, contiguous) of buf from buf[off..], with per-row deltas
   * from `deltas()`. Callers copy a run into place first: in V8 that is faster than rotating from one array into
   * another (~25% in a micro-benchmark of the placing loop, the loop every cached token's key goes through).
   */
  rotateInPlace(buf: Float32Array, off: number, n: number, cos: Float64Array, sin: Float64Array): void {
    const h = this.half;
    const D = this.headDim;
    let c0 = 0;
    const end = off + n * D;
    for (let s0 = off; s0 < end; s0 += D, c0 += h) {
      for (let i = 0; i < h; i++) {
        const a = s0 + i;
        const b = a + h;
        const x1 = buf[a];
        const x2 = buf[b];
        const c = cos[c0 + i];
        const sn = sin[c0 + i];
        buf[a] = x1 * c - x2 * sn;
        buf[b] = x2 * c + x1 * sn;
      }
    }
  }

  /** The float32 angle of frequency i at position p. */
  angle(p: number, i: number): number {
    return Math.fround(Math.fround(p) * this.invFreq[i]);
  }

  /** A new block whose token t sits at positions[t]; values are shared with the source (blocks are immutable). */
  rotateBlock(block: KVBlock, positions: ArrayLike<number>): KVBlock {
    const { shape } = block;
    const n = block.length;
    if (positions.length !== n) throw new RangeError('positions must have one entry per token');
    const out: KVBlock = {
      shape,
      length: n,
      tokens: block.tokens,
      positions: Int32Array.from(positions),
      keys: block.keys.map((k) => k.slice(0, shape.kvHeads * n * shape.headDim)),
      values: block.values,
    };
    const { cos, sin } = this.deltas(block.positions, out.positions);
    for (let l = 0; l < shape.layers; l++) {
      for (let hd = 0; hd < shape.kvHeads; hd++) {
        this.rotateInPlace(out.keys[l], hd * n * shape.headDim, n, cos, sin);
      }
    }
    return out;
  }

  /** Shift a whole block by `offset` positions. */
  shiftBlock(block: KVBlock, offset: number): KVBlock {
    return this.rotateBlock(block, Array.from(block.positions, (p) => p + offset));
  }
}
