/**
 * Redis faults with real processes and private redis-servers: the KV cache's Redis flushed and restarted mid-run
 * (answers unchanged, misses recomputed), and the queue's Redis down (503 + Retry-After at once, recovery by itself).
 */
import type IORedis from 'ioredis';
import { BatchStore, CatalogKeys } from '../../shared/catalog';
import { waitFor } from '../helpers/net';
import { workload } from '../helpers/workload';
import { httpJson, metricSum, ProcStack, RedisServer, scrape, TINY } from './procs';

describe('Redis faults', () => {
  let queue: RedisServer;
  let kv: RedisServer;
  let s: ProcStack | undefined;
  let qc: IORedis;
  beforeAll(async () => {
    [queue, kv] = await Promise.all([RedisServer.start(), RedisServer.start()]);
    qc = queue.client();
  });
  afterEach(async () => {
    await s?.close();
    s = undefined;
    await queue.start(); // a test that stopped it leaves it down on failure
    await Promise.all([qc.flushall(), kv.start()]);
  });
  afterAll(async () => {
    qc?.disconnect();
    await Promise.all([queue?.stop(), kv?.stop()]);
  });

  test('KV Redis flushed, then killed and restarted, mid-run: every answer equals the run without faults', async () => {
    // Redis is the only KV tier here (no memory, no disk), so a lost cache is a miss the worker must recompute.
    s = await ProcStack.start({ redis: queue, kvRedis: kv, services: [], env: { KV_MEMORY_BYTES: '0', KV_DISK_BYTES: '0', WORKER_CONCURRENCY: '4' } });
    await Promise.all([s.add('api'), s.add('worker')]);
    const worker = s.of('worker')[0];
    const w = workload(TINY, 4);
    const docs: string[] = [];
    for (const text of w.documents) docs.push((await httpJson(s.base, 'POST', '/v1/documents', { text })).body.id);
    const modes = [{ mode: 'attnlink' }, { mode: 'naive' }, { mode: 'cacheblend', r: 0.3 }, { mode: 'attnlink', k: 4 }];
    const requests = Array.from({ length: 200 }, (_, i) => ({ documents: docs.slice(i % 3), question: w.questions[i % 40], max_tokens: 32, ...modes[i % modes.length] }));
    const batches = new BatchStore(qc, new CatalogKeys(s.env.CATALOG_PREFIX));
    const run = async (during?: (count: () => Promise<number>) => Promise<void>) => {
      const sub = await httpJson(s!.base, 'POST', '/v1/jobs', { requests });
      expect(sub.status).toBe(202);
      await during?.(() => batches.resultCount('default', sub.body.id));
      const done = await waitFor(async () => {
        const r = await httpJson(s!.base, 'GET', `/v1/jobs/${sub.body.id}`);
        return r.body.status === 'completed' ? r.body : undefined;
      }, 90_000, 'the job');
      expect({ completed: done.completed, failed: done.failed }).toEqual({ completed: requests.length, failed: 0 });
      return done.results.map((r: any) => r.result.text as string);
    };

    const clean = await run();
    const before = await scrape(worker.port);
    const kc = kv.client();
    const faults: string[] = [];
    let restartedAt = 0;
    const faulty = await run(async (count) => {
      await waitFor(async () => ((await count()) >= 20 ? true : undefined), 60_000, '20 results');
      await kc.flushall();
      faults.push(`flushed at ${await count()}`);
      await waitFor(async () => ((await count()) >= 50 ? true : undefined), 60_000, '50 results');
      await kv.stop(true);
      faults.push(`killed at ${await count()}`);
      await new Promise((r) => setTimeout(r, 500));
      await kv.start();
      restartedAt = await count();
      faults.push(`restarted at ${restartedAt}`);
    });
    const after = await scrape(worker.port);
    const compiles = metricSum(after, 'epic_kv_compiles_total') - metricSum(before, 'epic_kv_compiles_total');
    const errors = metricSum(after, 'epic_kv_tier_errors_total', { tier: 'redis' }) - metricSum(before, 'epic_kv_tier_errors_total', { tier: 'redis' });
    console.log(`KV Redis faults: ${faults.join(', ')}; chunks recompiled during the faulty run: ${compiles}; redis tier errors: ${errors}`);
    expect(faulty).toEqual(clean);
    // Misses were recomputed (the clean run had warmed every chunk), and the cache refilled after the restart.
    expect(compiles).toBeGreaterThan(0);
    // The cache refills once the worker's KV client has reconnected (with backoff): requests after that store what
    // they compile again. (When the run finished inside the reconnect window, its last requests did not.)
    let probes = 0;
    await waitFor(async () => {
      if ((await kc.dbsize()) > 0) return true;
      if (probes++ % 10 === 0) await httpJson(s!.base, 'POST', '/v1/jobs', { requests: requests.slice(0, 4) });
      return undefined;
    }, 30_000, 'the KV Redis to refill after its restart');
    kc.disconnect();
  }, 180_000);

  test('a document posted again after the KV Redis lost its chunks is warmed again', async () => {
    // The precompute worker keeps its own memory and disk tiers: it still holds the chunks the KV Redis lost.
    s = await ProcStack.start({ redis: queue, kvRedis: kv, services: ['api', 'precompute'] });
    const text = workload(TINY, 1).documents[0];
    const warm = async () => (await httpJson(s!.base, 'GET', '/v1/documents/again')).body;
    expect((await httpJson(s.base, 'POST', '/v1/documents', { text, id: 'again' })).status).toBe(201);
    const first = await waitFor(async () => ((await warm()).warm_chunks === (await warm()).chunks ? await warm() : undefined), 30_000, 'the chunks to be warm');
    expect(first.chunks).toBeGreaterThan(0);
    const kc = kv.client();
    await kc.flushall(); // an eviction of everything, or a KV Redis restarted without persistence
    kc.disconnect();
    expect((await warm()).warm_chunks).toBe(0);
    expect((await httpJson(s.base, 'POST', '/v1/documents', { text, id: 'again' })).status).toBe(201);
    await waitFor(async () => ((await warm()).warm_chunks === first.chunks ? true : undefined), 30_000, 'the chunks to be warm again');
  }, 60_000);

  test('queue Redis down: 503 with Retry-After within a second on every route; recovery by itself when it returns', async () => {
    s = await ProcStack.start({ redis: queue, kvRedis: kv, services: [] });
    await Promise.all([s.add('api'), s.add('worker')]);
    const ok = await httpJson(s.base, 'POST', '/v1/completions', { prompt: 'Q : where ? A :', max_tokens: 3 });
    expect(ok.status).toBe(200);

    await queue.stop(true);
    const calls: [string, string, unknown?][] = [
      ['POST', '/v1/completions', { prompt: 'Q : where ? A :', max_tokens: 3 }],
      ['POST', '/v1/chat/completions', { messages: [{ role: 'user', content: 'hi' }], max_tokens: 3, stream: true }],
      ['POST', '/v1/jobs', { requests: [{ prompt: 'x', max_tokens: 2 }] }],
      ['GET', '/v1/jobs/job_abc'],
      ['POST', '/v1/documents', { text: 'Mira lives in Oslo .' }],
      ['GET', '/v1/documents'],
      ['GET', '/v1/documents/doc_1'],
      ['GET', '/v1/files'],
      ['GET', '/v1/batches'],
      ['GET', '/readyz'],
    ];
    for (let round = 0; round < 2; round++) {
      for (const [method, path, body] of calls) {
        const r = await httpJson(s.base, method, path, body);
        expect({ path, status: r.status, retryAfter: r.headers.get('retry-after'), json: !!r.body, fast: r.ms < 1000 }).toEqual({
          path,
          status: 503,
          retryAfter: '1',
          json: true,
          fast: true,
        });
      }
    }
    expect((await httpJson(s.base, 'GET', '/healthz')).status).toBe(200);

    await queue.start();
    const t0 = Date.now();
    const back = await waitFor(async () => {
      const r = await httpJson(s!.base, 'POST', '/v1/completions', { prompt: 'Q : where ? A :', max_tokens: 3 });
      return r.status === 200 ? r : undefined;
    }, 30_000, 'the API to serve again');
    console.log(`queue Redis back: first completion served ${Date.now() - t0} ms after redis-server restarted`);
    expect(back.body.choices[0].text).toBe(ok.body.choices[0].text);
    expect((await httpJson(s.base, 'GET', '/readyz')).status).toBe(200);
    expect(s.services.every((x) => x.alive)).toBe(true);
  }, 120_000);
});
