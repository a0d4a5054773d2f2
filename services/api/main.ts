import type { Server } from 'node:http';
import { CatalogKeys, TrackedCache, TrackingUnavailableError, type DocumentRecord } from '../../shared/catalog';
import { loadServiceConfig } from '../../shared/config';
import { runService } from '../../shared/lifecycle';
import { loadModelConfig, loadTokenizer } from '../../shared/engine';
import { createLogger } from '../../shared/logging';
import { createErrorMetrics, createQueueMetrics } from '../../shared/metrics/metrics';
import { createRegistry } from '../../shared/metrics/server';
import { producerConnection, workerConnection } from '../../shared/queue/connection';
import { createApiServer, createApp } from './app';
import { parseApiKeys } from './auth';
import { parseWeights } from '../../shared/qos';
import { wireApi } from './wiring';

async function main() {
  const cfg = loadServiceConfig();
  const log = createLogger('api', cfg.LOG_LEVEL);
  const model = loadModelConfig(cfg.MODEL_DIR, undefined, { graphFile: cfg.MODEL_FILE });
  const tokenizer = loadTokenizer(model);
  const redis = producerConnection(cfg.REDIS_URL);
  redis.on('error', (e) => log.warn({ err: e.message }, 'queue redis error'));
  const subscriber = workerConnection(cfg.REDIS_URL);
  subscriber.on('error', (e) => log.warn({ err: e.message }, 'subscriber redis error'));
  const keys = new CatalogKeys(cfg.CATALOG_PREFIX);
  const docCache = cfg.DOC_CACHE_ENTRIES
    ? await new TrackedCache<DocumentRecord>(cfg.REDIS_URL, keys.docPrefix(), { max: cfg.DOC_CACHE_ENTRIES, onError: (e) => log.warn({ err: e.message }, 'document cache redis error') })
        .open()
        .catch((e: Error) => {
          throw new Error(e instanceof TrackingUnavailableError ? `${e.message}; DOC_CACHE_ENTRIES=0 runs the API without the document cache` : `document cache: ${e.message}`);
        })
    : undefined;
  const registry = createRegistry('api');
  const errors = createErrorMetrics(registry, 'api');
  const deps = await wireApi({
    model,
    tokenizer,
    generationConfig: cfg.GENERATION_CONFIG,
    redis,
    subscriber,
    queuePrefix: cfg.QUEUE_PREFIX,
    onQueueError: (e) => log.warn({ err: e.message }, 'queue error'),
    jobAttempts: cfg.JOB_ATTEMPTS,
    keys,
    docCache,
    kvRedis: { url: cfg.KV_REDIS_URL, prefix: cfg.KV_REDIS_PREFIX },
    registry,
    errors,
    log,
    apiKeys: parseApiKeys(cfg.API_KEYS),
    shareAcrossTenants: cfg.KV_SHARE_ACROSS_TENANTS,
    requestTimeoutMs: cfg.REQUEST_TIMEOUT_MS,
    maxQueueDepth: cfg.MAX_QUEUE_DEPTH,
    routing: {
      mode: cfg.ROUTING,
      weights: { load: cfg.ROUTING_LOAD_WEIGHT, disk: cfg.ROUTING_DISK_WEIGHT, home: cfg.ROUTING_HOME_WEIGHT },
      maxWaiting: cfg.ROUTING_MAX_WAITING,
    },
    bodyLimit: cfg.MAX_BODY_BYTES,
    adminTenant: cfg.ADMIN_TENANT,
    qos: {
      weights: parseWeights(cfg.TENANT_WEIGHTS),
      limits: { maxQueued: cfg.TENANT_MAX_QUEUED, rate: cfg.TENANT_RATE, ...(cfg.TENANT_BURST ? { burst: cfg.TENANT_BURST } : {}) },
      tenantLabels: cfg.QOS_TENANT_LABELS,
    },
  });
  const { inference, precompute, kv, router } = deps;
  const replies = deps.replies!;
  createQueueMetrics(registry, [inference, router.queues.sharedBatch, precompute]);
  const app = createApp(deps);
  const server: Server = createApiServer(app);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(cfg.API_PORT, cfg.API_HOST, () => {
      server.off('error', reject);
      resolve();
    });
  });
  log.info({ url: `http://${cfg.API_HOST}:${cfg.API_PORT}`, model: model.id, auth: cfg.API_KEYS ? 'api keys' : 'off', routing: cfg.ROUTING }, 'api listening');
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
      await Promise.allSettled([replies.close(), docCache?.close(), router.queues.close(), precompute.close(), kv.close()]);
      redis.disconnect();
      subscriber.disconnect();
    },
  };
}

runService('api', main);
