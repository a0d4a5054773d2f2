/**
 * The project's Prometheus metrics, all under `epic_` and named the Prometheus way (base units; `_seconds`, `_bytes`,
 * `_total`). Each factory takes a Registry and returns plain prom-client handles plus small typed helpers; call each
 * factory at most once per registry (prom-client refuses a second registration of a name).
 *
 * Labels are bounded: `mode` is one of the link modes (or `other`), `status`, `kind`, `result`, `tier`, `state`,
 * `decision` are fixed sets, `queue` is a queue name, `service` a service name, `worker` (a worker's default label) its id,
 * `class` a request class; `tenant` (quality of service's metrics only) is bounded by shared/qos's TenantLabels: the
 * first QOS_TENANT_LABELS tenants a process sees keep their names, the rest are `other`. No request ids, keys or
 * prompt text.
 *
 * Names follow vLLM v1 where one exists (`vllm:time_to_first_token_seconds` → `epic_time_to_first_token_seconds`, with
 * its buckets); hit rates are ratios of counter rates in PromQL, never precomputed gauges.
 */
import { Counter, Gauge, Histogram, collectDefaultMetrics } from 'prom-client';
import type { Registry } from 'prom-client';
import { TIERS, type TierName, type TierStats } from '../kvstore/backend';
import type { KVStoreStats } from '../kvstore/store';
import { LINK_MODES } from '../linking/types';
import { ROUTING_DECISIONS, type RoutingDecision } from '../routing/modes';
import { REQUEST_CLASSES, type RequestClass } from '../queue/contracts';
import { TenantLabels } from '../qos/labels';

export const METRIC_PREFIX = 'epic_';

// ——— buckets ———

/** vLLM v1's `time_to_first_token_seconds` buckets. */
export const TTFT_BUCKETS = [
  0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 20, 40, 80, 160, 640, 2560,
];
/** vLLM v1's request latency buckets (0.3 s … 7680 s), extended downwards for a small model on CPU. */
export const REQUEST_LATENCY_BUCKETS = [
  0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.8, 1, 1.5, 2, 2.5, 5, 10, 15, 20, 30, 40, 50, 60, 120, 240, 480,
  960, 1920, 7680,
];
/** vLLM v1's time-per-output-token buckets, extended downwards. */
export const TPOT_BUCKETS = [
  0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 20, 40,
  80,
];
/** One chunk's compile, from milliseconds (small model, short chunk) to a minute. */
export const PRECOMPUTE_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

// ——— bounded label values ———

/** The `mode` label: a link mode, or `other` for anything else (so a caller can never blow up cardinality). */
export const MODE_LABELS = [...LINK_MODES, 'other'] as const;
export type ModeLabel = (typeof MODE_LABELS)[number];

/** Maps a mode or a mode label with its option (`attnlink-16`, `cacheblend-15`) to a bounded label value. */
export function boundedMode(mode: string | undefined): ModeLabel {
  if (!mode) return 'other';
  const base = mode.split('-')[0];
  return (LINK_MODES as readonly string[]).includes(base) ? (base as ModeLabel) : 'other';
}

/** How a request ended. */
export const REQUEST_STATUSES = ['ok', 'error', 'timeout', 'rejected', 'cancelled'] as const;
export type RequestStatus = (typeof REQUEST_STATUSES)[number];

/** What went wrong, for `epic_errors_total{service,kind}`. */
export const ERROR_KINDS = [
  'bad_request', // a client error answered 4xx (validation, context length)
  'engine', // model load or inference failure
  'kvstore', // KV store failure (not a cache miss)
  'queue', // BullMQ / queue Redis failure
  'redis', // KV Redis failure
  'timeout', // a request or job that ran past its deadline
  'job_failed', // a job that failed (after its attempts)
  'internal', // anything else, answered 5xx
] as const;
export type ErrorKind = (typeof ERROR_KINDS)[number];

export const PRECOMPUTE_RESULTS = ['compiled', 'cached', 'failed'] as const;
export type PrecomputeResult = (typeof PRECOMPUTE_RESULTS)[number];

/** BullMQ states exported by createQueueMetrics. */
export const QUEUE_STATES = ['waiting', 'active', 'delayed', 'completed', 'failed', 'paused', 'prioritized', 'waiting-children'] as const;
export type QueueState = (typeof QUEUE_STATES)[number];

/** The KV store's tiers, fastest first (kvstore's TIERS). */
export const KV_TIERS: readonly TierName[] = TIERS;
export const LOOKUP_RESULTS = ['hit', 'miss'] as const;

// ——— process metrics ———

/** Node's process and runtime metrics (`epic_process_cpu_seconds_total`, `epic_process_resident_memory_bytes`, …). */
export function registerProcessMetrics(registry: Registry): void {
  if (registry.getSingleMetric(`${METRIC_PREFIX}process_cpu_seconds_total`)) return; // already there (idempotent)
  collectDefaultMetrics({ register: registry, prefix: METRIC_PREFIX });
  // prom-client's `nodejs_active_{handles,requests,resources}_total` are gauges named like counters (promtool rejects
  // them); the same numbers remain as `epic_nodejs_active_*{type}` (sum over type).
  for (const what of ['handles', 'requests', 'resources']) {
    registry.removeSingleMetric(`${METRIC_PREFIX}nodejs_active_${what}_total`);
  }
}

// ——— serving ———

/** Requests served together (powers of two up to the scheduler's largest group). */
export const BATCH_BUCKETS = [1, 2, 4, 8, 16, 32, 64];

/** What one request did; every field but mode and status is optional (a rejected request has no timings). */
export interface RequestRecord {
  /** Link mode or mode label (`attnlink-16` is fine); normalised by boundedMode. */
  mode: string | undefined;
  status: RequestStatus;
  /** Enqueue → a worker takes it. */
  queueSeconds?: number;
  /** Arrival (or enqueue) → first token. */
  ttftSeconds?: number;
  /** Worker: start → first token's logits (chunk fetch, link, prefill). */
  prefillSeconds?: number;
  /** Worker: first token → last token. */
  decodeSeconds?: number;
  /** Arrival → response. */
  e2eSeconds?: number;
  promptTokens?: number;
  generationTokens?: number;
  /** Prompt tokens whose KV was read from a cache (a hit) and not recomputed; `usage.prompt_tokens_details.cached_tokens`. */
  cachedTokens?: number;
  /** Prompt tokens run through the model (full: all; attnlink: k per chunk + question). */
  recomputedTokens?: number;
  /** Prompt tokens of chunks compiled on a miss for this request (not read from the KV store). */
  compiledTokens?: number;
  /** Requests computed in the same forward calls as this one (a shared-context group or a batch of contexts). */
  batchSize?: number;
}

export interface ServingMetrics {
  ttft: Histogram<'mode'>;
  batchSize: Histogram<'mode'>;
  e2eLatency: Histogram<'mode'>;
  queueTime: Histogram;
  prefillTime: Histogram<'mode'>;
  decodeTime: Histogram<'mode'>;
  timePerOutputToken: Histogram<'mode'>;
  promptTokens: Counter<'mode'>;
  generationTokens: Counter<'mode'>;
  cachedTokens: Counter<'mode'>;
  recomputedTokens: Counter<'mode'>;
  compiledTokens: Counter<'mode'>;
  requests: Counter<'mode' | 'status'>;
  requestsRunning: Gauge;
  requestsWaiting: Gauge;
  /** Observes everything a RequestRecord carries (the usual way to use these metrics). */
  record(r: RequestRecord): void;
}

/**
 * Request-level metrics (worker and API):
 * `epic_time_to_first_token_seconds{mode}`, `epic_e2e_request_latency_seconds{mode}`, `epic_request_queue_time_seconds`,
 * `epic_request_prefill_time_seconds{mode}`, `epic_request_decode_time_seconds{mode}`,
 * `epic_time_per_output_token_seconds{mode}`, `epic_prompt_tokens_total{mode}`, `epic_generation_tokens_total{mode}`,
 * `epic_cached_tokens_total{mode}`, `epic_recomputed_tokens_total{mode}`, `epic_compiled_tokens_total{mode}`, `epic_requests_total{mode,status}`,
 * `epic_requests_running`, `epic_requests_waiting`.
 */
export function createServingMetrics(registry: Registry): ServingMetrics {
  const registers = [registry];
  const hist = (name: string, help: string, buckets: number[], labelNames: 'mode'[] = ['mode']) =>
    new Histogram<'mode'>({ name: METRIC_PREFIX + name, help, buckets, labelNames, registers });
  const counter = (name: string, help: string) =>
    new Counter<'mode'>({ name: METRIC_PREFIX + name, help, labelNames: ['mode'], registers });

  const m = {
    ttft: hist('time_to_first_token_seconds', 'Time to first token in seconds, by link mode.', TTFT_BUCKETS),
    batchSize: hist('batch_size_requests', 'Requests computed in the same forward calls as a request (shared-context group or batch of contexts), by link mode.', BATCH_BUCKETS),
    e2eLatency: hist('e2e_request_latency_seconds', 'End-to-end request latency in seconds, by link mode.', REQUEST_LATENCY_BUCKETS),
    queueTime: new Histogram({
      name: METRIC_PREFIX + 'request_queue_time_seconds',
      help: 'Time a request waited in the queue before a worker took it, in seconds.',
      buckets: REQUEST_LATENCY_BUCKETS,
      registers,
    }),
    prefillTime: hist('request_prefill_time_seconds', 'Time from a worker taking a request to its first token logits (fetch, link, prefill), in seconds.', REQUEST_LATENCY_BUCKETS),
    decodeTime: hist('request_decode_time_seconds', 'Time from the first to the last generated token, in seconds.', REQUEST_LATENCY_BUCKETS),
    timePerOutputToken: hist('time_per_output_token_seconds', 'Decode time per generated token after the first, in seconds.', TPOT_BUCKETS),
    promptTokens: counter('prompt_tokens_total', 'Prompt tokens processed, by link mode.'),
    generationTokens: counter('generation_tokens_total', 'Tokens generated, by link mode.'),
    cachedTokens: counter('cached_tokens_total', 'Prompt tokens whose KV was read from the cache (a hit in any tier) and not recomputed, by link mode.'),
    recomputedTokens: counter('recomputed_tokens_total', 'Prompt tokens run through the model (not served from the cache), by link mode.'),
    compiledTokens: counter('compiled_tokens_total', "Prompt tokens of chunks compiled on a miss for a request (their KV was not in the cache; a group's shared context counts for each request), by link mode."),
    requests: new Counter<'mode' | 'status'>({
      name: METRIC_PREFIX + 'requests_total',
      help: 'Requests finished, by link mode and outcome.',
      labelNames: ['mode', 'status'],
      registers,
    }),
    requestsRunning: new Gauge({ name: METRIC_PREFIX + 'requests_running', help: 'Requests being processed now.', registers }),
    requestsWaiting: new Gauge({ name: METRIC_PREFIX + 'requests_waiting', help: 'Requests accepted and waiting for a worker.', registers }),
  };
  // Known label values start at 0, so rates and ratios have series before the first request.
  for (const mode of MODE_LABELS) {
    for (const c of [m.promptTokens, m.generationTokens, m.cachedTokens, m.recomputedTokens, m.compiledTokens]) c.inc({ mode }, 0);
    for (const status of REQUEST_STATUSES) m.requests.inc({ mode, status }, 0);
  }

  const obs = (h: Histogram<'mode'>, mode: ModeLabel, v: number | undefined) => {
    if (v !== undefined && Number.isFinite(v) && v >= 0) h.observe({ mode }, v);
  };
  const add = (c: Counter<'mode'>, mode: ModeLabel, v: number | undefined) => {
    if (v !== undefined && Number.isFinite(v) && v > 0) c.inc({ mode }, v);
  };
  return {
    ...m,
    record(r: RequestRecord): void {
      const mode = boundedMode(r.mode);
      m.requests.inc({ mode, status: r.status });
      if (r.queueSeconds !== undefined && Number.isFinite(r.queueSeconds) && r.queueSeconds >= 0) m.queueTime.observe(r.queueSeconds);
      obs(m.ttft, mode, r.ttftSeconds);
      obs(m.prefillTime, mode, r.prefillSeconds);
      obs(m.decodeTime, mode, r.decodeSeconds);
      obs(m.e2eLatency, mode, r.e2eSeconds);
      obs(m.batchSize, mode, r.batchSize);
      if (r.decodeSeconds !== undefined && r.generationTokens !== undefined && r.generationTokens > 1) {
        obs(m.timePerOutputToken, mode, r.decodeSeconds / (r.generationTokens - 1));
      }
      add(m.promptTokens, mode, r.promptTokens);
      add(m.generationTokens, mode, r.generationTokens);
      add(m.cachedTokens, mode, r.cachedTokens);
      add(m.recomputedTokens, mode, r.recomputedTokens);
      add(m.compiledTokens, mode, r.compiledTokens);
    },
  };
}

// ——— errors ———

export interface ErrorMetrics {
  errors: Counter<'service' | 'kind'>;
  /** Counts n errors of a kind for this service. */
  count(kind: ErrorKind, n?: number): void;
}

/** `epic_errors_total{service,kind}`, every kind pre-set to 0 for `service`. */
export function createErrorMetrics(registry: Registry, service: string): ErrorMetrics {
  const errors = new Counter<'service' | 'kind'>({
    name: METRIC_PREFIX + 'errors_total',
    help: 'Errors by service and kind.',
    labelNames: ['service', 'kind'],
    registers: [registry],
  });
  for (const kind of ERROR_KINDS) errors.inc({ service, kind }, 0);
  return {
    errors,
    count(kind: ErrorKind, n = 1): void {
      errors.inc({ service, kind: (ERROR_KINDS as readonly string[]).includes(kind) ? kind : 'internal' }, n);
    },
  };
}

// ——— KV store ———

type Labels<L extends string> = Partial<Record<L, string>>;

/**
 * A Counter fed from a cumulative statistic at scrape time: each collect() adds the growth since the previous one, so
 * PromQL's rate() and increase() work. A value that went down (the store was reopened) counts from zero again.
 */
function cumulativeCounter<L extends string>(
  registry: Registry,
  name: string,
  help: string,
  labelNames: L[],
  read: () => Array<[Labels<L>, number]> | undefined,
): Counter<L> {
  const last = new Map<string, number>();
  return new Counter<L>({
    name: METRIC_PREFIX + name,
    help,
    labelNames,
    registers: [registry],
    collect() {
      const values = read();
      if (!values) return;
      for (const [labels, value] of values) {
        if (!Number.isFinite(value) || value < 0) continue;
        const key = labelNames.map((l) => labels[l] ?? '').join('\u0000');
        const prev = last.get(key) ?? 0;
        last.set(key, value);
        this.inc(labels, value >= prev ? value - prev : value);
      }
    },
  });
}

export interface StoreMetrics {
  chunkLookups: Counter<'tier' | 'result'>;
  lookups: Counter<'result'>;
  bytes: Gauge<'tier'>;
  budgetBytes: Gauge<'tier'>;
  entries: Gauge<'tier'>;
  puts: Counter<'tier'>;
  evictions: Counter<'tier'>;
  corruptBlobs: Counter<'tier'>;
  incompatibleBlobs: Counter<'tier'>;
  tierErrors: Counter<'tier'>;
  readBytes: Counter<'tier'>;
  writtenBytes: Counter<'tier'>;
  compiles: Counter;
  compileErrors: Counter;
  compileSeconds: Counter;
  promotions: Counter;
  singleFlightJoins: Counter;
  remoteWaits: Counter;
  remoteWaitHits: Counter;
  remoteWaitTimeouts: Counter;
  leaseTakeovers: Counter;
  writeErrors: Counter;
}

/**
 * The tiered KV store's `stats()` as metrics, read at scrape time (getStats may return undefined before the store
 * opens):
 * per tier `epic_kv_chunk_lookups_total{tier,result}` (hit/miss), `epic_kv_bytes{tier}`, `epic_kv_budget_bytes{tier}`,
 * `epic_kv_entries{tier}`, `epic_kv_puts_total{tier}`, `epic_kv_evictions_total{tier}`,
 * `epic_kv_corrupt_blobs_total{tier}`, `epic_kv_incompatible_blobs_total{tier}`, `epic_kv_tier_errors_total{tier}`,
 * `epic_kv_read_bytes_total{tier}`, `epic_kv_written_bytes_total{tier}`;
 * store-wide `epic_kv_lookups_total{result}`, `epic_kv_compiles_total`, `epic_kv_compile_errors_total`,
 * `epic_kv_compile_seconds_total`, `epic_kv_promotions_total`, `epic_kv_single_flight_joins_total`,
 * `epic_kv_remote_waits_total`, `epic_kv_remote_wait_hits_total`, `epic_kv_remote_wait_timeouts_total`,
 * `epic_kv_lease_takeovers_total`, `epic_kv_write_errors_total`.
 * A shared Redis tier reports no bytes/entries (this process cannot know them): those series are absent.
 */
export function createStoreMetrics(registry: Registry, readStats: () => KVStoreStats | undefined): StoreMetrics {
  // One stats() call per scrape: prom-client runs every synchronous collect() in one go, so a snapshot kept until the
  // next microtask is shared by all of them (and hits, misses and bytes come from the same instant).
  let cached: KVStoreStats | undefined;
  let fresh = false;
  const getStats = (): KVStoreStats | undefined => {
    if (!fresh) {
      cached = readStats();
      fresh = true;
      queueMicrotask(() => {
        fresh = false;
        cached = undefined;
      });
    }
    return cached;
  };
  const tiers = (): Array<[TierName, TierStats]> | undefined => {
    const s = getStats();
    if (!s) return undefined;
    return KV_TIERS.filter((t) => s.tiers[t]).map((t) => [t, s.tiers[t]!]);
  };
  const perTier = (name: string, help: string, field: keyof TierStats) =>
    cumulativeCounter<'tier'>(registry, name, help, ['tier'], () => tiers()?.map(([tier, s]) => [{ tier }, s[field] as number]));
  const store = (name: string, help: string, field: keyof KVStoreStats) =>
    cumulativeCounter<never>(registry, name, help, [], () => {
      const s = getStats();
      return s ? [[{}, s[field] as number]] : undefined;
    });
  const perTierGauge = (name: string, help: string, field: 'bytes' | 'entries' | 'budgetBytes') =>
    new Gauge<'tier'>({
      name: METRIC_PREFIX + name,
      help,
      labelNames: ['tier'],
      registers: [registry],
      collect() {
        const ts = tiers();
        this.reset();
        for (const [tier, s] of ts ?? []) {
          const v = s[field];
          if (v !== null && Number.isFinite(v)) this.set({ tier }, v);
        }
      },
    });

  return {
    chunkLookups: cumulativeCounter<'tier' | 'result'>(
      registry,
      'kv_chunk_lookups_total',
      'Chunk lookups per KV tier, by result (hit/miss). Hit rate = rate(hit) / rate(all).',
      ['tier', 'result'],
      () => tiers()?.flatMap(([tier, s]): Array<[Labels<'tier' | 'result'>, number]> => [
        [{ tier, result: 'hit' }, s.hits],
        [{ tier, result: 'miss' }, s.misses],
      ]),
    ),
    lookups: cumulativeCounter<'result'>(registry, 'kv_lookups_total', 'Store-level chunk lookups over all tiers, by result (hit/miss).', ['result'], () => {
      const s = getStats();
      return s ? [[{ result: 'hit' }, s.hits], [{ result: 'miss' }, s.misses]] : undefined;
    }),
    bytes: perTierGauge('kv_bytes', 'KV bytes held by this process per tier.', 'bytes'),
    budgetBytes: perTierGauge('kv_budget_bytes', 'Configured KV byte budget per tier.', 'budgetBytes'),
    entries: perTierGauge('kv_entries', 'KV chunks held by this process per tier.', 'entries'),
    puts: perTier('kv_puts_total', 'Chunks written per tier.', 'puts'),
    evictions: perTier('kv_evictions_total', 'Chunks evicted per tier (LRU by bytes).', 'evictions'),
    corruptBlobs: perTier('kv_corrupt_blobs_total', 'Blobs that failed integrity checks, deleted and recomputed, per tier.', 'corrupt'),
    incompatibleBlobs: perTier('kv_incompatible_blobs_total', 'Intact blobs of another format, model or shape, deleted, per tier.', 'incompatible'),
    tierErrors: perTier('kv_tier_errors_total', 'I/O or connection errors per tier (treated as misses or skipped writes).', 'errors'),
    readBytes: perTier('kv_read_bytes_total', 'KV bytes read per tier.', 'bytesRead'),
    writtenBytes: perTier('kv_written_bytes_total', 'KV bytes written per tier.', 'bytesWritten'),
    compiles: store('kv_compiles_total', 'Chunks compiled by this process on a miss.', 'computes'),
    compileErrors: store('kv_compile_errors_total', 'Chunk compiles that failed.', 'computeErrors'),
    compileSeconds: store('kv_compile_seconds_total', 'Seconds spent compiling chunks on a miss.', 'computeSeconds'),
    promotions: store('kv_promotions_total', 'Hits copied into faster tiers.', 'promotions'),
    singleFlightJoins: store('kv_single_flight_joins_total', 'Lookups that joined an in-flight lookup or compile of the same chunk in this process.', 'singleFlightJoins'),
    remoteWaits: store('kv_remote_waits_total', "Misses that waited for another process's compile.", 'remoteWaits'),
    remoteWaitHits: store('kv_remote_wait_hits_total', "Remote waits that got the other process's blob.", 'remoteHits'),
    remoteWaitTimeouts: store('kv_remote_wait_timeouts_total', 'Remote waits that timed out and compiled locally.', 'remoteWaitTimeouts'),
    leaseTakeovers: store('kv_lease_takeovers_total', 'Compile leases taken over after the holder vanished without a blob.', 'leaseTakeovers'),
    writeErrors: store('kv_write_errors_total', 'Failed tier writes (the chunk was still served).', 'writeErrors'),
  };
}

// ——— precompute ———

export interface PrecomputeMetrics {
  latency: Histogram;
  backlog: Gauge;
  chunks: Counter<'result'>;
  /** Counts one chunk; observes its latency when given. */
  record(result: PrecomputeResult, seconds?: number): void;
}

export interface PrecomputeMetricsOptions {
  /** Read at scrape time into `epic_precompute_backlog` (else set `backlog` yourself). */
  getBacklog?: () => number | Promise<number>;
  /** Longest a scrape waits for getBacklog (default 1000 ms). */
  timeoutMs?: number;
}

/** `epic_precompute_latency_seconds`, `epic_precompute_backlog` (chunks waiting), `epic_precompute_chunks_total{result}`. */
export function createPrecomputeMetrics(registry: Registry, opts: PrecomputeMetricsOptions = {}): PrecomputeMetrics {
  const registers = [registry];
  const latency = new Histogram({
    name: METRIC_PREFIX + 'precompute_latency_seconds',
    help: 'Time to precompute one chunk (lookup, compile, store), in seconds.',
    buckets: PRECOMPUTE_BUCKETS,
    registers,
  });
  const getBacklog = opts.getBacklog;
  const backlog = new Gauge({
    name: METRIC_PREFIX + 'precompute_backlog',
    help: 'Chunks waiting to be precomputed.',
    registers,
    ...(getBacklog
      ? {
          async collect(this: Gauge) {
            try {
              this.set(await withTimeout(Promise.resolve(getBacklog()), opts.timeoutMs ?? 1000));
            } catch {
              // keep the last value; a scrape must not fail because Redis is slow
            }
          },
        }
      : {}),
  });
  const chunks = new Counter<'result'>({
    name: METRIC_PREFIX + 'precompute_chunks_total',
    help: 'Chunks precomputed, by result (compiled, cached: already stored, failed).',
    labelNames: ['result'],
    registers,
  });
  for (const result of PRECOMPUTE_RESULTS) chunks.inc({ result }, 0);
  return {
    latency,
    backlog,
    chunks,
    record(result: PrecomputeResult, seconds?: number): void {
      chunks.inc({ result });
      if (seconds !== undefined && Number.isFinite(seconds) && seconds >= 0) latency.observe(seconds);
    },
  };
}

// ——— BullMQ queues ———

/** What createQueueMetrics needs of a BullMQ Queue. */
export interface QueueLike {
  readonly name: string;
  getJobCounts(...types: never[]): Promise<Record<string, number>>;
}

export interface QueueMetrics {
  jobs: Gauge<'queue' | 'state'>;
  scrapeErrors: Counter<'queue'>;
}

/**
 * `epic_queue_jobs{queue,state}` from `queue.getJobCounts()` at scrape time (states: QUEUE_STATES), and
 * `epic_queue_scrape_errors_total{queue}`. A queue whose counts fail or take longer than timeoutMs (default 1000 ms;
 * a worker connection retries forever) has its series dropped for that scrape; the scrape itself never fails.
 * Several services may export the same queue: aggregate with max by (queue, state), not sum.
 */
export function createQueueMetrics(registry: Registry, queues: QueueLike[], opts: { timeoutMs?: number } = {}): QueueMetrics {
  const timeoutMs = opts.timeoutMs ?? 1000;
  const scrapeErrors = new Counter<'queue'>({
    name: METRIC_PREFIX + 'queue_scrape_errors_total',
    help: 'Failed or timed-out job count reads per queue.',
    labelNames: ['queue'],
    registers: [registry],
  });
  for (const q of queues) scrapeErrors.inc({ queue: q.name }, 0);
  const jobs = new Gauge<'queue' | 'state'>({
    name: METRIC_PREFIX + 'queue_jobs',
    help: 'BullMQ jobs per queue and state.',
    labelNames: ['queue', 'state'],
    registers: [registry],
    async collect() {
      const results = await Promise.allSettled(
        queues.map((q) => withTimeout(q.getJobCounts(...(QUEUE_STATES as unknown as never[])), timeoutMs)),
      );
      results.forEach((r, i) => {
        const queue = queues[i].name;
        if (r.status === 'fulfilled') {
          for (const state of QUEUE_STATES) this.set({ queue, state }, r.value[state] ?? 0);
        } else {
          scrapeErrors.inc({ queue });
          for (const state of QUEUE_STATES) this.remove({ queue, state });
        }
      });
    },
  });
  return { jobs, scrapeErrors };
}

// ——— HTTP (API) ———

export interface HttpMetrics {
  requests: Counter<'method' | 'route' | 'code'>;
  duration: Histogram<'method' | 'route'>;
  /** Express-compatible middleware: counts each response by its matched route pattern (never the raw URL). */
  middleware: (req: HttpReq, res: HttpRes, next: () => void) => void;
}

interface HttpReq {
  method?: string;
  route?: { path?: unknown };
  baseUrl?: string;
}
interface HttpRes {
  statusCode: number;
  once(event: 'finish', fn: () => void): unknown;
}

const HTTP_METHODS = new Set(['GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'HEAD', 'OPTIONS']);

/** `epic_http_requests_total{method,route,code}`, `epic_http_request_duration_seconds{method,route}`. */
export function createHttpMetrics(registry: Registry): HttpMetrics {
  const requests = new Counter<'method' | 'route' | 'code'>({
    name: METRIC_PREFIX + 'http_requests_total',
    help: 'HTTP responses by method, matched route and status code.',
    labelNames: ['method', 'route', 'code'],
    registers: [registry],
  });
  const duration = new Histogram<'method' | 'route'>({
    name: METRIC_PREFIX + 'http_request_duration_seconds',
    help: 'HTTP request duration in seconds by method and matched route.',
    labelNames: ['method', 'route'],
    buckets: REQUEST_LATENCY_BUCKETS,
    registers: [registry],
  });
  return {
    requests,
    duration,
    middleware(req, res, next) {
      const t0 = process.hrtime.bigint();
      res.once('finish', () => {
        const method = HTTP_METHODS.has(req.method ?? '') ? req.method! : 'OTHER';
        const path = typeof req.route?.path === 'string' ? (req.baseUrl ?? '') + req.route.path : 'unmatched';
        requests.inc({ method, route: path, code: String(res.statusCode) });
        duration.observe({ method, route: path }, Number(process.hrtime.bigint() - t0) / 1e9);
      });
      next();
    },
  };
}

// ——— helpers ———

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms`)), ms);
    timer.unref?.();
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

/** Every metric the project defines, on one registry (for checks and tests; services call the factories they need). */
// ——— routing ———

export interface RoutingMetrics {
  decisions: Counter<'decision'>;
  count(d: RoutingDecision): void;
}

/**
 * `epic_routing_decisions_total{decision}`: the API counts where its router sent each job (best, fallback,
 * round_robin, shared), a worker the jobs it took from elsewhere than its own queue (stolen, adopted). Every decision
 * is present from the start at 0, so rate() sees the first one.
 */
export function createRoutingMetrics(registry: Registry): RoutingMetrics {
  const decisions = new Counter({
    name: `${METRIC_PREFIX}routing_decisions_total`,
    help: 'Inference jobs by routing decision: best, fallback, round_robin, shared (API); stolen, adopted (workers)',
    labelNames: ['decision'] as const,
    registers: [registry],
  });
  for (const d of ROUTING_DECISIONS) decisions.inc({ decision: d }, 0);
  return { decisions, count: (d) => decisions.inc({ decision: d }) };
}

/** `epic_routing_live_workers` (API): live workers in the routing index at the router's last read. */
export function createLiveWorkersGauge(registry: Registry, read: () => number): Gauge {
  return new Gauge({
    name: `${METRIC_PREFIX}routing_live_workers`,
    help: 'Live inference workers in the routing index (heartbeat not expired), as the API last read them',
    registers: [registry],
    collect() {
      this.set(read());
    },
  });
}

/** `epic_routing_index_chunks{tier}` (worker): chunks it has published to the routing index as held in memory and on disk. */
export function createIndexGauge(registry: Registry, read: () => { memory: number; disk: number }): Gauge<'tier'> {
  return new Gauge({
    name: `${METRIC_PREFIX}routing_index_chunks`,
    help: "Chunks this worker's routing index entries say it holds, by tier",
    labelNames: ['tier'] as const,
    registers: [registry],
    collect() {
      const r = read();
      this.set({ tier: 'memory' }, r.memory);
      this.set({ tier: 'disk' }, r.disk);
    },
  });
}

// ——— quality of service ———

export interface QosMetrics {
  queueSeconds: Histogram<'class' | 'tenant'>;
  served: Counter<'class'>;
  /** A worker started a job of `cls` for `tenant` after it waited `seconds` in its queue. */
  started(cls: RequestClass, tenant: string, seconds: number | undefined): void;
  /** A worker served `n` requests of `cls`. */
  servedCount(cls: RequestClass, n: number): void;
}

/**
 * Quality of service: `epic_qos_queue_seconds{class,tenant}` (worker: enqueue to start), `epic_qos_served_requests_total{class}`
 * (worker: requests served per class; the share of work served per class is the ratio of their rates), and, where
 * `waiting` is given (the API), `epic_qos_waiting_requests{class,tenant}` (requests waiting to start, read from the
 * tenants' queued sets in Redis at scrape time). Tenant labels are bounded by `labels` (TenantLabels: the first N
 * tenants seen keep their names, later ones are `other`).
 */
export function createQosMetrics(
  registry: Registry,
  opts: { labels?: TenantLabels; waiting?: () => Promise<{ tenant: string; cls: RequestClass; n: number }[]> } = {},
): QosMetrics {
  const labels = opts.labels ?? new TenantLabels();
  const queueSeconds = new Histogram<'class' | 'tenant'>({
    name: METRIC_PREFIX + 'qos_queue_seconds',
    help: 'Time from enqueue to a worker starting the job, by request class and tenant (tenants past the first QOS_TENANT_LABELS seen: other).',
    labelNames: ['class', 'tenant'],
    buckets: REQUEST_LATENCY_BUCKETS,
    registers: [registry],
  });
  const served = new Counter<'class'>({
    name: METRIC_PREFIX + 'qos_served_requests_total',
    help: 'Requests served by the scheduler, by request class (the share of work per class is the ratio of their rates).',
    labelNames: ['class'],
    registers: [registry],
  });
  for (const c of REQUEST_CLASSES) served.inc({ class: c }, 0);
  if (opts.waiting) {
    const read = opts.waiting;
    new Gauge<'class' | 'tenant'>({
      name: METRIC_PREFIX + 'qos_waiting_requests',
      help: 'Requests waiting to start, by request class and tenant (tenants past the first QOS_TENANT_LABELS seen: other).',
      labelNames: ['class', 'tenant'],
      registers: [registry],
      async collect() {
        this.reset();
        const sums = new Map<string, { cls: RequestClass; tenant: string; n: number }>();
        for (const w of await withTimeout(read(), 1000).catch(() => [])) {
          const tenant = labels.of(w.tenant);
          const k = `${w.cls}\0${tenant}`;
          const e = sums.get(k) ?? { cls: w.cls, tenant, n: 0 };
          e.n += w.n;
          sums.set(k, e);
        }
        for (const e of sums.values()) this.set({ class: e.cls, tenant: e.tenant }, e.n);
      },
    });
  }
  return {
    queueSeconds,
    served,
    started: (cls, tenant, seconds) => {
      if (seconds !== undefined) queueSeconds.observe({ class: cls, tenant: labels.of(tenant) }, seconds);
    },
    servedCount: (cls, n) => served.inc({ class: cls }, n),
  };
}

export function createAllMetrics(
  registry: Registry,
  opts: {
    service?: string;
    getStats?: () => KVStoreStats | undefined;
    queues?: QueueLike[];
    process?: boolean;
    /** What waits, by class and tenant (the API's reader in a service; none by default). */
    qosWaiting?: () => Promise<{ tenant: string; cls: RequestClass; n: number }[]>;
  } = {},
): {
  serving: ServingMetrics;
  errors: ErrorMetrics;
  store: StoreMetrics;
  precompute: PrecomputeMetrics;
  queues: QueueMetrics;
  http: HttpMetrics;
  routing: RoutingMetrics;
  qos: QosMetrics;
} {
  if (opts.process !== false) registerProcessMetrics(registry); // no-op on a createRegistry() registry
  // The routing gauges read nothing here (a service passes its index's reader).
  createLiveWorkersGauge(registry, () => 0);
  createIndexGauge(registry, () => ({ memory: 0, disk: 0 }));
  return {
    serving: createServingMetrics(registry),
    errors: createErrorMetrics(registry, opts.service ?? 'test'),
    store: createStoreMetrics(registry, opts.getStats ?? (() => undefined)),
    precompute: createPrecomputeMetrics(registry),
    queues: createQueueMetrics(registry, opts.queues ?? []),
    http: createHttpMetrics(registry),
    routing: createRoutingMetrics(registry),
    qos: createQosMetrics(registry, { waiting: opts.qosWaiting ?? (async () => []) }),
  };
}
