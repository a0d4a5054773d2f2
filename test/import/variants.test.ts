import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { Engine, halfToNumber } from '../../shared/engine';
import { fixture, readNumpyReference } from '../helpers/fixtures';
import { maxAbsDiff, range } from '../helpers/model';

/**
 * The llama3-style fixture as users' own exports look: stock-only (model.onnx and a config without the epic block),
 * float16 past/present (onnx-community's fp16 variants), and onnxruntime's GroupQueryAttention op (onnxruntime-genai).
 * Same weights as llama3-style, so the same NumPy logits apply. The fp16 and GQA graphs are run with onnxruntime
 * directly, in two calls (a prefill, then the last token over the returned present), as a decoder-with-past is used.
 */

const LAYERS = 2;
const KV_HEADS = 1;
const HEAD_DIM = 16;

/** One decoder-with-past call with Optimum names; position_ids only where the graph takes them. */
async function call(
  session: ort.InferenceSession,
  ids: number[],
  start: number,
  past: Record<string, ort.Tensor> | null,
  kv: 'float32' | 'float16',
): Promise<{ logits: Float32Array; present: Record<string, ort.Tensor> }> {
  const n = ids.length;
  const feeds: Record<string, ort.Tensor> = {
    input_ids: new ort.Tensor('int64', BigInt64Array.from(ids.map(BigInt)), [1, n]),
    attention_mask: new ort.Tensor('int64', new BigInt64Array(start + n).fill(1n), [1, start + n]),
  };
  if (session.inputNames.includes('position_ids')) {
    feeds.position_ids = new ort.Tensor('int64', BigInt64Array.from(range(start, n).map(BigInt)), [1, n]);
  }
  for (let l = 0; l < LAYERS; l++) {
    for (const part of ['key', 'value']) {
      const name = `past_key_values.${l}.${part}`;
      feeds[name] =
        past?.[`present.${l}.${part}`] ??
        (kv === 'float16'
          ? new ort.Tensor('float16', new Uint16Array(0), [1, KV_HEADS, 0, HEAD_DIM])
          : new ort.Tensor('float32', new Float32Array(0), [1, KV_HEADS, 0, HEAD_DIM]));
    }
  }
  const out = await session.run(feeds);
  const present: Record<string, ort.Tensor> = {};
  for (const k of Object.keys(out)) if (k.startsWith('present.')) present[k] = out[k];
  return { logits: out.logits.data as Float32Array, present };
}

test('llama3-style-stock: the engine loads it on the stock graph and matches NumPy within 1e-4', async () => {
  const dir = fixture('llama3-style-stock');
  const cfg = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'));
  expect(cfg.epic).toBeUndefined();
  const engine = await Engine.load(dir);
  const ref = readNumpyReference(dir);
  for (const seq of ref.sequences) {
    const n = seq.ids.length;
    const cache = engine.newCache(1, n);
    const { logits } = await engine.forward(cache, [{ tokens: seq.ids, positions: range(0, n) }], { logits: 'all' });
    const diff = maxAbsDiff(logits[0], seq.logits);
    // eslint-disable-next-line no-console
    console.log(`llama3-style-stock ${seq.name}: engine vs NumPy max |diff| ${diff.toExponential(2)}`);
    expect(diff).toBeLessThan(1e-4);
  }
}, 600_000);

describe.each([
  ['llama3-style-fp16', 'float16', 2e-3], // past KV rounded to float16: measured 5e-4
  ['llama3-style-gqa', 'float32', 1e-4],
] as const)('%s under onnxruntime', (name, kv, tol) => {
  let dir: string;
  let session: ort.InferenceSession;
  beforeAll(async () => {
    dir = fixture(name);
    session = await ort.InferenceSession.create(join(dir, 'model.onnx'));
  }, 600_000);

  test('its I/O is what such exports have', () => {
    const cfg = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'));
    expect(cfg.epic).toBeUndefined();
    expect(session.outputNames).toEqual(expect.arrayContaining(['logits', 'present.0.key', 'present.1.value']));
    if (name === 'llama3-style-fp16') {
      expect(cfg.torch_dtype).toBe('float16');
      expect(session.inputNames).toContain('position_ids');
    } else {
      expect(session.inputNames).not.toContain('position_ids');
      expect(readFileSync(join(dir, 'model.onnx')).includes('GroupQueryAttention')).toBe(true);
    }
  });

  test(`prefill, then the last token over the returned ${kv} present, match NumPy`, async () => {
    const ref = readNumpyReference(dir);
    const V = ref.sequences[0].shape[1];
    for (const seq of ref.sequences) {
      const n = seq.ids.length;
      const full = await call(session, seq.ids, 0, null, kv);
      const dFull = maxAbsDiff(full.logits, seq.logits);
      const head = await call(session, seq.ids.slice(0, n - 1), 0, null, kv);
      const key = head.present['present.0.key'];
      expect(key.type).toBe(kv);
      expect(key.dims).toEqual([1, KV_HEADS, n - 1, HEAD_DIM]);
      const last = await call(session, seq.ids.slice(n - 1), n - 1, head.present, kv);
      const dLast = maxAbsDiff(last.logits, seq.logits.subarray((n - 1) * V));
      // the KV the graph returned is the KV a prefill computes (to float16 rounding where stored as float16)
      const fullKey = full.present['present.0.key'].data as Float32Array | Uint16Array;
      const asF32 = (d: Float32Array | Uint16Array) => (d instanceof Uint16Array ? Float32Array.from(d, halfToNumber) : d);
      const dKey = maxAbsDiff(asF32(fullKey).subarray(0, (n - 1) * HEAD_DIM), asF32(key.data as Float32Array | Uint16Array));
      // eslint-disable-next-line no-console
      console.log(`${name} ${seq.name}: prefill vs NumPy ${dFull.toExponential(2)}, last token over past ${dLast.toExponential(2)}, key ${dKey.toExponential(2)}`);
      expect(dFull).toBeLessThan(tol);
      expect(dLast).toBeLessThan(tol);
      expect(dKey).toBeLessThan(kv === 'float16' ? 1e-3 : 1e-5);
    }
  });
});
