import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import type { KVBlock, KVShape } from '../../shared/engine/kv';
import { allocBlock } from '../../shared/engine/kv';

export const REDIS_URL = process.env.KVSTORE_TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';
export const SHAPE: KVShape = { layers: 2, kvHeads: 4, headDim: 32 };
export const MODEL = 'test-model';

/** A deterministic block: tokens and floats from `seed`. */
export function makeBlock(seed: number, length = 64, shape: KVShape = SHAPE): KVBlock {
  const b = allocBlock(shape, length);
  let x = (seed * 2654435761) >>> 0 || 1;
  const next = () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x;
  };
  for (let i = 0; i < length; i++) {
    b.tokens[i] = next() % 50000;
    b.positions[i] = i;
  }
  for (let l = 0; l < shape.layers; l++) {
    for (let i = 0; i < b.keys[l].length; i++) {
      b.keys[l][i] = (next() / 0xffffffff) * 2 - 1;
      b.values[l][i] = (next() / 0xffffffff) * 2 - 1;
    }
  }
  return b;
}

export function expectSameBlock(a: KVBlock, b: KVBlock): void {
  expect(b.shape).toEqual(a.shape);
  expect(b.length).toBe(a.length);
  expect(Array.from(b.tokens)).toEqual(Array.from(a.tokens));
  expect(Array.from(b.positions)).toEqual(Array.from(a.positions));
  for (let l = 0; l < a.shape.layers; l++) {
    expect(Buffer.from(b.keys[l].buffer, b.keys[l].byteOffset, b.keys[l].byteLength).equals(
      Buffer.from(a.keys[l].buffer, a.keys[l].byteOffset, a.keys[l].byteLength))).toBe(true);
    expect(Buffer.from(b.values[l].buffer, b.values[l].byteOffset, b.values[l].byteLength).equals(
      Buffer.from(a.values[l].buffer, a.values[l].byteOffset, a.values[l].byteLength))).toBe(true);
  }
}

export function tempDir(tag: string): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(path.join(tmpdir(), `epic-kvstore-${tag}-`));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** A Redis key prefix private to this test run. */
export function testPrefix(tag: string): string {
  return `epic-test:kvstore:${tag}:${process.pid}-${randomBytes(4).toString('hex')}`;
}

export function keyOf(i: number): string {
  return `k${i.toString().padStart(4, '0')}`;
}
