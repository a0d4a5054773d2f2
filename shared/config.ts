import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import { CatalogKeys } from './catalog/redis';
import { parseWeights } from './qos/fair';
import { WORKER_ID_PATTERN } from './routing/keys';
import { ROUTING_MODES } from './routing/modes';
import { DEFAULT_WEIGHTS } from './routing/score';

/**
 * Service configuration from the environment, validated once. Every variable has a local default, so
 * `npm start` works on a fresh machine with Redis on 127.0.0.1:6379.
 */
const MODELS = join(__dirname, '..', 'models');

/** The project's trained model when present; the random test model otherwise (answers are then meaningless). */
export function defaultModelDir(): string {
  const trained = join(MODELS, 'epic-qa');
  return existsSync(join(trained, 'config.json')) ? trained : join(MODELS, 'tiny-random');
}

const Env = z.object({
  REDIS_URL: z.string().url().default('redis://127.0.0.1:6379'),
  /** The KV store's Redis; separate from the queue's in production (allkeys-lru vs noeviction). */
  KV_REDIS_URL: z.string().url().optional(),
  QUEUE_PREFIX: z.string().min(1).default('{epic}'),
  /**
   * Where the API's records (documents, batches, files) and its reply and stream channels live in the queue's Redis;
   * the API and the workers must agree. One {hash tag}: every record of the catalog shares a Redis Cluster slot.
   */
  CATALOG_PREFIX: z
    .string()
    .regex(/^[^{}]*\{[^{}]+\}[^{}]*$/, 'must hold exactly one {hash tag}, as in epic:{api}')
    .default(CatalogKeys.DEFAULT_PREFIX),
  MODEL_DIR: z.string().min(1).default(defaultModelDir),
  /**
   * The graph to serve, relative to MODEL_DIR, for an export that ships several (onnx-community's onnx/model_fp16.onnx,
   * onnx/model_q4f16.onnx): served as a stock graph. Unset: the folder's own graphs (config.json's epic block), else
   * model.onnx, else onnx/model.onnx.
   */
  MODEL_FILE: z.string().min(1).optional(),
  API_HOST: z.string().default('127.0.0.1'),
  API_PORT: z.coerce.number().int().min(0).max(65535).default(8080),
  /** Interface the workers' /metrics listens on (0.0.0.0 in containers). */
  METRICS_HOST: z.string().default('127.0.0.1'),
  WORKER_METRICS_PORT: z.coerce.number().int().min(0).max(65535).default(9101),
  PRECOMPUTE_METRICS_PORT: z.coerce.number().int().min(0).max(65535).default(9102),
  /** KV store tiers: process memory budget, local disk folder and budget, Redis key prefix. */
  KV_MEMORY_BYTES: z.coerce.number().int().min(0).default(512 * 1024 * 1024),
  /** Prefix mode's block pool (process memory of each worker). */
  KV_PREFIX_MEMORY_BYTES: z.coerce.number().int().min(1).default(256 * 1024 * 1024),
  KV_DISK_DIR: z.string().default(join(__dirname, '..', '.cache', 'kv')),
  KV_DISK_BYTES: z.coerce.number().int().min(0).default(4 * 1024 * 1024 * 1024),
  KV_REDIS_PREFIX: z.string().min(1).default('epic:kv'),
  EXECUTION_PROVIDER: z.enum(['cpu', 'cuda']).default('cpu'),
  ORT_THREADS: z.coerce.number().int().min(0).default(0),
  /** onnxruntime threads busy-wait between calls (faster calls, less CPU left for the rest of the machine). */
  ORT_SPINNING: z.enum(['0', '1']).default('0').transform((v) => v === '1'),
  ORT_FLUSH_DENORMALS: z.enum(['0', '1']).default('1').transform((v) => v === '1'),
  WORKER_CONCURRENCY: z.coerce.number().int().min(1).default(32),
  /** Most requests with different contexts the worker links and decodes in one batch (1: no cross-request batches). */
  WORKER_MAX_BATCH: z.coerce.number().int().min(1).default(16),
  /** Most KV slots (rows × longest row) in one such batch. */
  WORKER_BATCH_TOKENS: z.coerce.number().int().min(1).default(32768),
  /**
   * Before taking jobs, run the model at a full batch's shapes (Engine.warmup: a prefill of one row, then
   * WORKER_MAX_BATCH rows of WORKER_BATCH_TOKENS / WORKER_MAX_BATCH slots each, one point of the rows × length
   * budget), so the first requests do not pay for growing onnxruntime's memory arena.
   */
  WORKER_WARMUP: z.enum(['0', '1']).default('1').transform((v) => v === '1'),
  /**
   * BullMQ job locks (defaults are BullMQ's): a killed worker's jobs are re-run once their lock expired
   * (lockDuration) and a stall check ran (stalledInterval); a job stalled more than maxStalledCount times fails.
   */
  WORKER_LOCK_MS: z.coerce.number().int().min(100).default(30_000),
  WORKER_STALLED_INTERVAL_MS: z.coerce.number().int().min(100).default(30_000),
  WORKER_MAX_STALLED_COUNT: z.coerce.number().int().min(0).default(1),
  /** API keys as key:tenant pairs, comma separated; unset = no auth, every request is tenant 'default'. */
  API_KEYS: z.string().optional(),
  /** With API_KEYS: the tenant whose keys may open the queue dashboard /admin/queues (it shows every tenant's jobs). */
  ADMIN_TENANT: z.string().min(1).default('admin'),
  /** Share cached chunks across tenants (off: each tenant's chunks are salted apart). */
  KV_SHARE_ACROSS_TENANTS: z.enum(['true', 'false']).default('false').transform((v) => v === 'true'),
  /** Most requests waiting in the inference queue before the API answers 429. */
  MAX_QUEUE_DEPTH: z.coerce.number().int().min(1).default(100_000),
  /**
   * Document records the API keeps in memory (0: none), kept correct by Redis's client-side caching invalidations:
   * a request naming cached documents resolves them without a round trip.
   */
  DOC_CACHE_ENTRIES: z.coerce.number().int().min(0).default(10_000),
  JOB_ATTEMPTS: z.coerce.number().int().min(1).default(3),
  REQUEST_TIMEOUT_MS: z.coerce.number().int().positive().default(120_000),
  /** On SIGTERM the API stops taking connections and gives requests in flight this long to finish. */
  API_DRAIN_MS: z.coerce.number().int().min(0).default(5_000),
  /** Largest JSON body the API reads (413 past it). */
  MAX_BODY_BYTES: z.coerce.number().int().min(1024).default(8 * 1024 * 1024),
  /**
   * How the API picks an inference queue per request (shared/routing): `cache` sends it to the live worker holding
   * most of its chunks, balanced against that worker's backlog; `round-robin` cycles over the live workers; `shared`
   * puts every job on the one shared queue that every worker takes from.
   */
  ROUTING: z.enum(ROUTING_MODES).default('cache'),
  /** This worker's id (its own queue is inference-w-<id>); unset: <hostname>-<pid>. */
  WORKER_ID: z.string().regex(WORKER_ID_PATTERN, 'letters, digits, _ . - (at most 64)').optional(),
  /** Inference workers `npm start` starts (each with its own disk-tier folder and metrics port). */
  WORKERS: z.coerce.number().int().min(1).max(64).default(1),
  /**
   * Where `npm start` writes its workers' metrics endpoints for Prometheus's file-based discovery (infra/prometheus.yml
   * reads .cache/prometheus/workers.json); empty: not written.
   */
  PROMETHEUS_SD_FILE: z.string().default(join(__dirname, '..', '.cache', 'prometheus', 'workers.json')),
  /** A worker's heartbeat TTL: a dead worker's index entries vanish and its queue is adopted this long after its last beat. */
  ROUTING_HEARTBEAT_TTL_MS: z.coerce.number().int().min(100).default(10_000),
  /** λ of the routing rule: tokens one job of a worker's backlog is worth. */
  ROUTING_LOAD_WEIGHT: z.coerce.number().min(0).default(DEFAULT_WEIGHTS.load),
  /** Weight of a token whose chunk is on a worker's disk tier only (memory: 1). */
  ROUTING_DISK_WEIGHT: z.coerce.number().min(0).max(1).default(DEFAULT_WEIGHTS.disk),
  /** Weight of a token whose chunk no live worker holds, for the chunk's home worker (rendezvous hash). */
  ROUTING_HOME_WEIGHT: z.coerce.number().min(0).max(1).default(DEFAULT_WEIGHTS.home),
  /** Jobs waiting in a worker's own queue past which the router sends new jobs to the shared queue instead. */
  ROUTING_MAX_WAITING: z.coerce.number().int().min(0).default(8),
  /**
   * Work stealing (shared/routing/steal.ts): how often an idle worker looks for jobs waiting in other live workers' own
   * queues (ms; doubled up to 16× while it finds none; 0: never steals), and how many stolen jobs it runs at once.
   */
  ROUTING_STEAL_INTERVAL_MS: z.coerce.number().int().min(0).default(100),
  ROUTING_STEAL_MAX: z.coerce.number().int().min(1).default(8),
  /**
   * Quality of service (shared/serving/classes.ts, shared/qos). BATCH_MIN_SHARE: the least share of the requests a
   * worker serves that batch requests (/v1/jobs, /v1/batches) keep while interactive ones wait (0 to 0.9).
   */
  BATCH_MIN_SHARE: z.coerce.number().min(0).max(0.9).default(0.2),
  /** Batch requests in a round of their own while interactive traffic is recent (an interactive request then waits for at most such a round). */
  BATCH_STEP_WHILE_INTERACTIVE: z.coerce.number().int().min(1).default(1),
  /** Batch jobs a worker holds at once (per queue it takes batch jobs from): more than a round's worth only delays other tenants' batches. */
  WORKER_BATCH_CONCURRENCY: z.coerce.number().int().min(1).default(16),
  /** Tenants' weights in fair queuing, `tenant:weight,…` (default 1 each): a tenant of weight 2 gets twice the share of one of weight 1. */
  TENANT_WEIGHTS: z.string().default(''),
  /** Most requests of one tenant waiting to start, both classes together (0: no limit); past it, 429. */
  TENANT_MAX_QUEUED: z.coerce.number().int().min(0).default(0),
  /** Requests per second per tenant (API calls that enqueue work: a completion, a batch, a job; 0: no limit); past it, 429. */
  TENANT_RATE: z.coerce.number().min(0).default(0),
  /** TENANT_RATE's burst: requests a tenant may send at once (0: max(1, TENANT_RATE)). */
  TENANT_BURST: z.coerce.number().int().min(0).default(0),
  /** Tenants that keep their own label value in the quality-of-service metrics (per process, first seen); the rest are `other`. */
  QOS_TENANT_LABELS: z.coerce.number().int().min(0).default(20),
  /** `auto`: sampling a request leaves out comes from the model's generation_config.json (vLLM's default); `none`: greedy. */
  GENERATION_CONFIG: z.enum(['auto', 'none']).default('auto'),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
});

export type ServiceConfig = z.infer<typeof Env> & { KV_REDIS_URL: string };

export function loadServiceConfig(env: NodeJS.ProcessEnv = process.env): ServiceConfig {
  const parsed = Env.safeParse(env);
  if (!parsed.success) {
    const issues = parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ');
    throw new Error(`invalid configuration: ${issues}`);
  }
  try {
    parseWeights(parsed.data.TENANT_WEIGHTS);
  } catch (e) {
    throw new Error(`invalid configuration: ${(e as Error).message}`);
  }
  return { ...parsed.data, KV_REDIS_URL: parsed.data.KV_REDIS_URL ?? parsed.data.REDIS_URL };
}
