import { floatBitsToHalf, floatsToHalf, halfToFloats, halfToNumber } from '../../shared/engine';

/** A half's value from its definition (sign, 5-bit exponent, 10-bit fraction), in double. */
function halfValue(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const e = (h >>> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0x1f) return m ? NaN : sign * Infinity;
  if (e === 0) return sign * m * 2 ** -24;
  return sign * (1 + m / 1024) * 2 ** (e - 15);
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);
const bitsOf = (x: number) => ((f32[0] = x), u32[0]);
const toHalf = (x: number) => floatBitsToHalf(bitsOf(x));

describe('float16 <-> float32', () => {
  test('every one of the 65536 halves converts to its exact value and back to the same bits', () => {
    const all = new Uint16Array(65536).map((_, i) => i);
    const floats = new Float32Array(65536);
    halfToFloats(all, floats);
    const back = new Uint16Array(65536);
    floatsToHalf(floats, back);
    let bad = 0;
    for (let h = 0; h < 65536; h++) {
      const want = halfValue(h);
      if (Number.isNaN(want)) {
        if (!Number.isNaN(floats[h]) || !Number.isNaN(halfValue(back[h]))) bad++;
        continue;
      }
      if (!Object.is(floats[h], want) || !Object.is(halfToNumber(h), want) || back[h] !== h) bad++;
    }
    expect(bad).toBe(0);
  });

  test('rounding is to nearest, ties to even, at every gap between adjacent halves (and past the largest)', () => {
    let bad = 0;
    for (let h = 0; h < 0x7c00; h++) {
      for (const sign of [0, 0x8000]) {
        const lo = halfValue(h | sign);
        const hiBits = (h + 1) | sign; // h + 1 = 0x7c00 is Infinity: the gap above 65504 is that of the largest binade
        const hi = h + 1 === 0x7c00 ? Math.sign(lo || 1) * 65536 : halfValue(hiBits);
        const mid = (lo + hi) / 2; // exact in float32: halves have 11 significant bits
        if (Math.fround(mid) !== mid) throw new Error(`midpoint ${mid} not a float32`);
        const even = (h & 1) === 0 ? h | sign : hiBits;
        if (toHalf(mid) !== even) bad++;
        // one float32 ulp either side of the midpoint goes to the nearer half
        const below = new Float32Array(new Uint32Array([bitsOf(mid) - 1]).buffer)[0];
        const above = new Float32Array(new Uint32Array([bitsOf(mid) + 1]).buffer)[0];
        const nearLo = Math.abs(below) < Math.abs(mid) ? below : above;
        const nearHi = Math.abs(below) < Math.abs(mid) ? above : below;
        if (mid !== 0 && toHalf(nearLo) !== (h | sign)) bad++;
        if (mid !== 0 && toHalf(nearHi) !== hiBits) bad++;
      }
    }
    expect(bad).toBe(0);
  });

  test('overflow, underflow, signed zero, infinities and NaN', () => {
    expect(toHalf(65504)).toBe(0x7bff);
    expect(toHalf(65519.99)).toBe(0x7bff);
    expect(toHalf(65520)).toBe(0x7c00); // the tie rounds to even: Infinity
    expect(toHalf(1e10)).toBe(0x7c00);
    expect(toHalf(-1e10)).toBe(0xfc00);
    expect(toHalf(Infinity)).toBe(0x7c00);
    expect(toHalf(-Infinity)).toBe(0xfc00);
    expect(toHalf(2 ** -25)).toBe(0); // half the smallest subnormal: tie to even (0)
    expect(toHalf(2 ** -25 * 1.0001)).toBe(1);
    expect(toHalf(-(2 ** -26))).toBe(0x8000);
    expect(toHalf(-0)).toBe(0x8000);
    expect(toHalf(1e-45)).toBe(0); // float32 subnormal
    expect(Number.isNaN(halfValue(toHalf(NaN)))).toBe(true);
  });

  test('offsets and lengths convert the named runs only', () => {
    const src = Float32Array.from([9, 1.5, -2, 0.333, 9]);
    const dst = new Uint16Array(6);
    floatsToHalf(src, dst, 1, 2, 3);
    expect(Array.from(dst)).toEqual([0, 0, toHalf(1.5), toHalf(-2), toHalf(0.333), 0]);
    const back = new Float32Array(5);
    halfToFloats(dst, back, 2, 1, 3);
    expect(Array.from(back)).toEqual([0, 1.5, -2, halfValue(toHalf(0.333)), 0]);
  });
});
