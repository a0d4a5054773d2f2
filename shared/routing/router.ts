import type { Queue } from 'bullmq';
import { LRUCache } from 'lru-cache';
import { chunkKey } from '../kvstore';
import { LINK_DEFAULTS, variantId, type CompileVariant } from '../linking/types';
import { REQUEST_CLASSES, type RequestClass } from '../queue/contracts';
import type { ServeRequest } from '../serving/request';
import type { InferenceQueues } from './queues';
import type { ResidencyReader } from './reader';
import type { RoutingDecision, RoutingMode } from './modes';
import { DEFAULT_WEIGHTS, hash32, scoreWorkers, type ScoreWeights } from './score';

export { ROUTING_DECISIONS, ROUTING_MODES, type RoutingDecision, type RoutingMode } from './modes';

export interface Route {
  queue: Queue;
  decision: RoutingDecision;
  /** The worker whose own queue it is (absent: the shared queue). */
  workerId?: string;
}

export interface RouterOptions {
  mode: RoutingMode;
  modelId: string;
  queues: InferenceQueues;
  reader: ResidencyReader;
  weights?: Partial<ScoreWeights>;
  /** A worker whose own queue holds more than this many waiting jobs gets no more: they go to the shared queue. */
  maxWaiting?: number;
  /** Each worker's backlog is read again when older than this; between reads the router counts its own assignments. */
  loadMs?: number;
  /** How long a context stays with the worker it was sent to (same context, same worker). */
  stickyMs?: number;
  onDecision?: (d: RoutingDecision) => void;
}

/** The store keys the worker's chunk source will use for a request's chunks (none for modes that do not read the store). */
export function routingChunkKeys(modelId: string, r: Pick<ServeRequest, 'chunks' | 'tenantSalt' | 'mode'>): string[] {
  if (r.mode.mode === 'full' || r.mode.mode === 'prefix') return [];
  const variant: CompileVariant = r.mode.mode === 'attnlink0' ? { kind: 'sink', sinkTokens: LINK_DEFAULTS.sinkTokens } : { kind: 'plain' };
  const v = variantId(variant);
  return r.chunks.map((tokens) => chunkKey({ modelId, tokens, tenantSalt: r.tenantSalt, variant: v }));
}

/**
 * Picks an inference queue per request (ROUTING): `cache` scores the live workers by the request's cached tokens
 * against their backlog (score.ts) and sends the job to the best one's own queue, or to the shared queue when that
 * one is backed up or no worker is live; `round-robin` cycles over the live workers; `shared` is the shared queue
 * (any worker takes any job, as before routing).
 */
export class Router {
  readonly mode: RoutingMode;
  private readonly weights: ScoreWeights;
  private readonly maxWaiting: number;
  private readonly loadMs: number;
  private readonly load = new Map<string, Load>();
  private readonly sticky: LRUCache<string, string>;
  private rr = 0;

  constructor(private readonly o: RouterOptions) {
    this.mode = o.mode;
    this.weights = { ...DEFAULT_WEIGHTS, ...o.weights };
    this.maxWaiting = o.maxWaiting ?? 8;
    this.loadMs = o.loadMs ?? 100;
    this.sticky = new LRUCache({ max: 10_000, ttl: o.stickyMs ?? 30_000 });
  }

  get queues(): InferenceQueues {
    return this.o.queues;
  }

  /**
   * The queue of request class `cls` for a request: the chosen worker's own queue of that class, or the class's shared
   * queue. The backlog that scores a worker counts both its classes; the cap on waiting jobs (maxWaiting) is per class,
   * so a worker's long batch backlog does not send its interactive requests to the shared queue.
   */
  async route(tenant: string, r: ServeRequest, cls: RequestClass = 'interactive'): Promise<Route> {
    const route = await this.pick(tenant, r, cls);
    this.o.onDecision?.(route.decision);
    if (route.workerId) {
      const l = this.load.get(route.workerId);
      if (l) {
        l.backlog++;
        l.waiting[cls]++;
      }
    }
    return route;
  }

  private async pick(tenant: string, r: ServeRequest, cls: RequestClass): Promise<Route> {
    const shared = this.o.queues.sharedOf(cls);
    if (this.mode === 'shared') return { queue: shared, decision: 'shared' };
    const live = await this.o.reader.liveWorkers();
    if (!live.length) return { queue: shared, decision: 'fallback' };
    if (this.mode === 'round-robin') {
      const id = live[this.rr++ % live.length];
      return { queue: this.o.queues.of(id, cls), decision: 'round_robin', workerId: id };
    }
    const keys = routingChunkKeys(this.o.modelId, r);
    const context = `${tenant}\0${r.mode.mode}:${r.mode.k ?? ''}:${r.mode.r ?? ''}\0${r.tenantSalt}\0${keys.length ? keys.join(',') : r.id}`;
    const loads = await this.loads(live);
    const stuck = this.sticky.get(context);
    const at = stuck === undefined ? -1 : live.indexOf(stuck);
    let best: number;
    if (at >= 0 && loads[at].waiting[cls] <= this.maxWaiting) best = at;
    else {
      const held = await this.o.reader.holdings(live, keys);
      best = scoreWorkers(
        {
          tokens: r.chunks.map((c) => c.length).slice(0, keys.length),
          chunkHashes: keys.map(hash32),
          held,
          backlog: loads.map((l) => l.backlog),
          workerHashes: live.map(hash32),
          contextHash: hash32(context),
        },
        this.weights,
      ).best;
    }
    if (loads[best].waiting[cls] > this.maxWaiting) return { queue: shared, decision: 'fallback' };
    const id = live[best];
    this.sticky.set(context, id);
    return { queue: this.o.queues.of(id, cls), decision: 'best', workerId: id };
  }

  /**
   * Each live worker's backlog (waiting + running, both classes) and waiting jobs per class: read at most every loadMs,
   * counted between.
   */
  private async loads(live: string[]): Promise<Load[]> {
    const now = performance.now();
    const stale = live.filter((id) => !(now - (this.load.get(id)?.at ?? -Infinity) <= this.loadMs));
    if (stale.length) {
      const counts = await Promise.all(stale.flatMap((id) => REQUEST_CLASSES.map((c) => this.o.queues.of(id, c).getJobCounts('waiting', 'active', 'prioritized'))));
      stale.forEach((id, i) => {
        const l: Load = { backlog: 0, waiting: { interactive: 0, batch: 0 }, at: now };
        REQUEST_CLASSES.forEach((cls, k) => {
          const c = counts[i * REQUEST_CLASSES.length + k]; // keyed by BullMQ's own type names ('wait' for waiting)
          const waiting = (c.wait ?? c.waiting ?? 0) + (c.prioritized ?? 0);
          l.waiting[cls] = waiting;
          l.backlog += waiting + (c.active ?? 0);
        });
        this.load.set(id, l);
      });
    }
    return live.map((id) => this.load.get(id)!);
  }
}

/** A worker's backlog (both classes, waiting and running) and its waiting jobs per class, as last read or counted. */
interface Load {
  backlog: number;
  waiting: Record<RequestClass, number>;
  at: number;
}
