import type { RoutingKeys } from './keys';
import type { RedisLike } from './residency';
import type { Residence } from './score';

/** The live workers: members of `workers` whose heartbeat has not run out (Redis's clock). */
const LIVE = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')
`;

/**
 * The API's view of the routing index: which workers are live (read at most every `liveMs`, so a worker whose
 * heartbeat ran out is routed to no more than `liveMs` later) and where each of them holds a request's chunks (one
 * pipeline of HMGETs, one per live worker).
 */
export class ResidencyReader {
  private live: string[] = [];
  private liveAt = -Infinity;
  private pending?: Promise<string[]>;

  constructor(
    private readonly redis: RedisLike,
    private readonly keys: RoutingKeys,
    private readonly liveMs = 250,
  ) {
    redis.defineCommand('epicRoutingLive', { numberOfKeys: 1, lua: LIVE });
  }

  /** Live worker ids, sorted. */
  async liveWorkers(): Promise<string[]> {
    if (performance.now() - this.liveAt <= this.liveMs) return this.live;
    this.pending ??= (async () => {
      try {
        const ids = (await (this.redis as unknown as { epicRoutingLive(k: string): Promise<string[]> }).epicRoutingLive(this.keys.workers)).sort();
        this.live = ids;
        this.liveAt = performance.now();
        return ids;
      } finally {
        this.pending = undefined;
      }
    })();
    return this.pending;
  }

  /** held[w][c]: where worker `workers[w]` holds `chunkKeys[c]`. */
  async holdings(workers: readonly string[], chunkKeys: readonly string[]): Promise<Residence[][]> {
    if (!workers.length) return [];
    if (!chunkKeys.length) return workers.map(() => []);
    const p = this.redis.pipeline();
    for (const w of workers) p.hmget(this.keys.chunks(w), ...chunkKeys);
    const res = (await p.exec()) ?? [];
    return workers.map((_, i) => {
      const [err, vals] = res[i] ?? [null, []];
      if (err) throw err;
      return (vals as (string | null)[]).map((v) => (v === 'm' || v === 'd' ? v : undefined));
    });
  }

  /** The live workers at the last read (no Redis call). */
  lastLive(): readonly string[] {
    return this.live;
  }

  /** Forget the cached live list (tests: read it again now). */
  refresh(): void {
    this.liveAt = -Infinity;
  }
}
