import { EventEmitter } from 'node:events';
import { randomBytes } from 'node:crypto';
import { Queue } from 'bullmq';
import { Registry } from 'prom-client';
import { allocBlock } from '../../shared/engine/kv';
import type { KVShape } from '../../shared/engine/kv';
import { KVStore } from '../../shared/kvstore';
import type { KVStoreStats, TierStats } from '../../shared/kvstore';
import { emptyStats } from '../../shared/kvstore';
import {
  ERROR_KINDS,
  MODE_LABELS,
  QUEUE_STATES,
  REQUEST_STATUSES,
  TTFT_BUCKETS,
  boundedMode,
  createAllMetrics,
  createErrorMetrics,
  createHttpMetrics,
  createPrecomputeMetrics,
  createQueueMetrics,
  createServingMetrics,
  createStoreMetrics,
} from '../../shared/metrics/metrics';
import { createRegistry } from '../../shared/metrics/server';

const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';

type Row = { labels: Record<string, string | number>; value: number; metricName?: string };

/** One collect of the whole registry: metric name → rows. */
async function snapshot(registry: Registry): Promise<Map<string, { type: string; values: Row[] }>> {
  const out = new Map<string, { type: string; values: Row[] }>();
  for (const m of await registry.getMetricsAsJSON()) out.set(m.name, { type: String(m.type), values: m.values as Row[] });
  return out;
}

function val(snap: Map<string, { values: Row[] }>, name: string, labels: Record<string, string> = {}, metricName = name): number | undefined {
  const m = snap.get(name);
  if (!m) throw new Error(`no metric ${name}`);
  const row = m.values.find(
    (r) => (r.metricName ?? name) === metricName && Object.entries(labels).every(([k, v]) => String(r.labels[k]) === v),
  );
  return row?.value;
}

describe('serving metrics', () => {
  test('names, types, labels and vLLM TTFT buckets', async () => {
    const registry = new Registry();
    const m = createServingMetrics(registry);
    m.record({ mode: 'attnlink', status: 'ok', ttftSeconds: 0.03, e2eSeconds: 0.1, queueSeconds: 0.01 });
    const snap = await snapshot(registry);
    const expected: Record<string, string> = {
      epic_time_to_first_token_seconds: 'histogram',
      epic_batch_size_requests: 'histogram',
      epic_e2e_request_latency_seconds: 'histogram',
      epic_request_queue_time_seconds: 'histogram',
      epic_request_prefill_time_seconds: 'histogram',
      epic_request_decode_time_seconds: 'histogram',
      epic_time_per_output_token_seconds: 'histogram',
      epic_prompt_tokens_total: 'counter',
      epic_generation_tokens_total: 'counter',
      epic_cached_tokens_total: 'counter',
      epic_recomputed_tokens_total: 'counter',
      epic_compiled_tokens_total: 'counter',
      epic_requests_total: 'counter',
      epic_requests_running: 'gauge',
      epic_requests_waiting: 'gauge',
    };
    expect(Object.fromEntries([...snap].map(([k, v]) => [k, v.type]))).toEqual(expected);

    const les = snap
      .get('epic_time_to_first_token_seconds')!
      .values.filter((r) => r.metricName === 'epic_time_to_first_token_seconds_bucket')
      .map((r) => r.labels.le);
    expect(les).toEqual([...TTFT_BUCKETS, '+Inf']);
    expect(TTFT_BUCKETS).toEqual([0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 20, 40, 80, 160, 640, 2560]);
    expect(val(snap, 'epic_time_to_first_token_seconds', { mode: 'attnlink', le: '0.04' }, 'epic_time_to_first_token_seconds_bucket')).toBe(1);
    expect(val(snap, 'epic_time_to_first_token_seconds', { mode: 'attnlink', le: '0.02' }, 'epic_time_to_first_token_seconds_bucket')).toBe(0);

    // the queue-time histogram has no labels; the others are by mode only
    expect(Object.keys(val2labels(snap, 'epic_request_queue_time_seconds'))).toEqual([]);
    expect(Object.keys(val2labels(snap, 'epic_e2e_request_latency_seconds')).sort()).toEqual(['mode']);
    expect(Object.keys(val2labels(snap, 'epic_requests_total')).sort()).toEqual(['mode', 'status']);
  });

  function val2labels(snap: Map<string, { values: Row[] }>, name: string): Record<string, true> {
    const keys: Record<string, true> = {};
    for (const r of snap.get(name)!.values) for (const k of Object.keys(r.labels)) if (k !== 'le') keys[k] = true;
    return keys;
  }

  test('record() observes timings and tokens under a bounded mode label', async () => {
    const registry = new Registry();
    const m = createServingMetrics(registry);
    m.record({
      mode: 'attnlink-16',
      status: 'ok',
      queueSeconds: 0.5,
      ttftSeconds: 0.07,
      prefillSeconds: 0.05,
      decodeSeconds: 0.7,
      e2eSeconds: 1.3,
      promptTokens: 400,
      generationTokens: 8,
      cachedTokens: 350,
      recomputedTokens: 50,
    });
    m.record({ mode: 'tenant-secret-xyz', status: 'rejected' });
    m.record({ mode: undefined, status: 'error', promptTokens: 10, recomputedTokens: 10 });
    m.requestsRunning.inc(3);
    m.requestsWaiting.set(7);
    const snap = await snapshot(registry);
    expect(val(snap, 'epic_requests_total', { mode: 'attnlink', status: 'ok' })).toBe(1);
    expect(val(snap, 'epic_requests_total', { mode: 'other', status: 'rejected' })).toBe(1);
    expect(val(snap, 'epic_requests_total', { mode: 'other', status: 'error' })).toBe(1);
    expect(val(snap, 'epic_prompt_tokens_total', { mode: 'attnlink' })).toBe(400);
    expect(val(snap, 'epic_generation_tokens_total', { mode: 'attnlink' })).toBe(8);
    expect(val(snap, 'epic_cached_tokens_total', { mode: 'attnlink' })).toBe(350);
    expect(val(snap, 'epic_recomputed_tokens_total', { mode: 'attnlink' })).toBe(50);
    expect(val(snap, 'epic_recomputed_tokens_total', { mode: 'other' })).toBe(10);
    expect(val(snap, 'epic_request_queue_time_seconds', {}, 'epic_request_queue_time_seconds_sum')).toBe(0.5);
    expect(val(snap, 'epic_time_to_first_token_seconds', { mode: 'attnlink' }, 'epic_time_to_first_token_seconds_count')).toBe(1);
    expect(val(snap, 'epic_request_prefill_time_seconds', { mode: 'attnlink' }, 'epic_request_prefill_time_seconds_sum')).toBe(0.05);
    expect(val(snap, 'epic_request_decode_time_seconds', { mode: 'attnlink' }, 'epic_request_decode_time_seconds_sum')).toBe(0.7);
    expect(val(snap, 'epic_e2e_request_latency_seconds', { mode: 'attnlink' }, 'epic_e2e_request_latency_seconds_sum')).toBe(1.3);
    expect(val(snap, 'epic_time_per_output_token_seconds', { mode: 'attnlink' }, 'epic_time_per_output_token_seconds_sum')).toBeCloseTo(0.1);
    expect(val(snap, 'epic_requests_running')).toBe(3);
    expect(val(snap, 'epic_requests_waiting')).toBe(7);

    // every known mode × status starts at 0, and no other label value appears
    const modes = new Set(snap.get('epic_requests_total')!.values.map((r) => String(r.labels.mode)));
    expect([...modes].sort()).toEqual([...MODE_LABELS].sort());
    expect(snap.get('epic_requests_total')!.values).toHaveLength(MODE_LABELS.length * REQUEST_STATUSES.length);
    expect(val(snap, 'epic_requests_total', { mode: 'cacheblend', status: 'timeout' })).toBe(0);
  });

  test('boundedMode maps mode labels to link modes and everything else to other', () => {
    expect(boundedMode('full')).toBe('full');
    expect(boundedMode('attnlink-16')).toBe('attnlink');
    expect(boundedMode('cacheblend-15')).toBe('cacheblend');
    expect(boundedMode('attnlink0')).toBe('attnlink0');
    expect(boundedMode('req-1234')).toBe('other');
    expect(boundedMode(undefined)).toBe('other');
  });
});

describe('errors, precompute, http', () => {
  test('epic_errors_total{service,kind}: every kind starts at 0; unknown kinds become internal', async () => {
    const registry = new Registry();
    const e = createErrorMetrics(registry, 'worker');
    e.count('engine');
    e.count('timeout', 2);
    e.count('nonsense' as never);
    const snap = await snapshot(registry);
    expect(snap.get('epic_errors_total')!.values).toHaveLength(ERROR_KINDS.length);
    expect(val(snap, 'epic_errors_total', { service: 'worker', kind: 'engine' })).toBe(1);
    expect(val(snap, 'epic_errors_total', { service: 'worker', kind: 'timeout' })).toBe(2);
    expect(val(snap, 'epic_errors_total', { service: 'worker', kind: 'internal' })).toBe(1);
    expect(val(snap, 'epic_errors_total', { service: 'worker', kind: 'redis' })).toBe(0);
  });

  test('precompute: latency histogram, backlog from a getter, chunks by result', async () => {
    const registry = new Registry();
    let backlog = 12;
    const p = createPrecomputeMetrics(registry, { getBacklog: async () => backlog });
    p.record('compiled', 0.02);
    p.record('cached');
    p.record('failed', 0.5);
    let snap = await snapshot(registry);
    expect(snap.get('epic_precompute_latency_seconds')!.type).toBe('histogram');
    expect(val(snap, 'epic_precompute_latency_seconds', {}, 'epic_precompute_latency_seconds_count')).toBe(2);
    expect(val(snap, 'epic_precompute_backlog')).toBe(12);
    expect(val(snap, 'epic_precompute_chunks_total', { result: 'compiled' })).toBe(1);
    expect(val(snap, 'epic_precompute_chunks_total', { result: 'cached' })).toBe(1);
    expect(val(snap, 'epic_precompute_chunks_total', { result: 'failed' })).toBe(1);
    backlog = 3;
    snap = await snapshot(registry);
    expect(val(snap, 'epic_precompute_backlog')).toBe(3);

    // without a getter the gauge is set by hand
    const r2 = new Registry();
    const p2 = createPrecomputeMetrics(r2);
    p2.backlog.set(5);
    expect(val(await snapshot(r2), 'epic_precompute_backlog')).toBe(5);
  });

  test('http middleware labels by matched route pattern, never the raw URL', async () => {
    const registry = new Registry();
    const h = createHttpMetrics(registry);
    const fire = (req: object, code: number) => {
      const res = Object.assign(new EventEmitter(), { statusCode: code });
      let nexted = false;
      h.middleware(req as never, res as never, () => (nexted = true));
      expect(nexted).toBe(true);
      res.emit('finish');
    };
    fire({ method: 'POST', route: { path: '/v1/completions' } }, 200);
    fire({ method: 'GET', route: { path: '/v1/batches/:id' }, baseUrl: '' }, 404);
    fire({ method: 'BREW', url: '/secret/abc123' }, 404);
    const snap = await snapshot(registry);
    expect(val(snap, 'epic_http_requests_total', { method: 'POST', route: '/v1/completions', code: '200' })).toBe(1);
    expect(val(snap, 'epic_http_requests_total', { method: 'GET', route: '/v1/batches/:id', code: '404' })).toBe(1);
    expect(val(snap, 'epic_http_requests_total', { method: 'OTHER', route: 'unmatched', code: '404' })).toBe(1);
  });
});

describe('KV store metrics', () => {
  const SHAPE: KVShape = { layers: 2, kvHeads: 2, headDim: 8 };
  const block = (seed: number) => {
    const b = allocBlock(SHAPE, 16);
    b.tokens.fill(seed);
    for (let i = 0; i < 16; i++) b.positions[i] = i;
    for (const a of [...b.keys, ...b.values]) a.fill(seed / 10);
    return b;
  };

  test('collect() reflects a real KVStore memory tier, as monotone counters', async () => {
    // each block is charged 4096 B of KV + 128 + 256 = 4480 B: two fit in 10 000 B
    const store = await KVStore.open({ modelId: 'obs-test', shape: SHAPE, memory: { budgetBytes: 10_000 } });
    try {
      const registry = new Registry();
      createStoreMetrics(registry, () => store.stats());
      await store.put('k1', block(1));
      await store.put('k2', block(2));
      await store.put('k3', block(3)); // evicts k1
      expect(await store.get('k1')).toBeUndefined();
      expect(await store.get('k3')).toBeDefined();
      await store.lookupOrCompute('k4', () => block(4));
      const s = store.stats();
      const mem = s.tiers.memory!;
      let snap = await snapshot(registry);
      expect(val(snap, 'epic_kv_chunk_lookups_total', { tier: 'memory', result: 'hit' })).toBe(mem.hits);
      expect(val(snap, 'epic_kv_chunk_lookups_total', { tier: 'memory', result: 'miss' })).toBe(mem.misses);
      expect(mem.hits).toBe(1);
      expect(mem.misses).toBe(2);
      expect(val(snap, 'epic_kv_lookups_total', { result: 'hit' })).toBe(1);
      expect(val(snap, 'epic_kv_lookups_total', { result: 'miss' })).toBe(2);
      expect(val(snap, 'epic_kv_evictions_total', { tier: 'memory' })).toBe(mem.evictions);
      expect(mem.evictions).toBeGreaterThanOrEqual(1);
      expect(val(snap, 'epic_kv_bytes', { tier: 'memory' })).toBe(mem.bytes);
      expect(val(snap, 'epic_kv_entries', { tier: 'memory' })).toBe(mem.entries);
      expect(val(snap, 'epic_kv_budget_bytes', { tier: 'memory' })).toBe(10_000);
      expect(val(snap, 'epic_kv_puts_total', { tier: 'memory' })).toBe(mem.puts);
      expect(val(snap, 'epic_kv_compiles_total')).toBe(1);
      expect(val(snap, 'epic_kv_compile_seconds_total')).toBeCloseTo(s.computeSeconds, 9);
      expect(val(snap, 'epic_kv_corrupt_blobs_total', { tier: 'memory' })).toBe(0);
      // unconfigured tiers have no series
      expect(val(snap, 'epic_kv_bytes', { tier: 'disk' })).toBeUndefined();
      expect(snap.get('epic_kv_chunk_lookups_total')!.type).toBe('counter');
      expect(snap.get('epic_kv_bytes')!.type).toBe('gauge');

      // more traffic: the counters follow the cumulative stats without double counting
      for (let i = 0; i < 5; i++) await store.get('k3');
      await store.get('nope');
      snap = await snapshot(registry);
      const mem2 = store.stats().tiers.memory!;
      expect(val(snap, 'epic_kv_chunk_lookups_total', { tier: 'memory', result: 'hit' })).toBe(mem2.hits);
      expect(mem2.hits).toBe(6);
      expect(val(snap, 'epic_kv_chunk_lookups_total', { tier: 'memory', result: 'miss' })).toBe(mem2.misses);
      snap = await snapshot(registry); // a scrape without traffic changes nothing
      expect(val(snap, 'epic_kv_chunk_lookups_total', { tier: 'memory', result: 'hit' })).toBe(6);
    } finally {
      await store.close();
    }
  });

  test('every tier stat maps; null bytes are absent; a reset store keeps counters monotone', async () => {
    const tier = (name: 'memory' | 'disk' | 'redis', f: Partial<TierStats>): TierStats => ({ ...emptyStats(name, null), ...f });
    let stats: KVStoreStats | undefined;
    const base = (tiers: KVStoreStats['tiers'], extra: Partial<KVStoreStats> = {}): KVStoreStats => ({
      modelId: 'm',
      tiers,
      lookups: 0,
      hits: 0,
      misses: 0,
      promotions: 0,
      computes: 0,
      computeErrors: 0,
      computeSeconds: 0,
      singleFlightJoins: 0,
      remoteWaits: 0,
      remoteHits: 0,
      remoteWaitTimeouts: 0,
      leaseTakeovers: 0,
      corrupt: 0,
      incompatible: 0,
      writeErrors: 0,
      ...extra,
    });
    const registry = new Registry();
    let reads = 0;
    createStoreMetrics(registry, () => {
      reads++;
      return stats;
    });
    // before the store opens: no series, no failure
    let snap = await snapshot(registry);
    expect(snap.get('epic_kv_chunk_lookups_total')!.values).toEqual([]);

    stats = base(
      {
        disk: tier('disk', { hits: 4, misses: 6, corrupt: 2, incompatible: 1, errors: 3, evictions: 5, bytes: 1000, entries: 3, budgetBytes: 4000, bytesRead: 700, bytesWritten: 900, puts: 8 }),
        redis: tier('redis', { hits: 1, misses: 2, corrupt: 1, entries: null, bytes: null }),
      },
      { computes: 7, computeErrors: 1, computeSeconds: 1.5, promotions: 2, singleFlightJoins: 3, remoteWaits: 4, remoteHits: 3, remoteWaitTimeouts: 1, leaseTakeovers: 1, writeErrors: 2, hits: 5, misses: 6 },
    );
    reads = 0;
    snap = await snapshot(registry);
    expect(reads).toBe(1); // one stats() per scrape, shared by every KV metric
    expect(val(snap, 'epic_kv_corrupt_blobs_total', { tier: 'disk' })).toBe(2);
    expect(val(snap, 'epic_kv_corrupt_blobs_total', { tier: 'redis' })).toBe(1);
    expect(val(snap, 'epic_kv_incompatible_blobs_total', { tier: 'disk' })).toBe(1);
    expect(val(snap, 'epic_kv_tier_errors_total', { tier: 'disk' })).toBe(3);
    expect(val(snap, 'epic_kv_evictions_total', { tier: 'disk' })).toBe(5);
    expect(val(snap, 'epic_kv_read_bytes_total', { tier: 'disk' })).toBe(700);
    expect(val(snap, 'epic_kv_written_bytes_total', { tier: 'disk' })).toBe(900);
    expect(val(snap, 'epic_kv_bytes', { tier: 'disk' })).toBe(1000);
    expect(val(snap, 'epic_kv_budget_bytes', { tier: 'disk' })).toBe(4000);
    expect(val(snap, 'epic_kv_bytes', { tier: 'redis' })).toBeUndefined();
    expect(val(snap, 'epic_kv_entries', { tier: 'redis' })).toBeUndefined();
    expect(val(snap, 'epic_kv_chunk_lookups_total', { tier: 'redis', result: 'miss' })).toBe(2);
    expect(val(snap, 'epic_kv_compiles_total')).toBe(7);
    expect(val(snap, 'epic_kv_compile_errors_total')).toBe(1);
    expect(val(snap, 'epic_kv_compile_seconds_total')).toBe(1.5);
    expect(val(snap, 'epic_kv_promotions_total')).toBe(2);
    expect(val(snap, 'epic_kv_single_flight_joins_total')).toBe(3);
    expect(val(snap, 'epic_kv_remote_waits_total')).toBe(4);
    expect(val(snap, 'epic_kv_remote_wait_hits_total')).toBe(3);
    expect(val(snap, 'epic_kv_remote_wait_timeouts_total')).toBe(1);
    expect(val(snap, 'epic_kv_lease_takeovers_total')).toBe(1);
    expect(val(snap, 'epic_kv_write_errors_total')).toBe(2);

    // the store is reopened: its stats restart from 0 and reach 3; the exposed counter keeps growing (7 + 3)
    stats = base({ disk: tier('disk', { hits: 1 }) }, { computes: 3 });
    snap = await snapshot(registry);
    expect(val(snap, 'epic_kv_compiles_total')).toBe(10);
    expect(val(snap, 'epic_kv_chunk_lookups_total', { tier: 'disk', result: 'hit' })).toBe(5);
    expect(val(snap, 'epic_kv_bytes', { tier: 'disk' })).toBe(0);
  });
});

describe('queue metrics', () => {
  test('epic_queue_jobs{queue,state} from a real BullMQ queue', async () => {
    const prefix = `{epic-obs-${randomBytes(4).toString('hex')}}`;
    const u = new URL(REDIS_URL);
    const queue = new Queue('inference', { prefix, connection: { host: u.hostname, port: Number(u.port || 6379) } });
    try {
      await queue.add('a', { n: 1 });
      await queue.add('b', { n: 2 });
      await queue.add('later', { n: 3 }, { delay: 60_000 });
      await queue.add('urgent', { n: 4 }, { priority: 3 });
      const registry = new Registry();
      createQueueMetrics(registry, [queue]);
      const snap = await snapshot(registry);
      const rows = snap.get('epic_queue_jobs')!.values;
      expect(rows.map((r) => r.labels.state).sort()).toEqual([...QUEUE_STATES].sort());
      expect(rows.every((r) => r.labels.queue === 'inference')).toBe(true);
      expect(val(snap, 'epic_queue_jobs', { queue: 'inference', state: 'waiting' })).toBe(2);
      expect(val(snap, 'epic_queue_jobs', { queue: 'inference', state: 'delayed' })).toBe(1);
      expect(val(snap, 'epic_queue_jobs', { queue: 'inference', state: 'prioritized' })).toBe(1);
      expect(val(snap, 'epic_queue_jobs', { queue: 'inference', state: 'active' })).toBe(0);
      expect(val(snap, 'epic_queue_jobs', { queue: 'inference', state: 'completed' })).toBe(0);
      expect(val(snap, 'epic_queue_scrape_errors_total', { queue: 'inference' })).toBe(0);
      const counts = await queue.getJobCounts();
      for (const [state, n] of Object.entries(counts)) expect([state, val(snap, 'epic_queue_jobs', { queue: 'inference', state })]).toEqual([state, n]);
    } finally {
      await queue.obliterate({ force: true });
      await queue.close();
    }
  });

  test('a queue that hangs or fails drops its series and counts the error; the scrape still answers', async () => {
    const registry = new Registry();
    let fail = false;
    const ok = { name: 'precompute', getJobCounts: async () => (fail ? Promise.reject(new Error('down')) : { waiting: 4 }) };
    const hung = { name: 'inference', getJobCounts: () => new Promise<Record<string, number>>(() => undefined) };
    createQueueMetrics(registry, [ok, hung], { timeoutMs: 50 });
    const t0 = Date.now();
    let snap = await snapshot(registry);
    expect(Date.now() - t0).toBeLessThan(2000);
    expect(val(snap, 'epic_queue_jobs', { queue: 'precompute', state: 'waiting' })).toBe(4);
    expect(val(snap, 'epic_queue_jobs', { queue: 'precompute', state: 'failed' })).toBe(0);
    expect(val(snap, 'epic_queue_jobs', { queue: 'inference', state: 'waiting' })).toBeUndefined();
    expect(val(snap, 'epic_queue_scrape_errors_total', { queue: 'inference' })).toBe(1);
    fail = true;
    snap = await snapshot(registry);
    expect(val(snap, 'epic_queue_jobs', { queue: 'precompute', state: 'waiting' })).toBeUndefined();
    expect(val(snap, 'epic_queue_scrape_errors_total', { queue: 'precompute' })).toBe(1);
  });
});

describe('the whole registry', () => {
  test('every name is epic_-prefixed, Prometheus-named, with bounded label names', async () => {
    const registry = createRegistry('worker');
    createAllMetrics(registry, { service: 'worker', process: false });
    const snap = await snapshot(registry);
    const allowed = new Set(['service', 'mode', 'status', 'kind', 'tier', 'result', 'queue', 'state', 'method', 'route', 'code', 'le', 'type', 'version', 'major', 'minor', 'patch', 'space', 'decision', 'class', 'tenant']);
    for (const [name, m] of snap) {
      expect(name).toMatch(/^epic_[a-z0-9_]+$/);
      if (m.type === 'counter') expect(name).toMatch(/_total$/);
      else expect(name).not.toMatch(/_total$/);
      // histograms carry their unit: seconds, or a count of requests or tokens
      if (m.type === 'histogram') expect(name).toMatch(/_(seconds|requests|tokens)$/);
      for (const r of m.values) for (const k of Object.keys(r.labels)) expect([name, k, allowed.has(k)]).toEqual([name, k, true]);
    }
    // the process metrics come from createRegistry, under the same prefix and with the service label
    expect(snap.get('epic_process_cpu_seconds_total')?.type).toBe('counter');
    expect(snap.get('epic_process_resident_memory_bytes')).toBeDefined();
    expect(snap.has('epic_nodejs_active_handles_total')).toBe(false);
    expect(val(snap, 'epic_requests_total', { service: 'worker', mode: 'full', status: 'ok' })).toBe(0);
  });
});
