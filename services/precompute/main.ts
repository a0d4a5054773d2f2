import { Queue, Worker } from 'bullmq';
import { loadServiceConfig } from '../../shared/config';
import { runService } from '../../shared/lifecycle';
import { createLogger } from '../../shared/logging';
import { createErrorMetrics, createPrecomputeMetrics, createStoreMetrics } from '../../shared/metrics/metrics';
import { createRegistry, serveMetrics } from '../../shared/metrics/server';
import { QUEUES } from '../../shared/queue/contracts';
import { workerConnection } from '../../shared/queue/connection';
import { PrecomputeJob, precomputeChunk } from '../../shared/serving/precompute';
import { loadServiceEngine } from '../../shared/serving/load';
import { openStore } from '../../shared/serving/store';

/** The precompute worker: compiles chunks of new documents into the KV store ahead of the requests that use them. */
async function main() {
  const cfg = loadServiceConfig();
  const log = createLogger('precompute', cfg.LOG_LEVEL);
  const engine = await loadServiceEngine(cfg);
  const store = await openStore(cfg, engine);
  const registry = createRegistry('precompute');
  const queue = new Queue(QUEUES.precompute, { connection: workerConnection(cfg.REDIS_URL), prefix: cfg.QUEUE_PREFIX });
  const pm = createPrecomputeMetrics(registry, { getBacklog: () => queue.getJobCountByTypes('waiting', 'delayed', 'prioritized') });
  const errors = createErrorMetrics(registry, 'precompute');
  createStoreMetrics(registry, () => store.stats());
  const metrics = await serveMetrics(registry, cfg.PRECOMPUTE_METRICS_PORT, cfg.METRICS_HOST);
  const worker = new Worker(
    QUEUES.precompute,
    async (job) => {
      try {
        const r = await precomputeChunk(engine, store, PrecomputeJob.parse(job.data));
        pm.record(r.source === 'compiled' ? 'compiled' : 'cached', r.ms / 1000);
        return r;
      } catch (e) {
        pm.record('failed');
        errors.count('engine');
        throw e;
      }
    },
    {
      connection: workerConnection(cfg.REDIS_URL),
      prefix: cfg.QUEUE_PREFIX,
      concurrency: 1,
      lockDuration: cfg.WORKER_LOCK_MS,
      stalledInterval: cfg.WORKER_STALLED_INTERVAL_MS,
      maxStalledCount: cfg.WORKER_MAX_STALLED_COUNT,
    },
  );
  worker.on('failed', (job, err) => log.warn({ job: job?.id, err: err.message }, 'precompute failed'));
  worker.on('error', (err) => log.error({ err: err.message }, 'worker error'));
  log.info({ model: engine.id, queue: QUEUES.precompute, metricsPort: cfg.PRECOMPUTE_METRICS_PORT }, 'precompute ready');
  return {
    log,
    close: async () => {
      await worker.close();
      await queue.close();
      await store.close();
      metrics.close();
    },
  };
}

runService('precompute', main);
