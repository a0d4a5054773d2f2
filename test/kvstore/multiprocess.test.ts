import { spawn } from 'node:child_process';
import * as path from 'node:path';
import { crc32 } from 'node:zlib';
import { Redis } from 'ioredis';
import { KVStore, RedisBackend } from '../../shared/kvstore';
import { MODEL, REDIS_URL, makeBlock, testPrefix } from './helpers';

const ROOT = path.resolve(__dirname, '../..');
const WORKER = path.join(__dirname, 'fixtures', 'share-worker.ts');
const prefix = testPrefix('mp');
const redis = new Redis(REDIS_URL);

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  lines: string[];
  stderr: string;
  compiling: Promise<void>;
  done: Promise<void>;
}

function runWorker(args: Record<string, unknown>): Run {
  const child = spawn('npx', ['tsx', WORKER, JSON.stringify(args)], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  const run = { code: null, signal: null, lines: [] as string[], stderr: '' } as unknown as Run;
  let out = '';
  let onCompiling: () => void;
  run.compiling = new Promise((r) => (onCompiling = r));
  child.stdout.on('data', (d: Buffer) => {
    out += d.toString();
    run.lines = out.split('\n').filter(Boolean);
    if (run.lines.includes('compiling')) onCompiling();
  });
  child.stderr.on('data', (d: Buffer) => (run.stderr += d.toString()));
  run.done = new Promise((resolve) =>
    child.on('close', (code, signal) => {
      run.code = code;
      run.signal = signal;
      resolve();
    }),
  );
  return run;
}

function result(run: Run): { source: string; crc: number; stats: Record<string, number> } {
  const line = run.lines.find((l) => l.startsWith('{'));
  if (!line) throw new Error(`worker printed no result; code ${run.code} ${run.signal}\n${run.stderr}`);
  return JSON.parse(line);
}

afterAll(async () => {
  await new RedisBackend({ client: redis, prefix }, { modelId: MODEL }).deleteAll();
  const rest = await redis.keys(`${prefix}*`);
  if (rest.length) await redis.del(...rest);
  redis.disconnect();
});

describe('sharing across processes through Redis', () => {
  it('two processes asking for the same chunk at once compile it once', async () => {
    const common = {
      redisUrl: REDIS_URL,
      prefix,
      modelId: MODEL,
      key: 'shared-chunk',
      seed: 42,
      compileMs: 1500,
      barrierKey: `${prefix}:barrier:1`,
      parties: 2,
      countKey: `${prefix}:compiles:1`,
      mode: 'share',
      leaseTtlMs: 10_000,
    };
    const a = runWorker(common);
    const b = runWorker(common);
    await Promise.all([a.done, b.done]);
    const ra = result(a);
    const rb = result(b);
    expect(Number(await redis.get(common.countKey))).toBe(1);
    expect([ra.source, rb.source].sort()).toEqual(['compiled', 'redis']);
    expect(ra.crc).toBe(rb.crc);
    const k = makeBlock(42, 256).keys[0];
    expect(ra.crc).toBe(crc32(Buffer.from(k.buffer, k.byteOffset, k.byteLength)));
    const waiter = ra.source === 'redis' ? ra : rb;
    expect(waiter.stats).toMatchObject({ computes: 0, remoteWaits: 1, remoteHits: 1 });
  });

  it('takes over a chunk whose compiling process died holding the lease', async () => {
    const args = {
      redisUrl: REDIS_URL,
      prefix,
      modelId: MODEL,
      key: 'orphan-chunk',
      seed: 7,
      compileMs: 0,
      barrierKey: `${prefix}:barrier:2`,
      parties: 1,
      countKey: `${prefix}:compiles:2`,
      mode: 'crash',
      leaseTtlMs: 1000,
    };
    const w = runWorker(args);
    await w.compiling; // it holds the lease now, and kills itself 100 ms later

    const store = await KVStore.open({
      modelId: MODEL,
      memory: { budgetBytes: 16 << 20 },
      redis: { url: REDIS_URL, prefix },
      lease: { ttlMs: 1000, waitTimeoutMs: 20_000 },
    });
    const t0 = Date.now();
    const r = await store.lookupOrCompute('orphan-chunk', async () => {
      await redis.incr(args.countKey);
      return makeBlock(7, 256);
    });
    const waitedMs = Date.now() - t0;
    await w.done;
    expect(w.signal ?? w.code).not.toBe(0);
    expect(r.source).toBe('compiled');
    expect(Number(await redis.get(args.countKey))).toBe(2);
    expect(store.stats()).toMatchObject({ computes: 1, remoteWaits: 1, leaseTakeovers: 1, remoteWaitTimeouts: 0 });
    expect(waitedMs).toBeLessThan(5000); // the lease's TTL, not the 20 s wait timeout
    await store.close();
  });
});
