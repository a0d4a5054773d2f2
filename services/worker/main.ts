import { hostname } from 'node:os';
import { Queue, QueueKeys, Worker, type Job, type Processor } from 'bullmq';
import { BatchStore, CatalogKeys } from '../../shared/catalog';
import { loadServiceConfig } from '../../shared/config';
import { runService } from '../../shared/lifecycle';
import { createLogger } from '../../shared/logging';
import { createErrorMetrics, createIndexGauge, createQosMetrics, createRoutingMetrics, createServingMetrics, createStoreMetrics } from '../../shared/metrics/metrics';
import { createRegistry, serveMetrics } from '../../shared/metrics/server';
import { FairQueuing, parseWeights, QosKeys, TenantLabels } from '../../shared/qos';
import { REQUEST_CLASSES, type RequestClass } from '../../shared/queue/contracts';
import { Adopter, QueueThief, ResidencyPublisher, ResidencyReader, RoutingKeys, sharedQueueName, Stealer, workerQueueName } from '../../shared/routing';
import { workerConnection } from '../../shared/queue/connection';
import { linkContextFactory } from '../../shared/serving/context';
import { inferenceProcessor, recordFailure } from './processor';
import { Scheduler } from '../../shared/serving/scheduler';
import { loadServiceEngine } from '../../shared/serving/load';
import { openPrefixStore, openStore } from '../../shared/serving/store';

/** This worker's id when WORKER_ID is unset: host and process, made fit for a queue name. */
function defaultWorkerId(): string {
  return `${hostname()}-${process.pid}`.replace(/[^A-Za-z0-9_.-]/g, '_').slice(-64);
}

/**
 * The inference worker: BullMQ consumer, for each request class (interactive, batch), of its own queue (jobs the
 * API's router sent it), of the shared queue (jobs any worker may take; it takes fewer while its own keep it busy) and
 * of the queues of dead workers it adopted, and, when it has none of its own work, of live workers' own queues (work
 * stealing), all into one scheduler, which serves interactive requests first and keeps batch its minimum share.
 * Requests waiting together are grouped by shared context and linked once, across classes.
 * Its KV store's memory and disk tiers are published to the routing index, with a heartbeat.
 */
async function main() {
  const cfg = loadServiceConfig();
  const workerId = cfg.WORKER_ID ?? defaultWorkerId();
  const log = createLogger('worker', cfg.LOG_LEVEL).child({ workerId });
  const engine = await loadServiceEngine(cfg);
  log.info({ model: engine.id, graph: engine.graphKind, provider: cfg.EXECUTION_PROVIDER }, 'engine loaded');
  if (cfg.WORKER_WARMUP) {
    // A linked request computes ~k tokens per chunk and its question: 256 covers 8 chunks at k = 16 with room to spare.
    const ms = await engine.warmup({ rows: cfg.WORKER_MAX_BATCH, capacity: Math.floor(cfg.WORKER_BATCH_TOKENS / cfg.WORKER_MAX_BATCH), tokens: 256 });
    log.info({ ms: Math.round(ms) }, 'engine warmed up');
  }
  const routingKeys = new RoutingKeys(cfg.QUEUE_PREFIX);
  const indexRedis = workerConnection(cfg.REDIS_URL);
  const residency = new ResidencyPublisher({
    redis: indexRedis,
    keys: routingKeys,
    workerId,
    ttlMs: cfg.ROUTING_HEARTBEAT_TTL_MS,
    onError: (e) => log.warn({ err: e.message }, 'routing index'),
  });
  const store = await openStore(cfg, engine, residency.listener);
  const prefixStore = await openPrefixStore(cfg, engine);
  const registry = createRegistry('worker');
  registry.setDefaultLabels({ service: 'worker', worker: workerId });
  const routing = createRoutingMetrics(registry);
  createIndexGauge(registry, () => residency.sizes());
  const serving = createServingMetrics(registry);
  const qosMetrics = createQosMetrics(registry, { labels: new TenantLabels(cfg.QOS_TENANT_LABELS) });
  const errors = createErrorMetrics(registry, 'worker');
  createStoreMetrics(registry, () => store.stats());
  const metrics = await serveMetrics(registry, cfg.WORKER_METRICS_PORT, cfg.METRICS_HOST);
  const redis = workerConnection(cfg.REDIS_URL);
  const keys = new CatalogKeys(cfg.CATALOG_PREFIX);
  const batches = new BatchStore(redis, keys);
  const scheduler = new Scheduler(linkContextFactory(engine, store, prefixStore), {
    maxBatch: cfg.WORKER_MAX_BATCH,
    maxBatchTokens: cfg.WORKER_BATCH_TOKENS,
    classes: { minShare: cfg.BATCH_MIN_SHARE, shortRound: cfg.BATCH_STEP_WHILE_INTERACTIVE },
    onGroup: (size, ms) => log.debug({ size, ms: Math.round(ms) }, 'group served'),
    onServedClass: qosMetrics.servedCount,
  });
  const qosKeys = new QosKeys(cfg.QUEUE_PREFIX);
  const processor = inferenceProcessor({
    scheduler,
    batches,
    keys,
    publisher: redis,
    tokenizer: engine.tokenizer,
    metrics: serving,
    errors,
    onDuplicate: (job) => log.info({ job: job.id }, 'result already recorded by an earlier run of this job; not counted again'),
    qos: { fair: new FairQueuing(indexRedis, qosKeys, parseWeights(cfg.TENANT_WEIGHTS)), keys: qosKeys, metrics: qosMetrics, onError: (e) => log.warn({ err: e.message }, 'fair queuing') },
  });
  // Jobs of this worker's own in hand (from its own queues, the shared ones and adopted ones; not stolen ones): work
  // stealing starts only when there are none.
  let inHand = 0;
  const ownWork = async (job: Job) => {
    inHand++;
    try {
      return await processor(job);
    } finally {
      inHand--;
    }
  };
  // Concurrency lets the worker hold several jobs at once, so the scheduler can group them; model work itself runs
  // one group at a time.
  const options = (concurrency: number) => ({
    connection: workerConnection(cfg.REDIS_URL),
    prefix: cfg.QUEUE_PREFIX,
    concurrency,
    lockDuration: cfg.WORKER_LOCK_MS,
    stalledInterval: cfg.WORKER_STALLED_INTERVAL_MS,
    maxStalledCount: cfg.WORKER_MAX_STALLED_COUNT,
  });
  // Per class: the shared queue is for whoever has room: it may hold as many jobs as its own queue leaves free (at
  // least one, so it is always drained). Batch jobs are held WORKER_BATCH_CONCURRENCY at a time: a round's worth; more
  // would only hold other tenants' batch jobs back (the fair order is the queue's, not the worker's).
  const concurrency = (cls: RequestClass) => (cls === 'batch' ? cfg.WORKER_BATCH_CONCURRENCY : cfg.WORKER_CONCURRENCY);
  const consumers = REQUEST_CLASSES.map((cls) => {
    let ownRunning = 0;
    let shared: Worker | undefined;
    const roomForShared = () => {
      if (shared) shared.concurrency = Math.max(1, concurrency(cls) - ownRunning);
    };
    const ownProcessor: Processor = async (job: Job) => {
      ownRunning++;
      roomForShared();
      try {
        return await ownWork(job);
      } finally {
        ownRunning--;
        roomForShared();
      }
    };
    const own = new Worker(workerQueueName(workerId, cls), ownProcessor, options(concurrency(cls)));
    shared = new Worker(
      sharedQueueName(cls),
      async (job: Job) => {
        if ((job.data as { route?: string } | undefined)?.route === 'fallback') routing.count('stolen');
        return ownWork(job);
      },
      options(concurrency(cls)),
    );
    return { own, shared };
  });
  const workers = consumers.flatMap((c) => [c.own, c.shared]);
  const adopter = new Adopter({
    redis: indexRedis,
    keys: routingKeys,
    workerId,
    ttlMs: cfg.ROUTING_HEARTBEAT_TTL_MS,
    consume: (dead) => {
      const ws = REQUEST_CLASSES.map(
        (cls) =>
          new Worker(
            workerQueueName(dead, cls),
            async (job: Job) => {
              routing.count('adopted');
              return ownWork(job);
            },
            options(concurrency(cls)),
          ),
      );
      ws.forEach(listen);
      return { close: () => Promise.all(ws.map((w) => w.close())) };
    },
    remaining: (dead) => remainingOf(dead),
    onAdopt: (dead) => log.warn({ dead }, "worker's heartbeat ran out: taking the jobs of its queue"),
    onDone: (dead, reason) => log.info({ dead, reason }, 'adopted queue released'),
    onError: (e) => log.warn({ err: e.message }, 'adopting queues'),
  });
  /** Jobs a worker's own queue still has to run (waiting, delayed, prioritized, active). */
  const queues = new Map<string, Queue>();
  const remainingJobs = (name: string) => {
    let q = queues.get(name);
    if (!q) queues.set(name, (q = new Queue(name, { connection: indexRedis, prefix: cfg.QUEUE_PREFIX })));
    return q.getJobCountByTypes('waiting', 'active', 'delayed', 'prioritized');
  };
  /** Jobs a worker's own queues of both classes still have to run. */
  const remainingOf = async (id: string) => (await Promise.all(REQUEST_CLASSES.map((cls) => remainingJobs(workerQueueName(id, cls))))).reduce((a, b) => a + b, 0);
  const onFailed = (job: Job | undefined, err: Error) => {
    errors.count('job_failed');
    log.warn({ job: job?.id, attempts: job?.attemptsMade, err: err.message }, 'job failed');
    void recordFailure({ batches, publisher: redis, keys }, job, err).catch((e) => log.error({ err: (e as Error).message }, 'recording failure'));
  };
  const listen = (worker: Worker) => {
    worker.on('failed', onFailed);
    worker.on('error', (err) => {
      errors.count('queue');
      log.error({ err: err.message }, 'worker error');
    });
  };
  workers.forEach(listen);
  // Work stealing: idle, this worker takes jobs waiting in other live workers' own queues (shared/routing/steal.ts).
  const thief = new QueueThief({
    worker: () => ({ connection: workerConnection(cfg.REDIS_URL), prefix: cfg.QUEUE_PREFIX, lockDuration: cfg.WORKER_LOCK_MS }),
    process: (job) => {
      routing.count('stolen');
      return processor(job);
    },
    onFailed,
  });
  const queueKeys = new QueueKeys(cfg.QUEUE_PREFIX);
  const reader = new ResidencyReader(indexRedis, routingKeys, cfg.ROUTING_STEAL_INTERVAL_MS);
  const stealer = new Stealer({
    workerId,
    live: () => reader.liveWorkers(),
    idle: () => inHand === 0,
    waiting: async (names) => {
      const p = indexRedis.pipeline();
      for (const n of names) p.llen(queueKeys.toKey(n, 'wait')).zcard(queueKeys.toKey(n, 'prioritized'));
      const res = (await p.exec()) ?? [];
      return names.map((_, i) => Number(res[2 * i]?.[1] ?? 0) + Number(res[2 * i + 1]?.[1] ?? 0));
    },
    take: (name) => thief.take(name),
    intervalMs: cfg.ROUTING_STEAL_INTERVAL_MS,
    maxInFlight: cfg.ROUTING_STEAL_MAX,
    onError: (e) => log.warn({ err: e.message }, 'stealing jobs'),
  });
  // A job that stalled more than maxStalledCount times (its worker died each time) is failed by the next worker that
  // takes it (BullMQ 6: a deferred failure, raised as an UnrecoverableError): the 'failed' handler above records it.
  await residency.start();
  adopter.start();
  if (cfg.ROUTING_STEAL_INTERVAL_MS > 0) stealer.start();
  log.info({ queues: workers.map((w) => w.name), concurrency: cfg.WORKER_CONCURRENCY, batchConcurrency: cfg.WORKER_BATCH_CONCURRENCY, metricsPort: cfg.WORKER_METRICS_PORT }, 'worker ready');
  return {
    log,
    close: async () => {
      // Out of the index first (no more jobs routed here), then the jobs in hand finished; what still waits in the own
      // queue is left to the other workers (an orphan claimed at their next look).
      await residency.close().catch((e: Error) => log.warn({ err: e.message }, 'leaving the routing index'));
      await adopter.close();
      await stealer.close();
      await thief.close();
      await Promise.all(workers.map((w) => w.close()));
      const left = await remainingOf(workerId).catch(() => 0);
      if (left > 0) await indexRedis.zadd(routingKeys.orphans, 0, workerId).catch(() => undefined);
      await Promise.allSettled([...queues.values()].map((q) => q.close()));
      await store.close();
      await prefixStore.close();
      redis.disconnect();
      indexRedis.disconnect();
      metrics.close();
    },
  };
}

runService('worker', main);
