/**
 * A registry holding every metric the project defines, with values in every series the dashboards read: what a
 * service would expose after some traffic. Used by the promtool and Prometheus tests.
 */
import type { Registry } from 'prom-client';
import type { KVStoreStats, TierStats } from '../../shared/kvstore';
import { emptyStats } from '../../shared/kvstore';
import { LINK_MODES } from '../../shared/linking/types';
import { QUEUE_STATES, createAllMetrics } from '../../shared/metrics/metrics';
import { createRegistry } from '../../shared/metrics/server';

export interface SampleRegistry {
  registry: Registry;
  /** Adds one round of traffic (requests in every mode, lookups, compiles, precompute, an error). */
  tick(): void;
}

export function sampleRegistry(service = 'worker'): SampleRegistry {
  const registry = createRegistry(service);
  let n = 0;
  const tier = (name: 'memory' | 'disk' | 'redis', k: number, shared = false): TierStats => ({
    ...emptyStats(name, shared ? null : 1 << 30),
    hits: 3 * k,
    misses: k,
    puts: k,
    evictions: Math.floor(k / 2),
    corrupt: name === 'disk' ? Math.floor(k / 3) : 0,
    bytesRead: 4096 * k,
    bytesWritten: 4096 * k,
    entries: shared ? null : 10 + k,
    bytes: shared ? null : 4096 * (10 + k),
  });
  const stats = (): KVStoreStats => ({
    modelId: 'tiny-random',
    tiers: { memory: tier('memory', n), disk: tier('disk', n), redis: tier('redis', n, true) },
    lookups: 4 * n,
    hits: 3 * n,
    misses: n,
    promotions: n,
    computes: n,
    computeErrors: 0,
    computeSeconds: 0.05 * n,
    singleFlightJoins: 0,
    remoteWaits: 0,
    remoteHits: 0,
    remoteWaitTimeouts: 0,
    leaseTakeovers: 0,
    corrupt: Math.floor(n / 3),
    incompatible: 0,
    writeErrors: 0,
  });
  const queues = ['inference', 'precompute'].map((name) => ({
    name,
    getJobCounts: async () => Object.fromEntries(QUEUE_STATES.map((s, i) => [s, (i + n) % 5])),
  }));
  const m = createAllMetrics(registry, {
    service,
    getStats: stats,
    queues,
    process: false,
    qosWaiting: async () => [
      { tenant: 'alice', cls: 'interactive', n: n % 3 },
      { tenant: 'bob', cls: 'batch', n: 10 + (n % 7) },
    ],
  });
  const tick = () => {
    n++;
    for (const mode of LINK_MODES) {
      const prompt = 200;
      const cached = mode === 'full' ? 0 : 160;
      m.serving.record({
        mode: mode === 'attnlink' ? 'attnlink-16' : mode,
        status: 'ok',
        queueSeconds: 0.01 * n,
        ttftSeconds: 0.02 + 0.001 * n,
        prefillSeconds: 0.015,
        decodeSeconds: 0.08,
        e2eSeconds: 0.12,
        promptTokens: prompt,
        generationTokens: 8,
        cachedTokens: cached,
        recomputedTokens: prompt - cached,
        batchSize: 1 + (n % 8),
      });
    }
    m.serving.requestsRunning.set(n % 3);
    m.serving.requestsWaiting.set(n % 4);
    m.precompute.record('compiled', 0.03);
    m.precompute.record('cached', 0.001);
    m.precompute.backlog.set(20 - (n % 20));
    m.errors.count('timeout');
    m.qos.started('interactive', 'alice', 0.005 * n);
    m.qos.started('batch', 'bob', 0.5 * n);
    m.qos.servedCount('interactive', 4);
    m.qos.servedCount('batch', 1);
  };
  tick();
  return { registry, tick };
}
