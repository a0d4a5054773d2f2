import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { allocBlock, loadModelConfig, ModelLoadError, Rope, ropeInvFreq, type RopeScaling } from '../../shared/engine';

/**
 * The frequencies, written out again in double precision from the definitions (Llama 3.1's model card / transformers'
 * docstring), not from rope.ts: per frequency, by wavelength, which of the three bands it falls in.
 */
function expectedInvFreq(headDim: number, theta: number, s?: RopeScaling): number[] {
  const out: number[] = [];
  for (let i = 0; i < headDim / 2; i++) {
    const base = Math.pow(theta, -(2 * i) / headDim);
    if (!s) out.push(base);
    else if (s.type === 'linear') out.push(base / s.factor);
    else {
      const wavelen = (2 * Math.PI) / base;
      const lowWavelen = s.originalMaxPositionEmbeddings / s.lowFreqFactor; // longer than this: scaled down
      const highWavelen = s.originalMaxPositionEmbeddings / s.highFreqFactor; // shorter than this: kept
      if (wavelen < highWavelen) out.push(base);
      else if (wavelen > lowWavelen) out.push(base / s.factor);
      else {
        // ratio of the original context to the wavelength, mapped linearly from [low, high] to [0, 1]
        const t = (s.originalMaxPositionEmbeddings / wavelen - s.lowFreqFactor) / (s.highFreqFactor - s.lowFreqFactor);
        out.push(base * (t + (1 - t) / s.factor));
      }
    }
  }
  return out;
}

const LLAMA3: RopeScaling = { type: 'llama3', factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192 };

function relErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let w = 0;
  for (let i = 0; i < a.length; i++) w = Math.max(w, Math.abs(a[i] - b[i]) / Math.abs(b[i]));
  return w;
}

describe('RoPE scaling: inverse frequencies', () => {
  test.each([
    ['Llama 3.1 8B (head 128, theta 500000, llama3 x8)', 128, 500000, LLAMA3],
    ['the llama3-style fixture (head 16)', 16, 500000, LLAMA3],
    ['llama3 with other factors', 64, 10000, { type: 'llama3', factor: 4, lowFreqFactor: 2, highFreqFactor: 8, originalMaxPositionEmbeddings: 2048 } as RopeScaling],
    ['linear x2', 16, 1000000, { type: 'linear', factor: 2 } as RopeScaling],
    ['plain', 32, 1000000, undefined],
  ])('%s matches the definition to float32 rounding', (_name, headDim, theta, scaling) => {
    const got = ropeInvFreq(headDim, theta, scaling);
    expect(got).toHaveLength(headDim / 2);
    expect(relErr(got, expectedInvFreq(headDim, theta, scaling))).toBeLessThan(2e-6);
  });

  test('llama3 bands: high frequencies kept, low ones divided by factor, the middle strictly between', () => {
    const plain = ropeInvFreq(128, 500000);
    const scaled = ropeInvFreq(128, 500000, LLAMA3);
    let kept = 0;
    let divided = 0;
    let between = 0;
    for (let i = 0; i < 64; i++) {
      const wavelen = (2 * Math.PI) / plain[i];
      if (wavelen < 8192 / 4) {
        expect(scaled[i]).toBe(plain[i]);
        kept++;
      } else if (wavelen > 8192) {
        expect(scaled[i]).toBe(Math.fround(plain[i] / 8));
        divided++;
      } else {
        expect(scaled[i]).toBeLessThan(plain[i]);
        expect(scaled[i]).toBeGreaterThan(plain[i] / 8);
        between++;
      }
    }
    // Llama 3.1's real table has all three bands.
    expect([kept > 0, divided > 0, between > 0]).toEqual([true, true, true]);
    // Scaled frequencies never increase with the index (the interpolation is monotone).
    for (let i = 1; i < 64; i++) expect(scaled[i]).toBeLessThanOrEqual(scaled[i - 1]);
  });
});

describe('RoPE scaling: keys still move by a pure rotation', () => {
  const shape = { layers: 2, kvHeads: 2, headDim: 16 };
  const n = 5;
  function randomBlock(seed: number) {
    const b = allocBlock(shape, n);
    let s = seed;
    const rnd = () => ((s = (s * 1103515245 + 12345) % 2147483648) / 2147483648) * 2 - 1;
    for (let l = 0; l < shape.layers; l++) {
      for (let i = 0; i < b.keys[l].length; i++) b.keys[l][i] = rnd();
      for (let i = 0; i < b.values[l].length; i++) b.values[l][i] = rnd();
    }
    for (let t = 0; t < n; t++) b.positions[t] = t;
    return b;
  }
  const diff = (a: Float32Array[], b: Float32Array[]) => Math.max(...a.map((x, l) => Math.max(...x.map((v, i) => Math.abs(v - b[l][i])))));

  test.each([
    ['llama3', LLAMA3],
    ['linear', { type: 'linear', factor: 2 } as RopeScaling],
  ])('%s: rotating 0 -> P equals 0 -> Q -> P, and a scaled rope differs from a plain one', (_n, scaling) => {
    const rope = new Rope(16, 500000, scaling);
    const block = randomBlock(7);
    for (const [Q, P] of [
      [3000, 100],
      [17, 9000],
      [8191, 4096],
    ]) {
      const direct = rope.shiftBlock(block, P);
      const viaQ = rope.shiftBlock(rope.shiftBlock(block, Q), P - Q);
      expect(Array.from(direct.positions)).toEqual(Array.from(viaQ.positions));
      expect(diff(direct.keys, viaQ.keys)).toBeLessThan(1e-5);
      // values never move
      expect(direct.values).toBe(block.values);
    }
    // A key computed at p from a raw vector x is R(p)x with the scaled angles: moving it to q gives R(q)x.
    const x = randomBlock(11); // its keys taken as raw (unrotated) vectors: angle 0
    const at = (p: number) => rope.rotateBlock({ ...x, positions: new Int32Array(n) }, Array.from({ length: n }, (_, t) => p + t));
    expect(diff(rope.shiftBlock(at(0), 5000).keys, at(5000).keys)).toBeLessThan(1e-4);
    const plain = new Rope(16, 500000);
    expect(diff(plain.shiftBlock(at(0), 5000).keys, at(5000).keys)).toBeGreaterThan(1e-2);
  });
});

describe('rope_scaling in config.json', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'rope-cfg-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));
  const base = {
    vocab_size: 100,
    hidden_size: 64,
    num_hidden_layers: 2,
    num_attention_heads: 4,
    max_position_embeddings: 8192,
    bos_token_id: 1,
    eos_token_id: 2,
  };
  const load = (rope_scaling: unknown) => {
    writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...base, rope_scaling }));
    return loadModelConfig(dir);
  };
  const refusal = (rope_scaling: unknown): string => {
    try {
      load(rope_scaling);
    } catch (e) {
      expect(e).toBeInstanceOf(ModelLoadError);
      return (e as Error).message;
    }
    throw new Error('expected a refusal');
  };

  test('llama3 (rope_type) and linear (legacy type) are read; default and null are plain', () => {
    expect(
      load({ rope_type: 'llama3', factor: 8.0, low_freq_factor: 1.0, high_freq_factor: 4.0, original_max_position_embeddings: 8192 }).ropeScaling,
    ).toEqual(LLAMA3);
    expect(load({ type: 'linear', factor: 2.0 }).ropeScaling).toEqual({ type: 'linear', factor: 2 });
    expect(load({ rope_type: 'default' }).ropeScaling).toBeUndefined();
    expect(load(null).ropeScaling).toBeUndefined();
    expect(load(undefined).ropeScaling).toBeUndefined();
  });

  test('other types are refused naming the field; missing parameters are named', () => {
    expect(refusal({ rope_type: 'yarn', factor: 4 })).toMatch(/rope_scaling\.rope_type "yarn" is not supported/);
    expect(refusal({ type: 'dynamic', factor: 4 })).toMatch(/rope_scaling\.type "dynamic" is not supported/);
    expect(refusal({ rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4 })).toContain('rope_scaling.original_max_position_embeddings');
    expect(refusal({ rope_type: 'linear' })).toContain('rope_scaling.factor');
  });
});
