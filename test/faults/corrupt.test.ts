/**
 * Damaged KV blobs through a served request: a document's chunk blobs are bit-flipped or truncated on the worker's disk
 * and in the KV Redis; the next request still gets the right answer, the damage is counted per tier, the chunks are
 * recomputed and stored again intact. Real processes (API, inference worker), a private redis-server.
 */
import { readFileSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type IORedis from 'ioredis';
import { CatalogKeys, DocumentStore } from '../../shared/catalog';
import { DiskBackend } from '../../shared/kvstore';
import { workload } from '../helpers/workload';
import { httpJson, metricSum, ProcStack, RedisServer, scrape, TINY } from './procs';

describe('corrupt KV blobs in the disk and Redis tiers', () => {
  let redis: RedisServer;
  let s: ProcStack | undefined;
  let client: IORedis;
  beforeAll(async () => {
    redis = await RedisServer.start();
    client = redis.client();
  });
  afterAll(async () => {
    await s?.close();
    client?.disconnect();
    await redis?.stop();
  });

  test('bit flips and truncations are detected, never served, and recomputed', async () => {
    // No memory tier: every request reads its chunks from disk, then Redis.
    s = await ProcStack.start({ redis, services: [], env: { KV_MEMORY_BYTES: '0' } });
    await Promise.all([s.add('api'), s.add('worker')]);
    const worker = s.of('worker')[0];
    const w = workload(TINY, 4);
    const ids = w.documents.map((_, i) => `doc-corrupt-${i}`);
    for (const [i, text] of w.documents.entries()) expect((await httpJson(s.base, 'POST', '/v1/documents', { text, id: ids[i] })).status).toBe(201);
    const ask = async () => {
      const r = await httpJson(s!.base, 'POST', '/v1/completions', { documents: ids, prompt: w.questions[0], max_tokens: 12, mode: 'attnlink' });
      expect(r.status).toBe(200);
      return r.body;
    };
    const first = await ask(); // compiles the chunks, writes them to disk and Redis
    const docs = await new DocumentStore(client, new CatalogKeys(s!.env.CATALOG_PREFIX)).getMany('default', ids);
    const keys = [...new Set(docs.flatMap((d) => d!.chunks.map((c) => c.key)))];
    expect(keys.length).toBeGreaterThanOrEqual(4);
    const model = 'tiny-random';
    const disk = await DiskBackend.open({ dir: join(s.diskDir, model), budgetBytes: 2 ** 30 }, { modelId: model });
    const file = (k: string) => disk.pathFor(k);
    const redisKey = (k: string) => `${s!.env.KV_REDIS_PREFIX}:${model}:{${k}}`;
    const warm = async () => {
      for (const k of keys) {
        expect((await disk.get(k))?.block).toBeDefined();
        expect(await client.strlen(redisKey(k))).toBeGreaterThan(0);
      }
    };
    await warm();

    // Damage every chunk in both tiers: alternate a flipped bit in the payload and a truncation.
    keys.forEach((k, i) => {
      const f = file(k);
      const b = readFileSync(f);
      if (i % 2 === 0) {
        b[Math.floor(b.length * 0.7)] ^= 0x10;
        writeFileSync(f, b);
      } else truncateSync(f, Math.floor(b.length / 2));
    });
    for (const [i, k] of keys.entries()) {
      const blob = (await client.getBuffer(redisKey(k)))!;
      if (i % 2 === 1) {
        blob[Math.floor(blob.length * 0.6)] ^= 0x01;
        await client.set(redisKey(k), blob);
      } else await client.set(redisKey(k), blob.subarray(0, blob.length - 7));
    }

    const before = await scrape(worker.port);
    const second = await ask();
    const after = await scrape(worker.port);
    const third = await ask(); // from the rewritten blobs
    const final = await scrape(worker.port);
    const d = (m: string, a: string, b: string, labels: Record<string, string> = {}) => metricSum(b, m, labels) - metricSum(a, m, labels);
    const figures = {
      chunks: keys.length,
      corruptDisk: d('epic_kv_corrupt_blobs_total', before, after, { tier: 'disk' }),
      corruptRedis: d('epic_kv_corrupt_blobs_total', before, after, { tier: 'redis' }),
      recompiled: d('epic_kv_compiles_total', before, after),
      corruptAfterRepair: d('epic_kv_corrupt_blobs_total', after, final),
      compiledAfterRepair: d('epic_kv_compiles_total', after, final),
    };
    console.log(`corrupt blobs: ${JSON.stringify(figures)}`);
    expect(second.choices[0].text).toBe(first.choices[0].text);
    expect(third.choices[0].text).toBe(first.choices[0].text);
    expect(figures).toEqual({ chunks: keys.length, corruptDisk: keys.length, corruptRedis: keys.length, recompiled: keys.length, corruptAfterRepair: 0, compiledAfterRepair: 0 });
    // The third request was served from the cache again: its chunk tokens count as cached.
    expect(third.usage.prompt_tokens_details.cached_tokens).toBeGreaterThan(0);
    await warm(); // both tiers hold intact blobs again
    await disk.close();
  }, 120_000);
});
