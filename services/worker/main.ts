import { Worker } from 'bullmq';
import { BatchStore, CatalogKeys } from '../../shared/catalog';
import { loadServiceConfig } from '../../shared/config';
import { runService } from '../../shared/lifecycle';
import { createLogger } from '../../shared/logging';
import { createErrorMetrics, createServingMetrics, createStoreMetrics } from '../../shared/metrics/metrics';
import { createRegistry, serveMetrics } from '../../shared/metrics/server';
import { QUEUES } from '../../shared/queue/contracts';
import { workerConnection } from '../../shared/queue/connection';
import { linkContextFactory } from '../../shared/serving/context';
import { inferenceProcessor, recordFailure } from './processor';
import { Scheduler } from '../../shared/serving/scheduler';
import { loadServiceEngine } from '../../shared/serving/load';
import { openPrefixStore, openStore } from '../../shared/serving/store';

/** The inference worker: BullMQ consumer; requests waiting together are grouped by shared context and linked once. */
async function main() {
  const cfg = loadServiceConfig();
  const log = createLogger('worker', cfg.LOG_LEVEL);
  const engine = await loadServiceEngine(cfg);
  log.info({ model: engine.id, graph: engine.graphKind, provider: cfg.EXECUTION_PROVIDER }, 'engine loaded');
  if (cfg.WORKER_WARMUP) {
    // A linked request computes ~k tokens per chunk and its question: 256 covers 8 chunks at k = 16 with room to spare.
    const ms = await engine.warmup({ rows: cfg.WORKER_MAX_BATCH, capacity: Math.floor(cfg.WORKER_BATCH_TOKENS / cfg.WORKER_MAX_BATCH), tokens: 256 });
    log.info({ ms: Math.round(ms) }, 'engine warmed up');
  }
  const store = await openStore(cfg, engine);
  const prefixStore = await openPrefixStore(cfg, engine);
  const registry = createRegistry('worker');
  const serving = createServingMetrics(registry);
  const errors = createErrorMetrics(registry, 'worker');
  createStoreMetrics(registry, () => store.stats());
  const metrics = await serveMetrics(registry, cfg.WORKER_METRICS_PORT, cfg.METRICS_HOST);
  const redis = workerConnection(cfg.REDIS_URL);
  const keys = new CatalogKeys(cfg.CATALOG_PREFIX);
  const batches = new BatchStore(redis, keys);
  const scheduler = new Scheduler(linkContextFactory(engine, store, prefixStore), {
    maxBatch: cfg.WORKER_MAX_BATCH,
    maxBatchTokens: cfg.WORKER_BATCH_TOKENS,
    onGroup: (size, ms) => log.debug({ size, ms: Math.round(ms) }, 'group served'),
  });
  const worker = new Worker(
    QUEUES.inference,
    inferenceProcessor({
      scheduler,
      batches,
      keys,
      publisher: redis,
      tokenizer: engine.tokenizer,
      metrics: serving,
      errors,
      onDuplicate: (job) => log.info({ job: job.id }, 'result already recorded by an earlier run of this job; not counted again'),
    }),
    // Concurrency lets the worker hold several jobs at once, so the scheduler can group them; model work itself runs
    // one group at a time.
    {
      connection: workerConnection(cfg.REDIS_URL),
      prefix: cfg.QUEUE_PREFIX,
      concurrency: cfg.WORKER_CONCURRENCY,
      lockDuration: cfg.WORKER_LOCK_MS,
      stalledInterval: cfg.WORKER_STALLED_INTERVAL_MS,
      maxStalledCount: cfg.WORKER_MAX_STALLED_COUNT,
    },
  );
  worker.on('failed', (job, err) => {
    errors.count('job_failed');
    log.warn({ job: job?.id, attempts: job?.attemptsMade, err: err.message }, 'job failed');
    void recordFailure({ batches, publisher: redis, keys }, job, err).catch((e) => log.error({ err: (e as Error).message }, 'recording failure'));
  });
  worker.on('error', (err) => {
    errors.count('queue');
    log.error({ err: err.message }, 'worker error');
  });
  // A job that stalled more than maxStalledCount times (its worker died each time) is failed by the next worker that
  // takes it (BullMQ 6: a deferred failure, raised as an UnrecoverableError): the 'failed' handler above records it.
  log.info({ queue: QUEUES.inference, concurrency: cfg.WORKER_CONCURRENCY, metricsPort: cfg.WORKER_METRICS_PORT }, 'worker ready');
  return {
    log,
    close: async () => {
      await worker.close();
      await store.close();
      await prefixStore.close();
      redis.disconnect();
      metrics.close();
    },
  };
}

runService('worker', main);
