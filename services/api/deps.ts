import type { Queue } from 'bullmq';
import type IORedis from 'ioredis';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import type { BatchStore, CatalogKeys, DocumentStore, FileStore } from '../../shared/catalog';
import type { ModelConfig, SamplingDefaults, TextTokenizer } from '../../shared/engine';
import type { KVStore } from '../../shared/kvstore';
import type { ErrorMetrics } from '../../shared/metrics/metrics';
import type { FairQueuing, TenantLimits } from '../../shared/qos';
import type { Router } from '../../shared/routing';
import type { Admission } from './admission';
import type { Replies } from './replies';

/** Everything the API's routes use, built once in main.ts (or by a test). */
export interface ApiDeps {
  model: ModelConfig;
  tokenizer: TextTokenizer;
  /** Sampling for the fields a request leaves out: the model's generation_config.json (GENERATION_CONFIG=auto). */
  samplingDefaults?: SamplingDefaults;
  /** The shared inference queue (any worker takes its jobs). */
  inference: Queue;
  /** Picks each job's inference queue (ROUTING); its `queues` are the shared one and every worker's own. */
  router: Router;
  precompute: Queue;
  /** Commands (fail fast when Redis is down). */
  redis: IORedis;
  /** A subscriber connection for streamed tokens. */
  subscriber: IORedis;
  /** Results pushed by workers for this process's interactive requests (absent: the job's record is polled). */
  replies?: Replies;
  keys: CatalogKeys;
  documents: DocumentStore;
  batches: BatchStore;
  files: FileStore;
  /** The KV store's Redis tier, for warm-chunk counts. */
  kv: KVStore;
  registry: Registry;
  /** `epic_errors_total{service="api",kind}`. */
  errors?: ErrorMetrics;
  /** Where the causes of 5xx answers are logged (main.ts: the service's pino logger). */
  log?: Pick<Logger, 'error' | 'warn'>;
  /** key → tenant; empty = no auth (tenant `default`). */
  apiKeys: Map<string, string>;
  shareAcrossTenants: boolean;
  requestTimeoutMs: number;
  /** The inference queue's cap (MAX_QUEUE_DEPTH): 429 past it. */
  admission: Admission;
  /** Quality of service: tenants' fair order within each queue (job priorities), and per-tenant limits (429 past them). */
  qos: { fair: FairQueuing; limits: TenantLimits };
  /** Largest JSON body (bytes, or a string like '8mb'). */
  bodyLimit?: string | number;
  /**
   * The tenant allowed on the queue dashboard (/admin/queues), which shows every tenant's jobs. Without API keys
   * (local use) everyone is; with keys, only this tenant's keys are (default 'admin'); others get 404.
   */
  adminTenant?: string;
}
