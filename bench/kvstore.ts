/**
 * KV store benchmark: `npm run bench:kvstore [-- options]`.
 *
 * Per tier (memory, local disk, Redis), each through a KVStore that has only that tier: write and read MB/s for
 * standard-workload chunks (256 tokens), and the time to fetch one request's 8 chunks. Against the time to compile
 * those 8 chunks when an engine can be loaded (shared/engine `loadEngine`), at that model's KV shape.
 *
 * Options:
 *   --tokens N          tokens per chunk (256)
 *   --chunks N          distinct chunks in the working set (64)
 *   --layers/--kv-heads/--head-dim   KV shape (default: models/epic-qa/config.json, else 2 × 4 × 32)
 *   --model-dir DIR     model for the shape and the compile comparison (default models/epic-qa)
 *   --compile-model-dir DIR   model used for the compile comparison when --model-dir has none
 *                       (default: models/tiny-random if present)
 *   --tiers LIST        comma-separated subset of memory,disk,redis (all)
 *   --redis-url URL     KV Redis (env KV_REDIS_URL, default redis://127.0.0.1:6379)
 *   --out FILE          (bench/results/kvstore.json)
 *
 * MB = 10^6 bytes of KV payload (keys + values; tokens, positions and headers not counted). The disk tier reads from a
 * warm page cache (files just written); dropping caches needs root. Redis runs on loopback.
 */
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import type { KVBlock, KVShape } from '../shared/engine/kv';
import { allocBlock, kvBytes } from '../shared/engine/kv';
import { KVStore, RedisBackend, TIERS, blobBytes, chunkKey } from '../shared/kvstore';
import type { KVStoreOptions, TierName } from '../shared/kvstore';

const ROOT = path.resolve(__dirname, '..');
const DEFAULT_SHAPE: KVShape = { layers: 2, kvHeads: 4, headDim: 32 };
const FETCH_CHUNKS = 8;
const READ_PASSES = 9;

/** Compiles one chunk's tokens alone (positions 0..L-1). */
export type CompileChunk = (tokens: Int32Array) => Promise<KVBlock>;

export interface BenchOptions {
  shape: KVShape;
  tokens: number;
  chunks: number;
  redisUrl: string;
  modelId: string;
  /** Tiers to measure (default all three). */
  tiers?: TierName[];
  /** Optional compile, for the fetch-vs-compile ratio (must produce blocks of `shape`). */
  compile?: CompileChunk;
  compileLabel?: string;
}

export interface FetchTiming {
  medianMs: number;
  p90Ms: number;
}

/** Throughput over several timed passes: the median pass and the best pass (the machine is shared and noisy). */
export interface Rate {
  median: number;
  best: number;
}

export interface TierResult {
  writeMBps: Rate;
  readMBps: Rate;
  /** Reads with 8 requests in flight (one request's chunks at once). */
  readConcurrentMBps: Rate;
  fetch8: FetchTiming;
  /** Fraction of reads decoded as views on the read buffer (no copy). */
  zeroCopyFraction?: number;
}

export interface ShapeResult {
  shape: KVShape;
  tokensPerChunk: number;
  chunkPayloadBytes: number;
  chunkBlobBytes: number;
  tiers: Partial<Record<TierName, TierResult>>;
  compile?: { label: string; compile8: FetchTiming; fetchSpeedup: Partial<Record<TierName, number>> };
}

function flag(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

function readShape(dir: string): KVShape | undefined {
  const file = path.join(dir, 'config.json');
  if (!existsSync(file)) return undefined;
  const c = JSON.parse(readFileSync(file, 'utf8'));
  const heads = c.num_attention_heads;
  return {
    layers: c.num_hidden_layers,
    kvHeads: c.num_key_value_heads ?? heads,
    headDim: c.head_dim ?? c.hidden_size / heads,
  };
}

function makeChunk(shape: KVShape, length: number, seed: number): KVBlock {
  const b = allocBlock(shape, length);
  let x = seed * 2654435761 + 1;
  for (let i = 0; i < length; i++) {
    b.tokens[i] = (x = (x * 1103515245 + 12345) % 2147483648) % 32000;
    b.positions[i] = i;
  }
  for (let l = 0; l < shape.layers; l++) {
    for (let i = 0; i < b.keys[l].length; i++) {
      b.keys[l][i] = Math.sin(i * 0.37 + seed + l);
      b.values[l][i] = Math.cos(i * 0.11 + seed - l);
    }
  }
  return b;
}

const now = () => Number(process.hrtime.bigint()) / 1e6;

function quantile(xs: number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))];
}

function timing(xs: number[]): FetchTiming {
  return { medianMs: round(quantile(xs, 0.5), 4), p90Ms: round(quantile(xs, 0.9), 4) };
}

function rate(xs: number[]): Rate {
  return { median: round(quantile(xs, 0.5)), best: round(Math.max(...xs)) };
}

function round(x: number, d = 1): number {
  const f = 10 ** d;
  return Math.round(x * f) / f;
}

async function benchTier(tier: TierName, o: BenchOptions, blocks: KVBlock[], keys: string[], work: { dir: string; prefix: string }): Promise<TierResult> {
  const cfg: KVStoreOptions = { modelId: o.modelId, shape: o.shape, lease: false };
  const total = blocks.length * kvBytes(blocks[0]);
  if (tier === 'memory') cfg.memory = { budgetBytes: total * 2 + (64 << 20) };
  if (tier === 'disk') cfg.disk = { dir: path.join(work.dir, `disk-${o.shape.layers}x${o.shape.kvHeads}x${o.shape.headDim}`), budgetBytes: total * 2 + (64 << 20) };
  if (tier === 'redis') cfg.redis = { url: o.redisUrl, prefix: work.prefix };
  const store = await KVStore.open(cfg);
  try {
    // write: every chunk once per pass, fresh keys per pass (no "already stored" shortcut)
    const writeMBps: number[] = [];
    for (let pass = 0; pass < 5; pass++) {
      const pk = keys.map((k) => `${k.slice(0, 40)}w${pass}`);
      const t0 = now();
      for (let i = 0; i < blocks.length; i++) await store.put(pk[i], blocks[i]);
      writeMBps.push(total / 1e6 / ((now() - t0) / 1e3));
      await Promise.all(pk.map((k) => store.delete(k)));
    }
    for (let i = 0; i < blocks.length; i++) await store.put(keys[i], blocks[i]);
    await store.flush();

    // warm-up (JIT, connection, page cache), then timed passes over the working set
    for (let pass = 0; pass < 3; pass++) for (const k of keys) await store.get(k);
    const readMBps: number[] = [];
    for (let pass = 0; pass < READ_PASSES; pass++) {
      const t0 = now();
      for (const k of keys) if (!(await store.get(k))) throw new Error(`${tier}: miss during read bench`);
      readMBps.push(total / 1e6 / ((now() - t0) / 1e3));
    }
    // one request's chunks at a time, 8 in flight
    const groups: string[][] = [];
    for (let i = 0; i + FETCH_CHUNKS <= keys.length; i += FETCH_CHUNKS) groups.push(keys.slice(i, i + FETCH_CHUNKS));
    const concMBps: number[] = [];
    for (let pass = 0; pass < READ_PASSES; pass++) {
      const t0 = now();
      for (const g of groups) for (const b of await store.getMany(g)) if (!b) throw new Error(`${tier}: miss`);
      concMBps.push((groups.length * FETCH_CHUNKS * kvBytes(blocks[0])) / 1e6 / ((now() - t0) / 1e3));
    }
    // one request's 8 chunks, many times
    const samples: number[] = [];
    for (let r = 0; r < 300; r++) {
      const g = groups[r % groups.length];
      const t0 = now();
      const got = await store.getMany(g);
      samples.push(now() - t0);
      if (got.some((b) => !b)) throw new Error(`${tier}: miss`);
    }
    const res: TierResult = {
      writeMBps: rate(writeMBps),
      readMBps: rate(readMBps),
      readConcurrentMBps: rate(concMBps),
      fetch8: timing(samples),
    };
    if (tier === 'redis' || tier === 'disk') {
      const backend = store.tier(tier)!;
      let views = 0;
      for (const k of keys) {
        const got = (await backend.get(k))!;
        if (got.block.keys[0].buffer === got.blob!.buffer) views++;
      }
      res.zeroCopyFraction = round(views / keys.length, 3);
    }
    return res;
  } finally {
    if (tier === 'redis') await (store.tier('redis') as RedisBackend).deleteAll();
    await store.close();
  }
}

export async function benchShape(o: BenchOptions): Promise<ShapeResult> {
  const blocks = Array.from({ length: o.chunks }, (_, i) => makeChunk(o.shape, o.tokens, i + 1));
  const keys = blocks.map((b) => chunkKey({ modelId: o.modelId, tokens: b.tokens, variant: `bench-${randomBytes(4).toString('hex')}` }));
  const work = { dir: mkdtempSync(path.join(tmpdir(), 'epic-kvbench-')), prefix: `epic-bench:kv:${process.pid}` };
  const tiers: Partial<Record<TierName, TierResult>> = {};
  try {
    for (const t of o.tiers ?? TIERS) tiers[t] = await benchTier(t, o, blocks, keys, work);
  } finally {
    rmSync(work.dir, { recursive: true, force: true });
  }
  const out: ShapeResult = {
    shape: o.shape,
    tokensPerChunk: o.tokens,
    chunkPayloadBytes: kvBytes(blocks[0]),
    chunkBlobBytes: blobBytes(o.modelId, o.shape, o.tokens),
    tiers,
  };
  if (o.compile) {
    const compile = o.compile;
    const samples: number[] = [];
    for (let r = 0; r < 12; r++) {
      const g = blocks.slice((r * FETCH_CHUNKS) % (blocks.length - FETCH_CHUNKS + 1)).slice(0, FETCH_CHUNKS);
      const t0 = now();
      for (const b of g) await compile(b.tokens);
      if (r >= 2) samples.push(now() - t0); // first two warm up
    }
    const compile8 = timing(samples);
    const fetchSpeedup: Partial<Record<TierName, number>> = {};
    for (const t of Object.keys(tiers) as TierName[]) fetchSpeedup[t] = round(compile8.medianMs / tiers[t]!.fetch8.medianMs, 1);
    out.compile = { label: o.compileLabel ?? 'compile', compile8, fetchSpeedup };
  }
  return out;
}

interface LoadedEngine {
  id: string;
  shape: KVShape;
  config?: { vocabSize?: number };
  compile(tokens: ArrayLike<number>, start?: number): Promise<KVBlock>;
}

/** The engine's compile, with the bench's synthetic token ids folded into the model's vocabulary. */
function engineCompile(e: LoadedEngine): CompileChunk {
  const vocab = e.config?.vocabSize ?? 200;
  return (t) => e.compile(Array.from(t, (x) => 5 + (x % Math.max(1, vocab - 5))));
}

/** Loads shared/engine's engine for `dir` if the engine module and the model are there; else a reason. */
async function tryLoadEngine(dir: string): Promise<LoadedEngine | string> {
  if (!existsSync(path.join(ROOT, 'shared/engine/index.ts'))) return 'shared/engine/index.ts does not exist';
  if (!existsSync(path.join(dir, 'config.json'))) return `no model at ${path.relative(ROOT, dir)}`;
  try {
    const mod: Record<string, unknown> = await import('../shared/engine');
    if (typeof mod.loadEngine !== 'function') return 'shared/engine exports no loadEngine';
    const engine = (await (mod.loadEngine as (d: string) => Promise<unknown>)(dir)) as Partial<LoadedEngine>;
    if (typeof engine.compile !== 'function' || !engine.shape) return 'loaded engine has no compile(tokens) / shape';
    return engine as LoadedEngine;
  } catch (e) {
    return `loadEngine(${path.relative(ROOT, dir)}) failed: ${(e as Error).message.split('\n')[0]}`;
  }
}

function printTable(title: string, r: ShapeResult): void {
  const s = r.shape;
  console.log(`\n${title}: chunk = ${r.tokensPerChunk} tokens, ${s.layers} layers × ${s.kvHeads} kv heads × ${s.headDim} head dim, fp32 — ` +
    `${(r.chunkPayloadBytes / 1024).toFixed(0)} KiB KV (${r.chunkBlobBytes} B blob)`);
  const head = ['tier', 'write MB/s', 'read MB/s', 'read MB/s (8 in flight)', 'fetch 8 chunks: median ms', 'p90 ms', 'zero-copy'];
  const fmt = (x: Rate) => `${x.median.toFixed(0)} (${x.best.toFixed(0)})`;
  if (r.compile) head.push('compile 8 ÷ fetch 8');
  const rows = (Object.keys(r.tiers) as TierName[]).map((t) => {
    const x = r.tiers[t]!;
    const row = [t, fmt(x.writeMBps), fmt(x.readMBps), fmt(x.readConcurrentMBps), x.fetch8.medianMs.toFixed(3), x.fetch8.p90Ms.toFixed(3),
      x.zeroCopyFraction === undefined ? 'same object' : `${(x.zeroCopyFraction * 100).toFixed(0)}% views`];
    if (r.compile) row.push(`${r.compile.fetchSpeedup[t]}×`);
    return row;
  });
  const w = head.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i].length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === 0 ? c.padEnd(w[i]) : c.padStart(w[i]))).join('  ');
  console.log(line(head));
  for (const row of rows) console.log(line(row));
  console.log('MB/s: median pass (best pass)');
  if (r.compile) console.log(`compile 8 chunks (${r.compile.label}): median ${r.compile.compile8.medianMs.toFixed(2)} ms, p90 ${r.compile.compile8.p90Ms.toFixed(2)} ms`);
}

async function main() {
  const modelDir = path.resolve(ROOT, flag('model-dir') ?? 'models/epic-qa');
  const flagShape = flag('layers') || flag('kv-heads') || flag('head-dim');
  const modelShape = readShape(modelDir);
  const shape: KVShape = flagShape
    ? { layers: Number(flag('layers') ?? DEFAULT_SHAPE.layers), kvHeads: Number(flag('kv-heads') ?? DEFAULT_SHAPE.kvHeads), headDim: Number(flag('head-dim') ?? DEFAULT_SHAPE.headDim) }
    : modelShape ?? DEFAULT_SHAPE;
  const shapeSource = flagShape ? 'flags' : modelShape ? path.relative(ROOT, modelDir) + '/config.json' : 'default (no models/epic-qa yet)';
  const tokens = Number(flag('tokens') ?? 256);
  const chunks = Math.max(FETCH_CHUNKS, Number(flag('chunks') ?? 64));
  const redisUrl = flag('redis-url') ?? process.env.KV_REDIS_URL ?? 'redis://127.0.0.1:6379';
  const out = path.resolve(ROOT, flag('out') ?? 'bench/results/kvstore.json');
  const tierList = flag('tiers')?.split(',').map((t) => t.trim()) as TierName[] | undefined;
  for (const t of tierList ?? []) if (!TIERS.includes(t)) throw new Error(`--tiers: unknown tier ${t}`);

  // The compile comparison: the standard model's engine if it loads; else a fallback model at its own shape.
  const notes: string[] = [];
  let main: ShapeResult;
  let comparison: ShapeResult | undefined;
  const std = flagShape ? 'shape given by flags' : await tryLoadEngine(modelDir);
  if (typeof std !== 'string' && sameShape(std.shape, shape)) {
    main = await benchShape({ shape, tokens, chunks, redisUrl, tiers: tierList, modelId: std.id, compile: engineCompile(std), compileLabel: `engine ${std.id}` });
  } else {
    if (typeof std === 'string') notes.push(`no compile at the standard shape: ${std}`);
    main = await benchShape({ shape, tokens, chunks, redisUrl, tiers: tierList, modelId: 'bench-model' });
    const fbDir = path.resolve(ROOT, flag('compile-model-dir') ?? 'models/tiny-random');
    const fb = await tryLoadEngine(fbDir);
    if (typeof fb === 'string') notes.push(`no compile comparison: ${fb}`);
    else {
      notes.push(`compile comparison uses ${path.relative(ROOT, fbDir)} (${fb.id}) at its own KV shape; the standard model was not loadable`);
      comparison = await benchShape({ shape: fb.shape, tokens, chunks, redisUrl, tiers: tierList, modelId: fb.id, compile: engineCompile(fb), compileLabel: `engine ${fb.id}` });
    }
  }

  printTable(`standard chunks (shape from ${shapeSource})`, main);
  if (comparison) printTable(`fetch vs compile (${comparison.compile!.label})`, comparison);
  const target = (value: Rate | undefined, min: number) =>
    value ? { target: min, median: value.median, best: value.best, passMedian: value.median >= min, passBest: value.best >= min } : null;
  const targets = {
    memoryReadMBps: target(main.tiers.memory?.readMBps, 2000),
    redisReadMBps: target(main.tiers.redis?.readMBps, 300),
  };
  const verdict = (t: ReturnType<typeof target>) =>
    t ? `median ${t.passMedian ? 'PASS' : 'FAIL'}, best ${t.passBest ? 'PASS' : 'FAIL'}` : 'not measured';
  console.log(`\ntargets (sequential reads): memory ≥ 2000 MB/s: ${verdict(targets.memoryReadMBps)}; Redis ≥ 300 MB/s: ${verdict(targets.redisReadMBps)}`);
  console.log(`load average during the run: ${loadavg().map((x) => x.toFixed(2)).join(' ')} on ${cpus().length} cores (shared machine)`);
  for (const n of notes) console.log(`note: ${n}`);

  const result = {
    date: new Date().toISOString(),
    machine: { cpus: cpus().length, cpu: cpus()[0]?.model, node: process.version, loadavgAtEnd: loadavg() },
    units: 'MB = 1e6 bytes of KV payload (keys + values); MB/s as {median pass, best pass}; fetch times in ms; disk reads from a warm page cache; Redis on loopback',
    shapeSource,
    redisUrl: redisUrl.replace(/\/\/[^@]*@/, '//***@'),
    standard: main,
    compileComparison: comparison ?? null,
    targets,
    notes,
  };
  mkdirSync(path.dirname(out), { recursive: true });
  writeFileSync(out, JSON.stringify(result, null, 2) + '\n');
  console.log(`wrote ${path.relative(ROOT, out)}`);
}

function sameShape(a: KVShape, b: KVShape): boolean {
  return a.layers === b.layers && a.kvHeads === b.kvHeads && a.headDim === b.headDim;
}

if (require.main === module) {
  main().then(
    () => process.exit(0),
    (e) => {
      console.error(e);
      process.exit(1);
    },
  );
}
