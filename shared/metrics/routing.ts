import { Counter, Gauge, type Registry } from 'prom-client';
import { ROUTING_DECISIONS, type RoutingDecision } from '../routing/modes';
import { METRIC_PREFIX } from './metrics';

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

/**
 * `epic_routing_live_workers` (API: live workers in the index at its last read) or, in a worker,
 * `epic_routing_index_chunks{tier}` (chunks it has published as held in memory and on disk).
 */
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
