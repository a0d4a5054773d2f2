import { Queue } from 'bullmq';
import type { Server } from 'node:http';
import { BatchStore, CatalogKeys, DocumentStore, FileStore, TrackedCache, TrackingUnavailableError, type DocumentRecord } from '../../shared/catalog';
import { loadServiceConfig } from '../../shared/config';
import { runService } from '../../shared/lifecycle';
import { loadModelConfig, loadTokenizer } from '../../shared/engine';
import { KVStore } from '../../shared/kvstore';
import { createLogger } from '../../shared/logging';
import { createErrorMetrics, createQueueMetrics } from '../../shared/metrics/metrics';
import { createRegistry } from '../../shared/metrics/server';
import { QUEUES } from '../../shared/queue/contracts';
import { producerConnection, workerConnection } from '../../shared/queue/connection';
import { defaultJobOptions } from '../../shared/queue/options';
import { queueAdmission } from './admission';
import { createApiServer, createApp } from './app';
import { parseApiKeys } from './auth';
import { Replies } from './replies';

async function main() {
  const cfg = loadServiceConfig();
  const log = createLogger('api', cfg.LOG_LEVEL);
  const model = loadModelConfig(cfg.MODEL_DIR, undefined, { graphFile: cfg.MODEL_FILE });
  const tokenizer = loadTokenizer(model);
  const redis = producerConnection(cfg.REDIS_URL);
  redis.on('error', (e) => log.warn({ err: e.message }, 'queue redis error'));
  const subscriber = workerConnection(cfg.REDIS_URL);
  subscriber.on('error', (e) => log.warn({ err: e.message }, 'subscriber redis error'));
  const opts = { connection: redis, prefix: cfg.QUEUE_PREFIX, defaultJobOptions: defaultJobOptions(cfg.JOB_ATTEMPTS) };
  const inference = new Queue(QUEUES.inference, opts);
  const precompute = new Queue(QUEUES.precompute, opts);
  inference.on('error', (e) => log.warn({ err: e.message }, 'queue error'));
  precompute.on('error', (e) => log.warn({ err: e.message }, 'queue error'));
  const kv = await KVStore.open({ modelId: model.id, memory: false, disk: false, redis: { url: cfg.KV_REDIS_URL, prefix: cfg.KV_REDIS_PREFIX }, lease: false });
  const keys = new CatalogKeys(cfg.CATALOG_PREFIX);
  const docCache = cfg.DOC_CACHE_ENTRIES
    ? await new TrackedCache<DocumentRecord>(cfg.REDIS_URL, keys.docPrefix(), { max: cfg.DOC_CACHE_ENTRIES, onError: (e) => log.warn({ err: e.message }, 'document cache redis error') })
        .open()
        .catch((e: Error) => {
          throw new Error(e instanceof TrackingUnavailableError ? `${e.message}; DOC_CACHE_ENTRIES=0 runs the API without the document cache` : `document cache: ${e.message}`);
        })
    : undefined;
  const replies = await Replies.open(subscriber, (id) => keys.reply(id));
  const registry = createRegistry('api');
  createQueueMetrics(registry, [inference, precompute]);
  const errors = createErrorMetrics(registry, 'api');
  const app = createApp({
    model,
    tokenizer,
    inference,
    precompute,
    redis,
    subscriber,
    replies,
    keys,
    documents: new DocumentStore(redis, keys, docCache),
    batches: new BatchStore(redis, keys),
    files: new FileStore(redis, keys),
    kv,
    registry,
    errors,
    log,
    apiKeys: parseApiKeys(cfg.API_KEYS),
    shareAcrossTenants: cfg.KV_SHARE_ACROSS_TENANTS,
    requestTimeoutMs: cfg.REQUEST_TIMEOUT_MS,
    admission: queueAdmission(inference, cfg.MAX_QUEUE_DEPTH),
    bodyLimit: cfg.MAX_BODY_BYTES,
    adminTenant: cfg.ADMIN_TENANT,
  });
  const server: Server = createApiServer(app);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(cfg.API_PORT, cfg.API_HOST, () => {
      server.off('error', reject);
      resolve();
    });
  });
  log.info({ url: `http://${cfg.API_HOST}:${cfg.API_PORT}`, model: model.id, auth: cfg.API_KEYS ? 'api keys' : 'off' }, 'api listening');
  return {
    log,
    close: async () => {
      // Stop taking connections, close the idle ones, and give requests in flight (a completion waiting for its worker,
      // a stream) up to API_DRAIN_MS to finish before their connections are cut.
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeIdleConnections();
      const cut = setTimeout(() => server.closeAllConnections(), cfg.API_DRAIN_MS);
      await closed;
      clearTimeout(cut);
      await Promise.allSettled([replies.close(), docCache?.close(), inference.close(), precompute.close(), kv.close()]);
      redis.disconnect();
      subscriber.disconnect();
    },
  };
}

runService('api', main);
