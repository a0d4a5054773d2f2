import { Worker } from 'bullmq';
import { loadServiceConfig } from '../../shared/config';
import { Engine } from '../../shared/engine';
import { createLogger } from '../../shared/logging';
import { createRegistry, serveMetrics } from '../../shared/metrics/server';
import { GenerateJob, QUEUES } from '../../shared/queue/contracts';
import { workerConnection } from '../../shared/queue/connection';
import { generateCompletion } from '../../shared/serving/generate';

/** The inference worker: consumes inference jobs and runs them on the engine. */
async function main() {
  const cfg = loadServiceConfig();
  const log = createLogger('worker', cfg.LOG_LEVEL);
  const engine = await Engine.load(cfg.MODEL_DIR, { executionProvider: cfg.EXECUTION_PROVIDER, intraOpThreads: cfg.ORT_THREADS });
  log.info({ model: engine.id, graph: engine.graphKind, provider: cfg.EXECUTION_PROVIDER }, 'engine loaded');
  const registry = createRegistry('worker');
  const metrics = await serveMetrics(registry, cfg.WORKER_METRICS_PORT);
  const worker = new Worker(
    QUEUES.inference,
    async (job) => {
      const data = GenerateJob.parse(job.data);
      return generateCompletion(engine, data);
    },
    { connection: workerConnection(cfg.REDIS_URL), prefix: cfg.QUEUE_PREFIX, concurrency: cfg.WORKER_CONCURRENCY },
  );
  worker.on('failed', (job, err) => log.warn({ job: job?.id, err: err.message }, 'job failed'));
  worker.on('error', (err) => log.error({ err: err.message }, 'worker error'));
  log.info({ queue: QUEUES.inference, metricsPort: cfg.WORKER_METRICS_PORT }, 'worker ready');
  const shutdown = async (signal: string) => {
    log.info({ signal }, 'worker shutting down');
    await worker.close();
    metrics.close();
    process.exit(0);
  };
  process.once('SIGTERM', () => void shutdown('SIGTERM'));
  process.once('SIGINT', () => void shutdown('SIGINT'));
}

main().catch((e) => {
  console.error(`worker: ${e instanceof Error ? e.message : String(e)}`);
  process.exit(1);
});
