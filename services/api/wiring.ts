import { Queue } from 'bullmq';
import type IORedis from 'ioredis';
import { BatchStore, DocumentStore, FileStore, type DocumentRecord, type TrackedCache } from '../../shared/catalog';
import { loadGenerationConfig } from '../../shared/engine';
import { KVStore } from '../../shared/kvstore';
import { createLiveWorkersGauge, createQosMetrics, createRoutingMetrics } from '../../shared/metrics/metrics';
import { FairQueuing, QosKeys, TenantLabels, TenantLimits, type TenantLimitOptions } from '../../shared/qos';
import { QUEUES } from '../../shared/queue/contracts';
import { InferenceQueues, ResidencyReader, Router, RoutingKeys, type RoutingMode, type ScoreWeights } from '../../shared/routing';
import { defaultJobOptions } from '../../shared/queue/options';
import { queueAdmission } from './admission';
import type { ApiDeps } from './deps';
import { Replies } from './replies';

/** What the API is built from: its connections and settings (main.ts from the environment; a test from its own). */
export type ApiWiring = Pick<
  ApiDeps,
  'model' | 'tokenizer' | 'redis' | 'subscriber' | 'keys' | 'registry' | 'errors' | 'log' | 'apiKeys' | 'shareAcrossTenants' | 'requestTimeoutMs' | 'bodyLimit' | 'adminTenant'
> & {
  /** The queues' connection (default: `redis`). */
  queueConnection?: IORedis;
  queuePrefix: string;
  /** Listens to the queues' errors from the moment they exist (a Queue's unheard 'error' would throw). */
  onQueueError?: (e: Error) => void;
  /** Attempts of an inference job (defaultJobOptions). */
  jobAttempts: number;
  /** The document cache kept in step with Redis (absent: every read goes to Redis). */
  docCache?: TrackedCache<DocumentRecord>;
  /** The KV store's Redis, read for warm-chunk counts. */
  kvRedis: { url: string; prefix: string };
  /** MAX_QUEUE_DEPTH: 429 past it. */
  maxQueueDepth: number;
  /** ROUTING and its rule's settings (default: cache, with the rule's defaults; with no live worker, the shared queue). */
  routing?: { mode: RoutingMode; weights?: Partial<ScoreWeights>; maxWaiting?: number };
  /** Quality of service: tenants' weights (TENANT_WEIGHTS), per-tenant limits (default none), tenant label values kept. */
  qos?: { weights?: Map<string, number>; limits?: TenantLimitOptions; tenantLabels?: number };
  /**
   * GENERATION_CONFIG: `auto` (default) takes the sampling a request leaves out from the model's generation_config.json
   * (shared/engine/generation.ts); `none` ignores it (no temperature: greedy).
   */
  generationConfig?: 'auto' | 'none';
};

/**
 * The API's dependencies, wired once for the service and the tests alike: the queues, the KV store's Redis tier (read
 * only, no lease), the reply channel, the catalog's stores and admission. The caller closes what it opened
 * (deps.replies, the queues, deps.kv, its connections).
 */
export async function wireApi(w: ApiWiring): Promise<ApiDeps> {
  const opts = { connection: w.queueConnection ?? w.redis, prefix: w.queuePrefix, defaultJobOptions: defaultJobOptions(w.jobAttempts) };
  const inference = new Queue(QUEUES.inference, opts);
  const precompute = new Queue(QUEUES.precompute, opts);
  if (w.onQueueError) for (const q of [inference, precompute]) q.on('error', w.onQueueError);
  const queueRedis = w.queueConnection ?? w.redis;
  const routingKeys = new RoutingKeys(w.queuePrefix);
  const queues = new InferenceQueues(opts, queueRedis, routingKeys, inference, w.onQueueError);
  const reader = new ResidencyReader(queueRedis, routingKeys);
  const decisions = createRoutingMetrics(w.registry);
  createLiveWorkersGauge(w.registry, () => reader.lastLive().length);
  const router = new Router({
    mode: w.routing?.mode ?? 'cache',
    modelId: w.model.id,
    queues,
    reader,
    ...(w.routing?.weights ? { weights: w.routing.weights } : {}),
    ...(w.routing?.maxWaiting !== undefined ? { maxWaiting: w.routing.maxWaiting } : {}),
    onDecision: decisions.count,
  });
  const qosKeys = new QosKeys(w.queuePrefix);
  const limits = new TenantLimits(queueRedis, qosKeys, w.qos?.limits ?? { maxQueued: 0, rate: 0 });
  createQosMetrics(w.registry, { labels: new TenantLabels(w.qos?.tenantLabels ?? 20), waiting: () => limits.waiting() });
  const kv = await KVStore.open({ modelId: w.model.id, memory: false, disk: false, redis: { url: w.kvRedis.url, prefix: w.kvRedis.prefix }, lease: false });
  const replies = await Replies.open(w.subscriber, (id) => w.keys.reply(id));
  return {
    model: w.model,
    tokenizer: w.tokenizer,
    ...(w.generationConfig === 'none' ? {} : { samplingDefaults: loadGenerationConfig(w.model.dir).sampling }),
    inference,
    router,
    precompute,
    redis: w.redis,
    subscriber: w.subscriber,
    replies,
    keys: w.keys,
    documents: new DocumentStore(w.redis, w.keys, w.docCache),
    batches: new BatchStore(w.redis, w.keys),
    files: new FileStore(w.redis, w.keys),
    kv,
    registry: w.registry,
    ...(w.errors ? { errors: w.errors } : {}),
    ...(w.log ? { log: w.log } : {}),
    apiKeys: w.apiKeys,
    shareAcrossTenants: w.shareAcrossTenants,
    requestTimeoutMs: w.requestTimeoutMs,
    admission: queueAdmission(queues, w.maxQueueDepth),
    qos: { fair: new FairQueuing(queueRedis, qosKeys, w.qos?.weights), limits },
    ...(w.bodyLimit !== undefined ? { bodyLimit: w.bodyLimit } : {}),
    ...(w.adminTenant !== undefined ? { adminTenant: w.adminTenant } : {}),
  };
}
