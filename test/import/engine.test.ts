import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Engine } from '../../shared/engine';
import { fixture, readNumpyReference, type FixtureName } from '../helpers/fixtures';
import { expectMatchesReference, maxAbsDiff, range, readReference } from '../helpers/model';

/**
 * Each HF-layout fixture (real architecture and tokenizer, random weights), imported by tools/model/import_hf.py, runs
 * in the engine on both graphs with logits within 1e-4 of an independent NumPy forward pass of the HF architecture
 * (tools/model/hf_numpy.py, read straight from the safetensors) — for BOS + 23 seeded ids and for a text's ids.
 */
const FIXTURES: [FixtureName, string][] = [
  ['llama3-style', 'GQA 4:1, tied, llama3 rope scaling'],
  ['qwen3-style', 'q/k norm, head_dim 32 != hidden/heads, bf16 shards'],
  ['qwen2-style', 'qkv bias, untied head, linear rope scaling, fp16 weights'],
];
const cases = FIXTURES.flatMap(([name, what]) => (['primitive', 'stock'] as const).map((graph) => [name, graph, what] as const));

describe.each(cases)('%s on the %s graph (%s)', (name, graph) => {
  let engine: Engine;
  let dir: string;
  beforeAll(async () => {
    dir = fixture(name);
    engine = await Engine.load(dir, { graph });
  }, 600_000);

  test('prefill logits match the NumPy HF implementation within 1e-4', async () => {
    const ref = readNumpyReference(dir);
    expect(ref.torchMaxAbsDiff).toBeLessThan(1e-4);
    expect(ref.sequences.map((s) => s.name)).toEqual(['random', 'text']);
    for (const seq of ref.sequences) {
      const n = seq.ids.length;
      expect(seq.shape).toEqual([n, engine.config.vocabSize]);
      const cache = engine.newCache(1, n);
      const { logits } = await engine.forward(cache, [{ tokens: seq.ids, positions: range(0, n) }], { logits: 'all' });
      const diff = maxAbsDiff(logits[0], seq.logits);
      // eslint-disable-next-line no-console
      console.log(`${name} ${graph} ${seq.name} (${n} tokens): engine vs NumPy max |diff| ${diff.toExponential(2)}`);
      expect(diff).toBeLessThan(1e-4);
      // not degenerate: the reference's logits spread, so agreement means something
      let lo = Infinity;
      let hi = -Infinity;
      for (const v of seq.logits.subarray(0, engine.config.vocabSize)) {
        lo = Math.min(lo, v);
        hi = Math.max(hi, v);
      }
      expect(hi - lo).toBeGreaterThan(0.5);
    }
  });

  test("logits and post-RoPE KV equal the importer's torch reference within 1e-4", async () => {
    await expectMatchesReference(engine, dir);
  });

  test('a chunk compiled at 0 and re-rotated to P has the keys of the chunk compiled at P (rope scaling included)', async () => {
    const tokens = readNumpyReference(dir).sequences[0].ids.slice(1, 17);
    const at0 = await engine.compile(tokens, 0);
    const report: string[] = [];
    for (const P of [1, 1000, engine.contextLength - tokens.length]) {
      const atP = await engine.compile(tokens, P);
      const moved = engine.rope.shiftBlock(at0, P);
      let diff = 0;
      let size = 0;
      for (let l = 0; l < engine.shape.layers; l++) {
        diff = Math.max(diff, maxAbsDiff(moved.keys[l], atP.keys[l]));
        for (const v of atP.keys[l]) size = Math.max(size, Math.abs(v));
      }
      report.push(`P=${P}: ${diff.toExponential(2)} (largest key ${size.toFixed(2)})`);
      // float32 angles: P * inv_freq rounds to ~1e-7 of P radians, and onnxruntime's float32 cos/sin of a large
      // angle adds its own error, so the bound grows with P; within 1e-5 of the key's size where P <= 1000
      expect(diff).toBeLessThan((P <= 1000 ? 1e-5 : 4e-5) * Math.max(1, size));
    }
    // eslint-disable-next-line no-console
    console.log(`${name} ${graph}: re-rotated vs in-place keys max |diff| ${report.join(', ')}`);
  });

  test("the text's ids are what the engine's tokenizer gives", () => {
    const text = readNumpyReference(dir).sequences.find((s) => s.name === 'text')!;
    const meta = JSON.parse(readFileSync(join(dir, 'numpy_reference.json'), 'utf8')) as { text: string };
    expect(engine.encodePrompt(meta.text)).toEqual(text.ids);
    expect(engine.tokenizer.decode(text.ids.slice(1))).toBe(meta.text);
  });
});
