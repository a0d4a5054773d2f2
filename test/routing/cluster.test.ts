/**
 * Routing on a real Redis Cluster (three masters, started here): workers publish their chunks and heartbeats, the
 * router reads the index and sends a request to the holder's own queue, a BullMQ Worker on that queue runs it, and a
 * dead worker's queue is adopted; every key of the index and the queues shares the queue prefix's slot.
 */
import { Worker } from 'bullmq';
import { Adopter, InferenceQueues, ResidencyPublisher, ResidencyReader, Router, RoutingKeys, routingChunkKeys, workerQueueName } from '../../shared/routing';
import { FairQueuing, QosKeys, TenantLimitError, TenantLimits } from '../../shared/qos';
import { ServeRequest } from '../../shared/serving/request';
import { haveRedisCluster, startRedisCluster } from '../helpers/cluster';
import { waitFor } from '../helpers/net';

const it = haveRedisCluster ? test : test.skip;
const MODEL = 'test-model';

describe('routing on a Redis Cluster', () => {
  let cluster: Awaited<ReturnType<typeof startRedisCluster>> | undefined;
  const closers: (() => Promise<unknown>)[] = [];
  afterAll(async () => {
    for (const c of closers.reverse()) await c().catch(() => undefined);
    await cluster?.stop();
  });

  it('index, router, per-worker queues and adoption work across the cluster', async () => {
    cluster = await startRedisCluster();
    const prefix = '{epic-routing}';
    const redis = cluster.client();
    const keys = new RoutingKeys(prefix);
    const queues = new InferenceQueues({ connection: redis, prefix }, redis, keys);
    closers.push(() => queues.close());
    const reader = new ResidencyReader(redis, keys, 0);
    const router = new Router({ mode: 'cache', modelId: MODEL, queues, reader, loadMs: 0 });
    const ttl = 600;
    const pubs = ['a', 'b'].map((id) => new ResidencyPublisher({ redis: cluster!.client(), keys, workerId: id, ttlMs: ttl, flushMs: 1 }));
    for (const p of pubs) {
      await p.start();
      closers.push(() => p.close());
    }
    expect(await reader.liveWorkers()).toEqual(['a', 'b']);
    const req = (id: string, seed: number) =>
      ServeRequest.parse({ id, chunks: [0, 1, 2].map((c) => Array.from({ length: 24 }, (_, i) => 10 + ((seed * 97 + c * 13 + i) % 800))), question: [5], maxTokens: 1, mode: { mode: 'attnlink' } });
    // b holds the request's chunks: the request goes to b's own queue, and a Worker there runs it.
    const r1 = req('r1', 1);
    for (const k of routingChunkKeys(MODEL, r1)) pubs[1].listener('memory', k, true);
    await pubs[1].flush();
    const route = await router.route('default', r1);
    expect([route.decision, route.workerId]).toEqual(['best', 'b']);
    const ran: string[] = [];
    const wb = new Worker(workerQueueName('b'), async (job) => void ran.push(job.id!), { connection: cluster.client(), prefix });
    closers.push(() => wb.close());
    await route.queue.add('request', {}, { jobId: 'r1' });
    await waitFor(async () => (ran.includes('r1') ? true : undefined), 10_000, 'b to run r1');
    expect(await queues.known()).toEqual(['a', 'b']);
    expect(await queues.countWaiting()).toBe(0);

    // a dies (no more beats) with jobs in its queue: b adopts the queue and runs them; a's entries vanish.
    for (const k of routingChunkKeys(MODEL, req('r2', 2))) pubs[0].listener('memory', k, true);
    await pubs[0].flush();
    const r2 = await router.route('default', req('r2', 2));
    expect(r2.workerId).toBe('a');
    await r2.queue.add('request', {}, { jobId: 'r2' });
    await pubs[0].close(); // leaves the index at once, as a clean stop does
    await redis.zadd(keys.orphans, 0, 'a'); // its queue still has a job: an orphan
    const adopter = new Adopter({
      redis: cluster.client(),
      keys,
      workerId: 'b',
      ttlMs: ttl,
      consume: (id) => new Worker(workerQueueName(id), async (job) => void ran.push(job.id!), { connection: cluster!.client(), prefix }),
      remaining: (id) => queues.of(id).getJobCountByTypes('waiting', 'active', 'delayed', 'prioritized'),
    });
    closers.push(() => adopter.close());
    adopter.start();
    await waitFor(async () => (ran.includes('r2') && !(await redis.zscore(keys.orphans, 'a')) ? true : undefined), 10_000, 'the adopted job');
    expect(await redis.exists(keys.chunks('a'))).toBe(0);
    reader.refresh();
    expect(await reader.liveWorkers()).toEqual(['b']);
    // Nothing routed to a any more.
    for (let i = 0; i < 5; i++) expect((await router.route('default', req(`n${i}`, 2))).workerId).toBe('b');

    // Quality of service's scripts touch a queue's lists and their own keys together: one slot, so they run here too.
    const qk = new QosKeys(prefix);
    const fair = new FairQueuing(cluster.client(), qk);
    const batchQueue = workerQueueName('b', 'batch');
    expect(await fair.tags(batchQueue, 't', 2)).toEqual([1, 2]);
    const limits = new TenantLimits(cluster.client(), qk, { maxQueued: 1, rate: 1, burst: 5 });
    await limits.admit('t', 'batch', ['x']);
    await expect(limits.admit('t', 'interactive', ['y'])).rejects.toBeInstanceOf(TenantLimitError);
    await fair.started(batchQueue, qk.queued('batch', 't'), 'x', 2);
    await limits.admit('t', 'interactive', ['y']);
    expect(await limits.waiting()).toEqual([
      { tenant: 't', cls: 'interactive', n: 1 },
      { tenant: 't', cls: 'batch', n: 0 },
    ]);
  }, 60_000);
});
