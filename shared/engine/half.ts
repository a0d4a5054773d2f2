/**
 * IEEE 754 binary16 <-> binary32 for KV at a float16 graph's boundary (Node 20 has no Float16Array; onnxruntime-node
 * takes and returns float16 tensors as Uint16Array bit patterns). The cache stays float32 in memory: RoPE
 * re-rotation and CacheBlend's deviations work on float32, and only what crosses into or out of the graph is
 * converted.
 *
 * float32 -> float16 rounds to nearest, ties to even (what onnxruntime's Cast and numpy's astype do): values past the
 * largest half (65504) by half an ulp or more become ±Infinity, values below the smallest subnormal (2^-24) by more
 * than half of it become ±0, NaN stays NaN. float16 -> float32 is exact (a 65,536-entry table).
 */

/** Every half's float32 bit pattern, indexed by the half's bits. */
const HALF_TO_FLOAT_BITS: Uint32Array = (() => {
  const t = new Uint32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = (h & 0x8000) << 16;
    const exp = (h >>> 10) & 0x1f;
    let mant = h & 0x3ff;
    if (exp === 0x1f) t[h] = sign | 0x7f800000 | (mant << 13); // Inf / NaN (payload kept)
    else if (exp !== 0) t[h] = sign | ((exp + 112) << 23) | (mant << 13);
    else if (mant === 0) t[h] = sign; // ±0
    else {
      // subnormal half: mant · 2^-24; normalise it for float32
      let e = 113;
      while ((mant & 0x400) === 0) {
        mant <<= 1;
        e--;
      }
      t[h] = sign | (e << 23) | ((mant & 0x3ff) << 13);
    }
  }
  return t;
})();

/** The bits of the half nearest (ties to even) to the float32 with bits `b`. */
export function floatBitsToHalf(b: number): number {
  const sign = (b >>> 16) & 0x8000;
  const exp = (b >>> 23) & 0xff;
  const mant = b & 0x7fffff;
  if (exp === 0xff) return mant ? sign | 0x7e00 | (mant >>> 13) : sign | 0x7c00;
  const e = exp - 112; // the half's biased exponent
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    // subnormal half: (1.mant) · 2^(exp-127) = m · 2^-24, m = full >> (14 - e), rounded
    const full = mant | 0x800000;
    const shift = 14 - e;
    let h = full >>> shift;
    const rem = full & ((1 << shift) - 1);
    const mid = 1 << (shift - 1);
    if (rem > mid || (rem === mid && h & 1)) h++;
    return sign | h;
  }
  let h = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  // a carry out of the mantissa steps the exponent (up to 0x7c00: Infinity), as it should
  if (rem > 0x1000 || (rem === 0x1000 && h & 1)) h++;
  return sign | h;
}

/** Convert `n` floats of src from srcOff into dst from dstOff (float32 -> float16 bits). */
export function floatsToHalf(src: Float32Array, dst: Uint16Array, srcOff = 0, dstOff = 0, n = src.length - srcOff): void {
  const u = new Uint32Array(src.buffer, src.byteOffset + srcOff * 4, n);
  for (let i = 0; i < n; i++) dst[dstOff + i] = floatBitsToHalf(u[i]);
}

/** Convert `n` halves of src from srcOff into dst from dstOff (float16 bits -> float32, exact; bit patterns copied). */
export function halfToFloats(src: Uint16Array, dst: Float32Array, srcOff = 0, dstOff = 0, n = src.length - srcOff): void {
  const out = new Uint32Array(dst.buffer, dst.byteOffset + dstOff * 4, n);
  const t = HALF_TO_FLOAT_BITS;
  for (let i = 0; i < n; i++) out[i] = t[src[srcOff + i]];
}

/** One half's value as a number. */
export function halfToNumber(h: number): number {
  const f = new Float32Array(new Uint32Array([HALF_TO_FLOAT_BITS[h & 0xffff]]).buffer);
  return f[0];
}
