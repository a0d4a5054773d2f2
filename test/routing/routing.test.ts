/**
 * Cache-aware routing on the real Redis and real BullMQ: the residency index (add, evict, TTL expiry), the router
 * (the holder wins, the same context goes to the same worker, a backed-up worker's jobs go to the shared queue where
 * an idle worker takes them), the adoption of a dead worker's queue, and a bad ROUTING value.
 */
import { Worker, type Job } from 'bullmq';
import IORedis from 'ioredis';
import { loadServiceConfig } from '../../shared/config';
import { KVStore } from '../../shared/kvstore';
import { QUEUES } from '../../shared/queue/contracts';
import { Adopter, InferenceQueues, ResidencyPublisher, ResidencyReader, Router, RoutingKeys, routingChunkKeys, workerQueueName, type RoutingMode } from '../../shared/routing';
import { ServeRequest } from '../../shared/serving/request';
import { makeBlock, MODEL, SHAPE } from '../kvstore/helpers';
import { waitFor } from '../helpers/net';
import { dropKeys } from '../helpers/redis';

const REDIS = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';

function request(id: string, chunks: number[][], mode = 'attnlink'): ServeRequest {
  return ServeRequest.parse({ id, chunks, question: [5, 6], maxTokens: 1, mode: { mode } });
}

/** Chunks of `n` tokens from a seed: distinct per seed. */
function chunk(seed: number, n = 32): number[] {
  return Array.from({ length: n }, (_, i) => 10 + ((seed * 31 + i * 7) % 900));
}

/** One test's routing world under its own queue prefix: index, queues, reader, a router per mode. */
function world() {
  const prefix = `{epic-routing-test-${process.pid}-${Math.random().toString(36).slice(2, 8)}}`;
  const conns: IORedis[] = [];
  const conn = () => {
    const c = new IORedis(REDIS, { maxRetriesPerRequest: null });
    conns.push(c);
    return c;
  };
  const redis = conn();
  const keys = new RoutingKeys(prefix);
  const queues = new InferenceQueues({ connection: redis, prefix }, redis, keys);
  const reader = new ResidencyReader(redis, keys, 0);
  const publishers: ResidencyPublisher[] = [];
  const workers: Worker[] = [];
  const closers: (() => Promise<void>)[] = [];
  const publisher = (workerId: string, ttlMs = 60_000) => {
    const p = new ResidencyPublisher({ redis: conn(), keys, workerId, ttlMs, flushMs: 1 });
    publishers.push(p);
    return p;
  };
  const router = (mode: RoutingMode = 'cache', maxWaiting = 8, load?: number) =>
    new Router({ mode, modelId: MODEL, queues, reader, maxWaiting, loadMs: 0, ...(load !== undefined ? { weights: { load } } : {}) });
  const worker = (queue: string, fn: (job: Job) => Promise<unknown>, concurrency = 1) => {
    const w = new Worker(queue, fn, { connection: conn(), prefix, concurrency });
    workers.push(w);
    return w;
  };
  return {
    prefix,
    redis,
    keys,
    queues,
    reader,
    publisher,
    router,
    worker,
    conn,
    closers,
    close: async () => {
      for (const c of closers) await c();
      await Promise.all(workers.map((w) => w.close()));
      for (const id of await queues.known().catch(() => [] as string[])) await queues.of(id).obliterate({ force: true }).catch(() => undefined);
      await queues.shared.obliterate({ force: true }).catch(() => undefined);
      await queues.close();
      for (const p of publishers) await p.close().catch(() => undefined);
      await dropKeys(REDIS, [prefix]);
      for (const c of conns) c.disconnect();
    },
  };
}

type World = ReturnType<typeof world>;

describe('routing', () => {
  let w: World;
  beforeEach(() => {
    w = world();
  });
  afterEach(async () => {
    await w.close();
  });

  test('the index follows the tiers: add, evict to disk, evict, and a dead worker vanishes with its TTL', async () => {
    const pub = w.publisher('a', 600);
    // A real store: a memory tier that holds two blocks, whose residency events feed the publisher.
    const charge = 2 * 32 * 4 * 32 * 4 * 2 + 8 * 32 + 256;
    const store = await KVStore.open({ modelId: MODEL, shape: SHAPE, memory: { budgetBytes: 2 * charge + 10 }, disk: false, redis: false, residency: pub.listener });
    await pub.beat();
    const [k1, k2, k3] = ['k1', 'k2', 'k3'].map((k) => `${k}-${w.prefix.length}`);
    await store.put(k1, makeBlock(1, 32));
    await store.put(k2, makeBlock(2, 32));
    await pub.flush();
    expect(await w.redis.hgetall(w.keys.chunks('a'))).toEqual({ [k1]: 'm', [k2]: 'm' });
    await store.put(k3, makeBlock(3, 32)); // evicts k1 (least recently used)
    await pub.flush();
    expect(await w.redis.hgetall(w.keys.chunks('a'))).toEqual({ [k2]: 'm', [k3]: 'm' });
    // The disk tier's events: a chunk evicted from memory but on disk is 'd'.
    pub.listener('disk', k2, true);
    await store.delete(k2);
    await pub.flush();
    expect(await w.redis.hget(w.keys.chunks('a'), k2)).toBe('d');
    pub.listener('disk', k2, false);
    await pub.flush();
    expect(await w.redis.hget(w.keys.chunks('a'), k2)).toBeNull();
    expect(await w.reader.liveWorkers()).toEqual(['a']);
    expect(await w.reader.holdings(['a'], [k1, k3])).toEqual([[undefined, 'm']]);
    // No more beats (the process is gone): within the TTL the worker is no longer live and its entries are gone.
    const t0 = Date.now();
    await waitFor(async () => ((await w.redis.exists(w.keys.chunks('a'))) === 0 && (await w.reader.liveWorkers()).length === 0 ? true : undefined), 5000, 'the entries to expire');
    expect(Date.now() - t0).toBeLessThan(600 + 300);
    await store.close();
  });

  test('a worker that beats again after it was given up publishes its whole map again', async () => {
    const pub = w.publisher('a', 300);
    pub.listener('memory', 'x1', true);
    await pub.beat();
    await pub.flush();
    await waitFor(async () => ((await w.redis.exists(w.keys.chunks('a'))) === 0 ? true : undefined), 5000, 'expiry');
    await pub.beat();
    await waitFor(async () => ((await w.redis.hget(w.keys.chunks('a'), 'x1')) === 'm' ? true : undefined), 5000, 'the map again');
  });

  test('the worker holding the chunks wins; memory beats disk; nothing held: the same context goes to the same worker', async () => {
    const [a, b, c] = ['a', 'b', 'c'].map((id) => w.publisher(id));
    for (const p of [a, b, c]) await p.beat();
    const router = w.router();
    const r1 = request('r1', [chunk(1), chunk(2), chunk(3)]);
    const keys = routingChunkKeys(MODEL, r1);
    for (const k of keys) b.listener('memory', k, true);
    for (const k of keys) c.listener('disk', k, true);
    await b.flush();
    await c.flush();
    const first = await router.route('default', r1);
    expect(first).toMatchObject({ decision: 'best', workerId: 'b' });
    expect(first.queue.name).toBe(workerQueueName('b'));
    // On disk only (c), against nothing (a): c.
    const r2 = request('r2', [chunk(4), chunk(5)]);
    for (const k of routingChunkKeys(MODEL, r2)) c.listener('disk', k, true);
    await c.flush();
    expect((await router.route('default', r2)).workerId).toBe('c');
    // A context no one holds: every request of it to one worker (a fresh router each time: not the sticky map).
    const ctx = [chunk(7), chunk(8), chunk(9)];
    const picks = new Set<string>();
    for (let i = 0; i < 10; i++) picks.add((await w.router().route('default', request(`s${i}`, ctx))).workerId!);
    expect(picks.size).toBe(1);
    // Other contexts spread over the workers (rendezvous homes).
    const spread = new Set<string>();
    for (let i = 0; i < 30; i++) spread.add((await w.router().route('default', request(`o${i}`, [chunk(100 + i)]))).workerId!);
    expect(spread.size).toBe(3);
    // Another tenant's context is another context: the same tokens under another salt are other chunk keys.
    expect(routingChunkKeys(MODEL, { ...r1, tenantSalt: 'other' })).not.toEqual(keys);
  });

  test('round-robin cycles over the live workers; shared and no live worker use the shared queue', async () => {
    const none = await w.router('cache').route('default', request('n', [chunk(1)]));
    expect([none.decision, none.workerId, none.queue.name]).toEqual(['fallback', undefined, QUEUES.inference]);
    for (const id of ['a', 'b']) await w.publisher(id).beat();
    const rr = w.router('round-robin');
    const ids = [];
    for (let i = 0; i < 4; i++) ids.push((await rr.route('default', request(`q${i}`, [chunk(1)]))).workerId);
    expect(ids).toEqual(['a', 'b', 'a', 'b']);
    const shared = await w.router('shared').route('default', request('s', [chunk(1)]));
    expect(shared).toMatchObject({ decision: 'shared' });
    expect(shared.queue.name).toBe(QUEUES.inference);
  });

  test('a worker backed up past the bound gets no more: the job goes to the shared queue and an idle worker takes it', async () => {
    for (const id of ['a', 'b']) await w.publisher(id).beat();
    const r = request('busy-0', [chunk(1), chunk(2)]);
    // λ = 0: the chunks alone decide, so the owner stays best however busy it is (the bound is what moves work).
    const router = w.router('cache', 0, 0);
    const release: (() => void)[] = [];
    let done = false;
    const ranBy = new Map<string, string>();
    // Worker a: its own queue, busy (each job holds until released); worker b: the shared queue, idle.
    const first = await router.route('default', r);
    const owner = first.workerId!;
    const other = owner === 'a' ? 'b' : 'a';
    w.worker(workerQueueName(owner), (job) => {
      ranBy.set(job.id!, owner);
      return done ? Promise.resolve() : new Promise<void>((res) => release.push(res));
    });
    w.worker(QUEUES.inference, async (job) => void ranBy.set(job.id!, other));
    w.closers.push(async () => {
      done = true;
      release.forEach((f) => f());
    });
    await first.queue.add('request', {}, { jobId: 'busy-0' });
    await waitFor(async () => (release.length === 1 ? true : undefined), 5000, 'the first job to run');
    // Same context: sticky to the owner while its queue has room (nothing waiting).
    const second = await router.route('default', request('busy-1', r.chunks));
    expect(second.workerId).toBe(owner);
    await second.queue.add('request', {}, { jobId: 'busy-1' });
    // Now one waits behind the busy one: past the bound (0), the next goes to the shared queue.
    const third = await router.route('default', request('busy-2', r.chunks));
    expect(third.decision).toBe('fallback');
    await third.queue.add('request', { route: third.decision }, { jobId: 'busy-2' });
    await waitFor(async () => (ranBy.get('busy-2') ? true : undefined), 5000, 'the idle worker to take it');
    expect(ranBy.get('busy-2')).toBe(other);
    expect(ranBy.has('busy-1')).toBe(false); // still waiting behind the busy one
    // With the load term (default λ), the owner's backlog outweighs its cached tokens: the idle worker's own queue.
    const balanced = await w.router('cache', 0).route('default', request('busy-3', r.chunks));
    expect([balanced.decision, balanced.workerId]).toEqual(['best', other]);
  });

  test("a dead worker's queue is adopted: its waiting jobs run elsewhere, once each, and the orphan is released", async () => {
    const ttl = 400;
    const dead = w.publisher('dead', ttl);
    await dead.beat();
    const q = w.queues.of('dead');
    await q.addBulk(Array.from({ length: 5 }, (_, i) => ({ name: 'request', data: { i }, opts: { jobId: `j${i}` } })));
    const ran: string[] = [];
    const live = w.publisher('live', ttl);
    await live.start();
    const adopter = new Adopter({
      redis: w.conn(),
      keys: w.keys,
      workerId: 'live',
      ttlMs: ttl,
      consume: (id) => w.worker(workerQueueName(id), async (job) => void ran.push(job.id!)),
      remaining: (id) => w.queues.of(id).getJobCountByTypes('waiting', 'active', 'delayed', 'prioritized'),
    });
    w.closers.push(() => adopter.close());
    adopter.start();
    await waitFor(async () => (ran.length === 5 && !(await w.redis.zscore(w.keys.orphans, 'dead')) ? true : undefined), 10_000, 'the adopted jobs');
    expect(ran.sort()).toEqual(['j0', 'j1', 'j2', 'j3', 'j4']);
    expect(await w.reader.liveWorkers()).toEqual(['live']);
    expect(adopter.adopting()).toEqual([]);
  });
});

describe('ROUTING setting', () => {
  test('one of cache, round-robin, shared (default cache); anything else is a start-up error naming it', () => {
    expect(loadServiceConfig({}).ROUTING).toBe('cache');
    expect(loadServiceConfig({ ROUTING: 'round-robin' }).ROUTING).toBe('round-robin');
    expect(() => loadServiceConfig({ ROUTING: 'nearest' })).toThrow(/invalid configuration: ROUTING: .*"cache"\|"round-robin"\|"shared"/);
    expect(() => loadServiceConfig({ WORKER_ID: 'a:b' })).toThrow(/WORKER_ID/);
  });
});

