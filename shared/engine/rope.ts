import type { KVBlock, KVShape } from './kv';

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
  ) {
    this.half = headDim / 2;
    this.invFreq = new Float64Array(this.half);
    for (let i = 0; i < this.half; i++) {
      const exponent = Math.fround((2 * i) / headDim);
      this.invFreq[i] = Math.fround(1 / Math.fround(Math.pow(theta, exponent)));
    }
  }

  /** The float32 angle of frequency i at position p. */
  angle(p: number, i: number): number {
    return Math.fround(Math.fround(p) * this.invFreq[i]);
  }

  /** cos/sin of the rotation that takes position `from` to position `to`, per frequency. */
  delta(from: number, to: number, cos: Float64Array, sin: Float64Array): void {
    for (let i = 0; i < this.half; i++) {
      const d = this.angle(to, i) - this.angle(from, i);
      cos[i] = Math.cos(d);
      sin[i] = Math.sin(d);
    }
  }

  /**
   * Rotate one head-row of keys: src[srcOff .. srcOff+headDim) at position `from` into dst[dstOff ..) at `to`.
   * cos/sin are scratch buffers of length headDim/2.
   */
  rotateRow(
    src: Float32Array,
    srcOff: number,
    dst: Float32Array,
    dstOff: number,
    cos: Float64Array,
    sin: Float64Array,
  ): void {
    const h = this.half;
    for (let i = 0; i < h; i++) {
      const x1 = src[srcOff + i];
      const x2 = src[srcOff + i + h];
      dst[dstOff + i] = x1 * cos[i] - x2 * sin[i];
      dst[dstOff + i + h] = x2 * cos[i] + x1 * sin[i];
    }
  }

  /** A new block whose token t sits at positions[t]; values are shared with the source (blocks are immutable). */
  rotateBlock(block: KVBlock, positions: ArrayLike<number>): KVBlock {
    const { shape } = block;
    if (positions.length !== block.length) throw new RangeError('positions must have one entry per token');
    const out: KVBlock = {
      shape,
      length: block.length,
      tokens: block.tokens,
      positions: Int32Array.from(positions),
      keys: block.keys.map(() => new Float32Array(shape.kvHeads * block.length * shape.headDim)),
      values: block.values,
    };
    const cos = new Float64Array(this.half);
    const sin = new Float64Array(this.half);
    for (let t = 0; t < block.length; t++) {
      this.delta(block.positions[t], out.positions[t], cos, sin);
      for (let l = 0; l < shape.layers; l++) {
        for (let hd = 0; hd < shape.kvHeads; hd++) {
          const off = (hd * block.length + t) * shape.headDim;
          this.rotateRow(block.keys[l], off, out.keys[l], off, cos, sin);
        }
      }
    }
    return out;
  }

  /** Shift a whole block by `offset` positions. */
  shiftBlock(block: KVBlock, offset: number): KVBlock {
    return this.rotateBlock(block, Array.from(block.positions, (p) => p + offset));
  }
}

export function ropeFor(shape: KVShape, theta: number): Rope {
  return new Rope(shape.headDim, theta);
}
