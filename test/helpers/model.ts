import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Engine, KVBlock } from '../../shared/engine';
import type { BlockStore } from '../../shared/linking';

export const TINY = join(__dirname, '..', '..', 'models', 'tiny-random');

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} != ${b.length}`);
  let d = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i] - b[i]));
  return d;
}

export interface Reference {
  input_ids: number[];
  logits_shape: number[];
  kv_shape: number[];
  tokenizer_text: string;
  tokenizer_ids: number[];
  logits: Float32Array;
  keys: Float32Array[];
  values: Float32Array[];
}

/** The torch reference written by tools/model/export.py beside a model. */
export function readReference(dir: string, layers: number): Reference {
  const meta = JSON.parse(readFileSync(join(dir, 'reference.json'), 'utf8'));
  const buf = readFileSync(join(dir, 'reference_logits.bin'));
  const all = new Float32Array(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength));
  const nLogits = meta.logits_shape.reduce((a: number, b: number) => a * b, 1);
  const nKv = meta.kv_shape.reduce((a: number, b: number) => a * b, 1);
  const keys: Float32Array[] = [];
  const values: Float32Array[] = [];
  let off = nLogits;
  for (let l = 0; l < layers; l++) {
    keys.push(all.subarray(off, off + nKv));
    values.push(all.subarray(off + nKv, off + 2 * nKv));
    off += 2 * nKv;
  }
  return { ...meta, logits: all.subarray(0, nLogits), keys, values };
}

/** A scratch copy of a model folder, for tests that damage it. */
export function copyModel(dir: string): { dir: string; cleanup: () => void } {
  const tmp = mkdtempSync(join(tmpdir(), 'epic-model-'));
  const dst = join(tmp, 'model');
  cpSync(dir, dst, { recursive: true });
  return { dir: dst, cleanup: () => rmSync(tmp, { recursive: true, force: true }) };
}

export function range(start: number, n: number): number[] {
  return Array.from({ length: n }, (_, i) => start + i);
}

/** Deterministic pseudo-random token ids in [lo, hi). */
export function randomTokens(n: number, seed: number, lo: number, hi: number): number[] {
  let s = seed >>> 0;
  return Array.from({ length: n }, () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return lo + (s % (hi - lo));
  });
}

/** A prefill of the reference's ids from position 0: its logits and post-RoPE KV equal the torch reference within 1e-4. */
export async function expectMatchesReference(engine: Engine, dir: string): Promise<void> {
  const ref = readReference(dir, engine.shape.layers);
  const n = ref.input_ids.length;
  const cache = engine.newCache(1, n);
  const { logits } = await engine.forward(cache, [{ tokens: ref.input_ids, positions: range(0, n) }], { logits: 'all' });
  expect(maxAbsDiff(logits[0], ref.logits)).toBeLessThan(1e-4);
  const block = cache.toBlock(0, 0, n);
  for (let l = 0; l < engine.shape.layers; l++) {
    expect(maxAbsDiff(block.keys[l], ref.keys[l])).toBeLessThan(1e-4);
    expect(maxAbsDiff(block.values[l], ref.values[l])).toBeLessThan(1e-4);
  }
}

/** A copy of a model as a user's Optimum export looks: model.onnx only (no primitive or per-layer graphs), no epic block. */
export function copyStockOnly(dir: string): { dir: string; cleanup: () => void } {
  const m = copyModel(dir);
  rmSync(join(m.dir, 'model_epic.onnx'));
  rmSync(join(m.dir, 'layers'), { recursive: true });
  const cfg = JSON.parse(readFileSync(join(m.dir, 'config.json'), 'utf8'));
  delete cfg.epic;
  writeFileSync(join(m.dir, 'config.json'), JSON.stringify(cfg));
  return m;
}

/** Prefix mode's block store kept in a Map (the tests' own, in place of the worker's LRU). */
export class MapStore implements BlockStore {
  readonly map = new Map<string, KVBlock>();
  async get(k: string) {
    return this.map.get(k);
  }
  async put(k: string, b: KVBlock) {
    this.map.set(k, b);
  }
}
