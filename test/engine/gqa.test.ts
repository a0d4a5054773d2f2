import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { halfToNumber } from '../../shared/engine';
import { maxAbsDiff } from '../helpers/model';

/**
 * A graph whose attention is onnxruntime's com.microsoft GroupQueryAttention op (tools/model/gqa_graph.py), as
 * onnxruntime-genai / onnx-community export Llama and Qwen models: rotary inside the op, positions from the past
 * length (seqlens_k = sum(attention_mask) - 1), no position_ids input. Run with onnxruntime-node directly, checked
 * against an independent NumPy forward (test/engine/gqa_fixture.py), and the op's conventions pinned down.
 */
const ROOT = join(__dirname, '..', '..');
const SCRIPT = join(__dirname, 'gqa_fixture.py');
const BUILDER = join(ROOT, 'tools', 'model', 'gqa_graph.py');

interface Variant {
  name: string;
  variant: 'base' | 'llama3-qknorm';
  kv: 'float32' | 'float16';
  tol: number;
}
const VARIANTS: Variant[] = [
  { name: 'base', variant: 'base', kv: 'float32', tol: 1e-4 },
  { name: 'llama3-qknorm', variant: 'llama3-qknorm', kv: 'float32', tol: 1e-4 },
  // the whole attention op in float16 (its CPU kernel has a float16 version); logits within 1e-2 of NumPy's
  { name: 'base-fp16', variant: 'base', kv: 'float16', tol: 1e-2 },
];

/** Builds .cache/gqa-test/<name> when missing or when the builder, the script or the variant changed. */
function fixtureDir(v: Variant): string {
  const dir = join(ROOT, '.cache', 'gqa-test', v.name);
  const stamp = createHash('sha256')
    .update(readFileSync(BUILDER))
    .update(readFileSync(SCRIPT))
    .update(JSON.stringify(v))
    .digest('hex');
  const stampFile = join(dir, 'stamp');
  if (existsSync(stampFile) && readFileSync(stampFile, 'utf8') === stamp) return dir;
  const tmp = `${dir}.tmp-${process.pid}`;
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp, { recursive: true });
  const r = spawnSync('/usr/bin/python3', [SCRIPT, '--out', tmp, '--variant', v.variant, '--kv-dtype', v.kv], {
    encoding: 'utf8',
  });
  if (r.status !== 0) throw new Error(`gqa_fixture.py failed (${r.status}): ${r.stderr}`);
  writeFileSync(join(tmp, 'stamp'), stamp);
  rmSync(dir, { recursive: true, force: true });
  renameSync(tmp, dir);
  return dir;
}

interface Meta {
  input_ids: number[];
  inv_freq: number[];
  layers: number;
  kv_heads: number;
  head_dim: number;
  vocab: number;
  kv_dtype: 'float32' | 'float16';
}

type Outputs = ort.InferenceSession.OnnxValueMapType;

function floats(t: ort.Tensor): Float32Array {
  if (t.type === 'float32') return t.data as Float32Array;
  if (t.type === 'float16') return Float32Array.from(t.data as Uint16Array, halfToNumber);
  throw new Error(`unexpected tensor type ${t.type}`);
}

function argmaxRows(logits: Float32Array, vocab: number): number[] {
  const out: number[] = [];
  for (let r = 0; r < logits.length / vocab; r++) {
    let best = 0;
    for (let i = 1; i < vocab; i++) if (logits[r * vocab + i] > logits[r * vocab + best]) best = i;
    out.push(best);
  }
  return out;
}

class Gqa {
  constructor(
    readonly session: ort.InferenceSession,
    readonly meta: Meta,
    readonly ref: Float32Array,
  ) {}

  static async load(dir: string): Promise<Gqa> {
    const meta = JSON.parse(readFileSync(join(dir, 'reference.json'), 'utf8')) as Meta;
    const buf = readFileSync(join(dir, 'reference.bin'));
    const ref = new Float32Array(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength));
    // severity 4: the op's refusals tested below reach the test as rejections, not as log lines
    return new Gqa(await ort.InferenceSession.create(join(dir, 'model.onnx'), { logSeverityLevel: 4 }), meta, ref);
  }

  get fp16(): boolean {
    return this.meta.kv_dtype === 'float16';
  }

  /** A past of `length` zero slots per row (length 0: the empty past a first prompt gets). */
  zeroPast(batch: number, length: number): Record<string, ort.Tensor> {
    const { layers, kv_heads: kvH, head_dim: D } = this.meta;
    const n = batch * kvH * length * D;
    const past: Record<string, ort.Tensor> = {};
    for (let l = 0; l < layers; l++)
      for (const kind of ['key', 'value'])
        past[`past_key_values.${l}.${kind}`] = this.fp16
          ? new ort.Tensor('float16', new Uint16Array(n), [batch, kvH, length, D])
          : new ort.Tensor('float32', new Float32Array(n), [batch, kvH, length, D]);
    return past;
  }

  /** present.* of a previous run, renamed as the next run's past. */
  pastFrom(out: Outputs): Record<string, ort.Tensor> {
    const past: Record<string, ort.Tensor> = {};
    for (let l = 0; l < this.meta.layers; l++)
      for (const kind of ['key', 'value']) past[`past_key_values.${l}.${kind}`] = out[`present.${l}.${kind}`];
    return past;
  }

  run(rows: number[][], masks: number[][], past?: Record<string, ort.Tensor>): Promise<Outputs> {
    const B = rows.length;
    return this.session.run({
      input_ids: new ort.Tensor('int64', BigInt64Array.from(rows.flat().map(BigInt)), [B, rows[0].length]),
      attention_mask: new ort.Tensor('int64', BigInt64Array.from(masks.flat().map(BigInt)), [B, masks[0].length]),
      ...(past ?? this.zeroPast(B, 0)),
    });
  }

  /** NumPy reference: logits [1,S,V], then per layer key and value [1,kvH,S,D]. */
  refLogits(): Float32Array {
    const n = this.meta.input_ids.length * this.meta.vocab;
    return this.ref.subarray(0, n);
  }

  refKv(layer: number, kind: 'key' | 'value'): Float32Array {
    const { input_ids, vocab, kv_heads, head_dim } = this.meta;
    const n = input_ids.length * kv_heads * head_dim;
    const off = input_ids.length * vocab + (2 * layer + (kind === 'key' ? 0 : 1)) * n;
    return this.ref.subarray(off, off + n);
  }

  /** One slot of present [B, kvH, T, D]: row b, all kv heads, slot t → [kvH * D]. */
  slot(t: ort.Tensor, b: number, pos: number): Float32Array {
    const [, kvH, T, D] = t.dims;
    const data = floats(t);
    const out = new Float32Array(kvH * D);
    for (let h = 0; h < kvH; h++) out.set(data.subarray(((b * kvH + h) * T + pos) * D, ((b * kvH + h) * T + pos + 1) * D), h * D);
    return out;
  }

  /** R(p) applied to a key [kvH * D] in the rotate_half convention (pairs j, j + D/2), float32 angles. */
  rotate(key: Float32Array, p: number, invFreq: number[] = this.meta.inv_freq): Float32Array {
    const D = this.meta.head_dim;
    const half = D / 2;
    const out = new Float32Array(key.length);
    for (let h = 0; h < key.length / D; h++)
      for (let j = 0; j < half; j++) {
        const angle = Math.fround(p * Math.fround(invFreq[j]));
        const c = Math.cos(angle);
        const s = Math.sin(angle);
        const a = key[h * D + j];
        const b = key[h * D + j + half];
        out[h * D + j] = a * c - b * s;
        out[h * D + j + half] = b * c + a * s;
      }
    return out;
  }
}

const ones = (n: number): number[] => Array(n).fill(1);
const zeros = (n: number): number[] => Array(n).fill(0);

describe.each(VARIANTS)('GroupQueryAttention graph, $name', (v) => {
  let m: Gqa;
  let ids: number[];
  let V: number;
  let full: Outputs;
  beforeAll(async () => {
    m = await Gqa.load(fixtureDir(v));
    ids = m.meta.input_ids;
    V = m.meta.vocab;
    full = await m.run([ids], [ones(ids.length)]);
  });

  test('(a) a 12-token prefill from an empty past [1,kvH,0,D] matches the NumPy reference', async () => {
    const { layers, kv_heads: kvH, head_dim: D } = m.meta;
    expect(full.logits.type).toBe('float32');
    expect(full.logits.dims).toEqual([1, 12, V]);
    const logits = floats(full.logits);
    expect(maxAbsDiff(logits, m.refLogits())).toBeLessThan(v.tol);
    expect(argmaxRows(logits, V)).toEqual(argmaxRows(m.refLogits(), V));
    for (let l = 0; l < layers; l++) {
      for (const kind of ['key', 'value'] as const) {
        const present = full[`present.${l}.${kind}`];
        expect(present.type).toBe(v.kv);
        expect(present.dims).toEqual([1, kvH, 12, D]);
        // keys post-RoPE at positions 0..11, as the reference computes them
        expect(maxAbsDiff(floats(present), m.refKv(l, kind))).toBeLessThan(v.kv === 'float16' ? 5e-3 : 1e-4);
      }
    }
  });

  test('(b) prefill 7, then 5 more over the returned present, equals the 12-token prefill', async () => {
    const first = await m.run([ids.slice(0, 7)], [ones(7)]);
    const next = await m.run([ids.slice(7)], [ones(12)], m.pastFrom(first));
    expect(next.logits.dims).toEqual([1, 5, V]);
    expect(maxAbsDiff(floats(next.logits), floats(full.logits).subarray(7 * V))).toBeLessThan(v.tol);
    for (let l = 0; l < m.meta.layers; l++) {
      const before = first[`present.${l}.key`];
      const after = next[`present.${l}.key`];
      expect(after.dims[2]).toBe(12);
      for (let p = 0; p < 7; p++) expect(maxAbsDiff(m.slot(after, 0, p), m.slot(before, 0, p))).toBe(0);
      // and the new keys are the full prefill's
      for (let p = 7; p < 12; p++)
        expect(maxAbsDiff(m.slot(after, 0, p), m.slot(full[`present.${l}.key`], 0, p))).toBeLessThan(v.tol);
    }
    // token by token (decode, S = 1) from the same 7: each step is the full prefill's row
    let out = first;
    for (let p = 7; p < 12; p++) {
      out = await m.run([[ids[p]]], [ones(p + 1)], m.pastFrom(out));
      expect(maxAbsDiff(floats(out.logits), floats(full.logits).subarray(p * V, (p + 1) * V))).toBeLessThan(v.tol);
    }
  });

  test('(c) keys in present are post-RoPE at absolute positions: key at p = R(p) · key at 0 (scaled frequencies)', async () => {
    const tol = v.kv === 'float16' ? 5e-3 : 1e-4;
    // every prompt token alone at position 0: a batch of 12 one-token first prompts
    const atZero = await m.run(
      ids.map((t) => [t]),
      ids.map(() => [1]),
    );
    const key0 = (i: number): Float32Array => m.slot(atZero['present.0.key'], i, 0);
    // layer 0's key depends on the token only, so the 12-token prefill's slot p holds R(p) · key0
    for (let p = 0; p < 12; p++) expect(maxAbsDiff(m.slot(full['present.0.key'], 0, p), m.rotate(key0(p), p))).toBeLessThan(tol);
    // far positions, from a past of P slots (their content does not touch layer 0's key of the new token)
    let worst = 0;
    for (const P of [100, 1000, 2047]) {
      const out = await m.run([[ids[3]]], [ones(P + 1)], m.zeroPast(1, P));
      expect(out['present.0.key'].dims[2]).toBe(P + 1);
      const d = maxAbsDiff(m.slot(out['present.0.key'], 0, P), m.rotate(key0(3), P));
      worst = Math.max(worst, d);
      expect(d).toBeLessThan(tol);
      if (m.meta.inv_freq.length && v.variant === 'llama3-qknorm' && P === 2047) {
        // the op rotates by the llama3-scaled frequencies, not the plain ones
        const D = m.meta.head_dim;
        const plain = Array.from({ length: D / 2 }, (_, j) => 1 / 10000 ** ((2 * j) / D));
        expect(maxAbsDiff(m.slot(out['present.0.key'], 0, P), m.rotate(key0(3), P, plain))).toBeGreaterThan(1e-2);
      }
    }
    expect(worst).toBeLessThan(tol);
  });

  test('(d) a right-padded batch of 2 rows: prefill and one decode step equal each row alone', async () => {
    const rowB = ids.slice(5); // 7 tokens
    const [nextA, nextB] = [33, 44];
    const aloneB = await m.run([rowB], [ones(7)]);
    const decodeA = await m.run([[nextA]], [ones(13)], m.pastFrom(full));
    const decodeB = await m.run([[nextB]], [ones(8)], m.pastFrom(aloneB));
    // right padding: row B's tokens first, pads after; its mask is 7 ones then zeros (only the row sum is read)
    const pre = await m.run([ids, [...rowB, 0, 0, 0, 0, 0]], [ones(12), [...ones(7), ...zeros(5)]]);
    const preLogits = floats(pre.logits);
    expect(maxAbsDiff(preLogits.subarray(0, 12 * V), floats(full.logits))).toBeLessThan(v.tol);
    expect(maxAbsDiff(preLogits.subarray(12 * V, 19 * V), floats(aloneB.logits))).toBeLessThan(v.tol);
    // decode: mask width 13 = past 12 + 1; row B's sum 8 puts its token at slot (and position) 7
    const step = await m.run([[nextA], [nextB]], [ones(13), [...ones(7), ...zeros(5), 1]], m.pastFrom(pre));
    const stepLogits = floats(step.logits);
    expect(maxAbsDiff(stepLogits.subarray(0, V), floats(decodeA.logits))).toBeLessThan(v.tol);
    expect(maxAbsDiff(stepLogits.subarray(V), floats(decodeB.logits))).toBeLessThan(v.tol);
    expect(step['present.0.key'].dims[2]).toBe(13);
    expect(maxAbsDiff(m.slot(step['present.0.key'], 1, 7), m.slot(decodeB['present.0.key'], 0, 7))).toBeLessThan(v.tol);
  });

  test('(d) left padding is not supported by the op: the padded row comes out wrong', async () => {
    const rowB = ids.slice(5);
    const aloneB = await m.run([rowB], [ones(7)]);
    const decodeB = await m.run([[44]], [ones(8)], m.pastFrom(aloneB));
    const pre = await m.run([ids, [0, 0, 0, 0, 0, ...rowB]], [ones(12), [...zeros(5), ...ones(7)]]);
    // the op treats row B's first 7 slots as its tokens (pads included) at positions 0..6
    expect(maxAbsDiff(floats(pre.logits).subarray(17 * V), floats(aloneB.logits))).toBeGreaterThan(1e-2);
    const step = await m.run([[33], [44]], [ones(13), [...zeros(5), ...ones(8)]], m.pastFrom(pre));
    // the decode token lands at slot 7 (overwriting one of row B's tokens), not after them
    expect(maxAbsDiff(floats(step.logits).subarray(V), floats(decodeB.logits))).toBeGreaterThan(1e-2);
  });

  test('attention_mask is only counted: a zero inside it is not a hole, it shortens the row from the right', async () => {
    // decode over the 12-token past with slot 3 "masked": the op reads sum = 12, so it keeps slots 0..10 (slot 3
    // included), writes the new token at slot 11 and rotates it to position 11, exactly as over the first 11 tokens
    const holed = await m.run([[44]], [[...ones(3), 0, ...ones(9)]], m.pastFrom(full));
    const first11 = await m.run([ids.slice(0, 11)], [ones(11)]);
    const over11 = await m.run([[44]], [ones(12)], m.pastFrom(first11));
    expect(maxAbsDiff(floats(holed.logits), floats(over11.logits))).toBeLessThan(v.tol);
    const hidden = await m.run([[44]], [ones(13)], m.pastFrom(full));
    expect(maxAbsDiff(floats(holed.logits), floats(hidden.logits))).toBeGreaterThan(1e-2);
  });

  test('several new tokens over a non-empty past need batch 1', async () => {
    const pre = await m.run([ids.slice(0, 4), ids.slice(4, 8)], [ones(4), ones(4)]);
    await expect(m.run([ids.slice(8, 10), ids.slice(10, 12)], [ones(6), ones(6)], m.pastFrom(pre))).rejects.toThrow(
      /batch_size must be 1 when sequence_length > 1 and past context is given/,
    );
  });

  test('a past longer than the mask: present keeps the past length, the token goes to slot sum-1, later slots are dropped', async () => {
    const past = m.pastFrom(full); // 12 slots
    const out = await m.run([[ids[7]]], [ones(8)], past);
    const key = out['present.0.key'];
    expect(key.dims[2]).toBe(12); // max(mask width, past length)
    // slots 0..6 copied, the token written at slot 7 at position 7: the same keys the prefill had there
    for (let p = 0; p < 8; p++) expect(maxAbsDiff(m.slot(key, 0, p), m.slot(full['present.0.key'], 0, p))).toBeLessThan(v.tol);
    // slots 8..11 are not carried over from the past (only a row's first sum(mask) slots are defined)
    for (let p = 8; p < 12; p++) expect(maxAbsDiff(m.slot(key, 0, p), m.slot(full['present.0.key'], 0, p))).toBeGreaterThan(0);
  });

  test('the context is bounded by cos_cache (max_position_embeddings = 2048 rows)', async () => {
    await expect(m.run([[ids[0]]], [ones(2049)], m.zeroPast(1, 2048))).rejects.toThrow(/cos_cache/);
  });
});
