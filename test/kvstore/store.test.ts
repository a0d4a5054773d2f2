import { Redis } from 'ioredis';
import { KVStore, RedisBackend, encodeBlock } from '../../shared/kvstore';
import type { KVStoreOptions } from '../../shared/kvstore';
import type { KVBlock } from '../../shared/engine/kv';
import { MODEL, REDIS_URL, SHAPE, expectSameBlock, makeBlock, tempDir, testPrefix } from './helpers';

const prefix = testPrefix('store');
const redis = new Redis(REDIS_URL);
const dirs: ReturnType<typeof tempDir>[] = [];
const stores: KVStore[] = [];

function dir(): string {
  const t = tempDir('store');
  dirs.push(t);
  return t.dir;
}

async function open(extra: Partial<KVStoreOptions> = {}): Promise<KVStore> {
  const s = await KVStore.open({
    modelId: MODEL,
    shape: SHAPE,
    memory: { budgetBytes: 8 << 20 },
    disk: { dir: dir(), budgetBytes: 8 << 20 },
    redis: { url: REDIS_URL, prefix },
    ...extra,
  });
  stores.push(s);
  return s;
}

function counter(seed: number): { compile: () => Promise<KVBlock>; calls: () => number } {
  let n = 0;
  return {
    compile: async () => {
      n++;
      await new Promise((r) => setTimeout(r, 30));
      return makeBlock(seed);
    },
    calls: () => n,
  };
}

afterAll(async () => {
  for (const s of stores) await s.close();
  const cleaner = new RedisBackend({ client: redis, prefix }, { modelId: MODEL });
  await cleaner.deleteAll();
  expect(await redis.keys(`${prefix}*`)).toEqual([]);
  redis.disconnect();
  for (const d of dirs) d.cleanup();
});

describe('KVStore', () => {
  it('compiles once per process under concurrency (single flight)', async () => {
    const s = await open();
    const c = counter(1);
    const results = await Promise.all(Array.from({ length: 20 }, () => s.lookupOrCompute('sf', c.compile)));
    expect(c.calls()).toBe(1);
    expect(results.filter((r) => r.source === 'compiled')).toHaveLength(1);
    expect(results.filter((r) => r.source === 'joined')).toHaveLength(19);
    for (const r of results) expect(r.block).toBe(results[0].block);
    const st = s.stats();
    expect(st).toMatchObject({ computes: 1, singleFlightJoins: 19, misses: 1 });
    // written to every tier
    await s.flush();
    expect(st.tiers.memory!.entries).toBe(1);
    expect(s.stats().tiers.disk!.entries).toBe(1);
    expect(await s.tier('redis')!.has('sf')).toBe(true);
    // later calls hit memory, the same object
    const again = await s.lookupOrCompute('sf', c.compile);
    expect(again).toMatchObject({ source: 'memory' });
    expect(again.block).toBe(results[0].block);
  });

  it('promotes hits into faster tiers: redis → disk + memory, disk → memory', async () => {
    const writer = await open();
    const b = makeBlock(2);
    await writer.put('promo', b);

    const diskDir = dir();
    const reader = await open({ disk: { dir: diskDir, budgetBytes: 8 << 20 } });
    const first = await reader.lookupOrCompute('promo', () => Promise.reject(new Error('must not compile')));
    expect(first.source).toBe('redis');
    expectSameBlock(b, first.block);
    await reader.flush();
    const second = await reader.lookupOrCompute('promo', () => Promise.reject(new Error('must not compile')));
    expect(second.source).toBe('memory');
    expect(second.block).toBe(first.block);
    const st = reader.stats();
    expect(st.tiers.redis).toMatchObject({ hits: 1 });
    expect(st.tiers.disk).toMatchObject({ misses: 1, puts: 1, entries: 1 });
    expect(st.tiers.memory).toMatchObject({ misses: 1, hits: 1, puts: 1 });
    expect(st.promotions).toBe(1);

    // a fresh process on that disk directory, memory empty, no Redis: disk hit, then memory
    const local = await open({ disk: { dir: diskDir, budgetBytes: 8 << 20 }, redis: false });
    expect((await local.lookupOrCompute('promo', () => Promise.reject(new Error('no'))))).toMatchObject({ source: 'disk' });
    expect((await local.lookupOrCompute('promo', () => Promise.reject(new Error('no'))))).toMatchObject({ source: 'memory' });
  });

  it('honours the read and write tier sets', async () => {
    const s = await open({ writeTiers: ['memory', 'redis'] });
    await s.put('w', makeBlock(3));
    await s.flush();
    expect(s.stats().tiers.disk!.entries).toBe(0);
    expect(await s.tier('redis')!.has('w')).toBe(true);

    const memOnly = await open({ readTiers: ['memory'] });
    expect(await memOnly.get('w')).toBeUndefined();
    expect(await memOnly.has('w')).toBeUndefined();
    expect(memOnly.stats().tiers.redis!.hits + memOnly.stats().tiers.redis!.misses).toBe(0);

    await expect(open({ redis: false, readTiers: ['redis'] })).rejects.toThrow(/not configured/);
  });

  it('catches a bit flip and a truncation in Redis: deleted, counted, recomputed, never served', async () => {
    const writer = await open({ memory: false, disk: false });
    const good = makeBlock(4);
    await writer.put('rflip', good);
    await writer.put('rtrunc', good);
    const r = writer.tier('redis')!;
    const raw = (await redis.getBuffer(r.blobKey('rflip')))!;
    const flipped = Buffer.from(raw);
    flipped[flipped.length - 77] ^= 0x80;
    await redis.set(r.blobKey('rflip'), flipped);
    await redis.set(r.blobKey('rtrunc'), raw.subarray(0, raw.length - 4096));

    const s = await open({ memory: false, disk: false });
    expect(await s.get('rflip')).toBeUndefined();
    expect(await redis.exists(r.blobKey('rflip'))).toBe(0);
    const c = counter(4);
    expectSameBlock(good, await s.getOrCompute('rtrunc', c.compile));
    expect(c.calls()).toBe(1);
    expect(s.stats()).toMatchObject({ corrupt: 2, computes: 1 });
    expect(s.stats().tiers.redis).toMatchObject({ corrupt: 2, hits: 0 });
    // the recomputed blob replaced the truncated one
    const fresh = await open({ memory: false, disk: false });
    expect((await fresh.lookupOrCompute('rtrunc', c.compile)).source).toBe('redis');
    expect(c.calls()).toBe(1);
  });

  it('catches a bit flip and a truncation in the disk tier and recomputes', async () => {
    const diskDir = dir();
    const s1 = await open({ disk: { dir: diskDir, budgetBytes: 8 << 20 }, redis: false });
    await s1.put('dflip', makeBlock(5));
    await s1.put('dtrunc', makeBlock(6));
    const d = s1.tier('disk')!;
    const { readFileSync, writeFileSync, truncateSync } = await import('node:fs');
    const bytes = readFileSync(d.pathFor('dflip'));
    bytes[300] ^= 1;
    writeFileSync(d.pathFor('dflip'), bytes);
    truncateSync(d.pathFor('dtrunc'), 100);

    const s2 = await open({ disk: { dir: diskDir, budgetBytes: 8 << 20 }, redis: false });
    const c5 = counter(5);
    const c6 = counter(6);
    expectSameBlock(makeBlock(5), await s2.getOrCompute('dflip', c5.compile));
    expectSameBlock(makeBlock(6), await s2.getOrCompute('dtrunc', c6.compile));
    expect(c5.calls() + c6.calls()).toBe(2);
    expect(s2.stats()).toMatchObject({ corrupt: 2, computes: 2 });
    // rewritten intact
    const s3 = await open({ disk: { dir: diskDir, budgetBytes: 8 << 20 }, redis: false });
    expect((await s3.lookupOrCompute('dflip', c5.compile)).source).toBe('disk');
  });

  it('falls through a corrupt disk copy to an intact Redis copy, and repairs the disk', async () => {
    const diskDir = dir();
    const s1 = await open({ disk: { dir: diskDir, budgetBytes: 8 << 20 } });
    await s1.put('mixed', makeBlock(7));
    const file = s1.tier('disk')!.pathFor('mixed');
    const { truncateSync } = await import('node:fs');
    truncateSync(file, 50);
    const s2 = await open({ disk: { dir: diskDir, budgetBytes: 8 << 20 } });
    const r = await s2.lookupOrCompute('mixed', () => Promise.reject(new Error('no compile')));
    expect(r.source).toBe('redis');
    await s2.flush();
    expect(s2.stats().tiers.disk).toMatchObject({ corrupt: 1, puts: 1 });
  });

  it('refuses a Redis blob written for another model id, and one of another format version', async () => {
    const s = await open({ memory: false, disk: false });
    const r = s.tier('redis')!;
    await redis.set(r.blobKey('foreign'), encodeBlock(makeBlock(8), 'someone-elses-model'));
    const v9 = encodeBlock(makeBlock(8), MODEL);
    v9.writeUInt16LE(9, 4);
    await redis.set(r.blobKey('future'), v9);
    const c = counter(8);
    expectSameBlock(makeBlock(8), await s.getOrCompute('foreign', c.compile));
    expectSameBlock(makeBlock(8), await s.getOrCompute('future', c.compile));
    expect(c.calls()).toBe(2);
    expect(s.stats()).toMatchObject({ incompatible: 2, corrupt: 0 });
  });

  it('rejects a compiled block of the wrong shape, and shares compile errors without caching them', async () => {
    const s = await open({ redis: false });
    await expect(s.getOrCompute('bad', async () => makeBlock(1, 8, { layers: 1, kvHeads: 4, headDim: 32 }))).rejects.toThrow(/shape/);
    let n = 0;
    const fail = async () => {
      n++;
      await new Promise((r) => setTimeout(r, 10));
      throw new Error('boom');
    };
    const all = await Promise.allSettled([s.getOrCompute('err', fail), s.getOrCompute('err', fail)]);
    expect(all.map((x) => x.status)).toEqual(['rejected', 'rejected']);
    expect(n).toBe(1);
    expectSameBlock(makeBlock(9), await s.getOrCompute('err', async () => makeBlock(9)));
    expect(s.stats().computeErrors).toBe(2);
  });

  it('keeps serving when Redis is unreachable', async () => {
    const s = await open({ redis: { url: 'redis://127.0.0.1:1', prefix, commandTimeoutMs: 500 } });
    const c = counter(10);
    expectSameBlock(makeBlock(10), await s.getOrCompute('down', c.compile));
    expect(c.calls()).toBe(1);
    expect(s.stats().writeErrors).toBeGreaterThanOrEqual(1);
    expect((await s.lookupOrCompute('down', c.compile)).source).toBe('memory');
  });

  it('applies a TTL to Redis entries when configured', async () => {
    const s = await open({ memory: false, disk: false, redis: { url: REDIS_URL, prefix, ttlMs: 60_000 } });
    await s.put('ttl', makeBlock(11));
    const pttl = await redis.pttl(s.tier('redis')!.blobKey('ttl'));
    expect(pttl).toBeGreaterThan(50_000);
    expect(pttl).toBeLessThanOrEqual(60_000);
  });
});
