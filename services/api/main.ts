import { Queue, QueueEvents } from 'bullmq';
import type { Server } from 'node:http';
import { loadServiceConfig } from '../../shared/config';
import { loadModelConfig, loadTokenizer } from '../../shared/engine';
import { createLogger } from '../../shared/logging';
import { createRegistry } from '../../shared/metrics/server';
import { QUEUES } from '../../shared/queue/contracts';
import { producerConnection, workerConnection } from '../../shared/queue/connection';
import { defaultJobOptions } from '../../shared/queue/options';
import { createApp } from './app';

async function main() {
  const cfg = loadServiceConfig();
  const log = createLogger('api', cfg.LOG_LEVEL);
  const model = loadModelConfig(cfg.MODEL_DIR);
  const tokenizer = loadTokenizer(model);
  const conn = producerConnection(cfg.REDIS_URL);
  conn.on('error', (e) => log.warn({ err: e.message }, 'queue redis error'));
  const inference = new Queue(QUEUES.inference, {
    connection: conn,
    prefix: cfg.QUEUE_PREFIX,
    defaultJobOptions: defaultJobOptions(cfg.JOB_ATTEMPTS),
  });
  const inferenceEvents = new QueueEvents(QUEUES.inference, { connection: workerConnection(cfg.REDIS_URL), prefix: cfg.QUEUE_PREFIX });
  const registry = createRegistry('api');
  const app = createApp({
    model,
    tokenizer,
    inference,
    inferenceEvents,
    registry,
    ping: () => conn.ping(),
    requestTimeoutMs: cfg.REQUEST_TIMEOUT_MS,
  });
  const server: Server = await new Promise((resolve, reject) => {
    const s = app.listen(cfg.API_PORT, cfg.API_HOST, (err?: Error) => (err ? reject(err) : resolve(s)));
  });
  log.info({ url: `http://${cfg.API_HOST}:${cfg.API_PORT}`, model: model.id }, 'api listening');
  const shutdown = async (signal: string) => {
    log.info({ signal }, 'api shutting down');
    server.close();
    await Promise.allSettled([inferenceEvents.close(), inference.close()]);
    conn.disconnect();
    process.exit(0);
  };
  process.once('SIGTERM', () => void shutdown('SIGTERM'));
  process.once('SIGINT', () => void shutdown('SIGINT'));
}

main().catch((e) => {
  console.error(`api: ${e instanceof Error ? e.message : String(e)}`);
  process.exit(1);
});
