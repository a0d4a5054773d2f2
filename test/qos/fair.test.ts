/**
 * Fair queuing between tenants on the real Redis and real BullMQ (shared/qos): start-time fair queuing over job
 * priorities, and the per-tenant limits' exact queued count and token bucket.
 */
import { Queue, Worker, type Job } from 'bullmq';
import IORedis from 'ioredis';
import { FairQueuing, priorityOf, QosKeys, TenantLabels, TenantLimitError, TenantLimits } from '../../shared/qos';
import { InferenceQueues, RoutingKeys } from '../../shared/routing';
import { waitFor } from '../helpers/net';
import { dropKeys } from '../helpers/redis';

const REDIS = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';

describe('fair queuing between tenants', () => {
  const prefix = `{epic-qos-test-${process.pid}-${Math.random().toString(36).slice(2, 8)}}`;
  const conns: IORedis[] = [];
  const conn = () => {
    const c = new IORedis(REDIS, { maxRetriesPerRequest: null });
    conns.push(c);
    return c;
  };
  const keys = new QosKeys(prefix);
  let queue: Queue;
  afterAll(async () => {
    await queue?.obliterate({ force: true }).catch(() => undefined);
    await queue?.close();
    await dropKeys(REDIS, [prefix]);
    for (const c of conns) c.disconnect();
  });

  /** Enqueue a tenant's n jobs as the API does: tags from the script, then one addBulk with their priorities. */
  const enqueue = async (fair: FairQueuing, tenant: string, n: number, from = 0) => {
    const tags = await fair.tags(queue.name, tenant, n);
    await queue.addBulk(tags.map((tag, i) => ({ name: 'r', data: { tenant, tag }, opts: { jobId: `${tenant}-${from + i}`, priority: priorityOf(tag) } })));
  };

  /**
   * A worker of concurrency 1 that advances the virtual time as the service's does, and stops (without finishing) at
   * its `gateAt`-th job until `open()`: the test enqueues then, with V at that job's tag.
   */
  const consume = (fair: FairQueuing, gateAt: number) => {
    const order: string[] = [];
    let open!: () => void;
    const gate = new Promise<void>((r) => (open = r));
    let reached!: () => void;
    const atGate = new Promise<void>((r) => (reached = r));
    const worker = new Worker(
      queue.name,
      async (job: Job) => {
        await fair.started(queue.name, keys.queued('batch', job.data.tenant), job.id!, job.data.tag);
        order.push(job.data.tenant);
        if (order.length === gateAt) {
          reached();
          await gate;
        }
      },
      { connection: conn(), prefix, concurrency: 1 },
    );
    return { order, open, atGate, worker };
  };

  test('a small batch sent while a large one runs gets an equal share: the two interleave', async () => {
    queue = new Queue('inference-batch', { connection: conn(), prefix });
    const fair = new FairQueuing(conn(), keys);
    await enqueue(fair, 'a', 60);
    const c = consume(fair, 10);
    await c.atGate;
    // V is now the tag of a's 10th job; b's 10 jobs start there and interleave with a's 11th to 20th.
    await enqueue(fair, 'b', 10);
    c.open();
    await waitFor(async () => (c.order.length === 70 ? true : undefined), 30_000, 'every job');
    await c.worker.close();
    const after = c.order.slice(10);
    const lastB = after.lastIndexOf('b');
    // Alone, b's batch would take 10 jobs' time; shared fairly with a, 20.
    expect(lastB).toBeLessThan(20);
    expect(after.slice(0, 20).filter((t) => t === 'b').length).toBe(10);
    // Before b came, a alone: the work is conserved (no idle share).
    expect(c.order.slice(0, 10)).toEqual(Array(10).fill('a'));
  });

  test('weights: a tenant of weight 3 gets three jobs for each of a weight-1 tenant; tags restart on an empty queue', async () => {
    await queue.obliterate({ force: true });
    const fair = new FairQueuing(conn(), keys, new Map([['heavy', 3]]));
    // An empty queue: the tags restart from 0 (a's old tags from the test before do not hold a back).
    await enqueue(fair, 'light', 40);
    await enqueue(fair, 'heavy', 40);
    const c = consume(fair, -1);
    await waitFor(async () => (c.order.length === 80 ? true : undefined), 30_000, 'every job');
    await c.worker.close();
    const first = c.order.slice(0, 40);
    const heavy = first.filter((t) => t === 'heavy').length;
    expect(heavy).toBeGreaterThanOrEqual(28);
    expect(heavy).toBeLessThanOrEqual(32);
    // The queue is empty again: the next tag starts from 0.
    expect(await fair.tags(queue.name, 'light', 1)).toEqual([1]);
  });

  test('limits: the queued count is exact (added at enqueue, removed at start or release); the rate is a token bucket', async () => {
    const limits = new TenantLimits(conn(), keys, { maxQueued: 5, rate: 0.5, burst: 2 });
    await limits.admit('t', 'batch', ['j1', 'j2', 'j3']);
    await limits.admit('t', 'interactive', ['j4']);
    // 4 queued: 2 more would pass 5.
    const over = await limits.admit('t', 'batch', ['j5', 'j6']).catch((e: unknown) => e);
    expect(over).toBeInstanceOf(TenantLimitError);
    expect(over).toMatchObject({ limit: 'max_queued_requests', retryAfterS: 1 });
    // Another tenant has its own count; a started job leaves the count.
    const fair = new FairQueuing(conn(), keys);
    await fair.started('inference-batch', keys.queued('batch', 't'), 'j1', undefined);
    await limits.release('t', 'interactive', ['j4']);
    expect((await limits.waiting()).filter((w) => w.tenant === 't')).toEqual([
      { tenant: 't', cls: 'interactive', n: 0 },
      { tenant: 't', cls: 'batch', n: 2 },
    ]);
    // The rate: a burst of 2 was spent by the two admitted calls above; the next call waits ~2 s for a token.
    const rate = await limits.admit('t', 'batch', ['j7']).catch((e: unknown) => e);
    expect(rate).toMatchObject({ limit: 'request_rate' });
    expect((rate as TenantLimitError).retryAfterS).toBeGreaterThanOrEqual(1);
    expect((rate as TenantLimitError).retryAfterS).toBeLessThanOrEqual(2);
    // Nothing refused was counted.
    expect((await limits.waiting()).find((w) => w.tenant === 't' && w.cls === 'batch')!.n).toBe(2);
  });
});

describe('reconciling the queued count', () => {
  test('an id whose job no queue holds waiting leaves the count (once old enough); a waiting job stays', async () => {
    const prefix = `{epic-qos-rec-${process.pid}-${Math.random().toString(36).slice(2, 8)}}`;
    const redis = new IORedis(REDIS, { maxRetriesPerRequest: null });
    const keys = new QosKeys(prefix);
    const queues = new InferenceQueues({ connection: redis, prefix }, redis, new RoutingKeys(prefix));
    try {
      const limits = new TenantLimits(redis, keys, { maxQueued: 2, rate: 0 });
      // 'lost' was admitted, but its job never reached a queue (an API that died in between); 'kept' waits.
      await limits.admit('r', 'interactive', ['kept', 'lost']);
      await queues.shared.add('request', {}, { jobId: 'kept', priority: 1 });
      await expect(limits.admit('r', 'interactive', ['new'])).rejects.toBeInstanceOf(TenantLimitError);
      const isWaiting = (ids: string[]) => queues.waitingIds(ids);
      expect(await queues.waitingIds(['kept', 'lost'])).toEqual([true, false]);
      // Young ids are left alone (their jobs may be on their way into a queue).
      expect(await limits.reconcile('r', isWaiting, { minAgeMs: 60_000, everyMs: 0 })).toBe(0);
      expect(await limits.reconcile('r', isWaiting, { minAgeMs: 0, everyMs: 0 })).toBe(1);
      await limits.admit('r', 'interactive', ['new']);
      expect((await limits.waiting()).find((w) => w.tenant === 'r' && w.cls === 'interactive')!.n).toBe(2);
      // A started job is not waiting either.
      const wconn = new IORedis(REDIS, { maxRetriesPerRequest: null });
      const worker = new Worker(queues.shared.name, async () => undefined, { connection: wconn, prefix });
      await waitFor(async () => ((await queues.waitingIds(['kept']))[0] === false ? true : undefined), 10_000, 'kept to start');
      await worker.close();
      wconn.disconnect();
    } finally {
      await queues.shared.obliterate({ force: true }).catch(() => undefined);
      await queues.close();
      await dropKeys(REDIS, [prefix]);
      redis.disconnect();
    }
  });
});

describe('tenant label values', () => {
  test('the first N tenants seen keep their names; later ones are other', () => {
    const labels = new TenantLabels(2);
    expect(['a', 'b', 'c', 'a', 'd', 'b'].map((t) => labels.of(t))).toEqual(['a', 'b', 'other', 'a', 'other', 'b']);
  });
});
