import type { RequestClass } from '../queue/contracts';
import { REQUEST_CLASSES } from '../queue/contracts';
import type { QosKeys } from './keys';

/** Which per-tenant limit refused a request. */
export type TenantLimit = 'max_queued_requests' | 'request_rate';

/**
 * A tenant past one of its limits (TENANT_MAX_QUEUED, TENANT_RATE): the API answers 429 with Retry-After (seconds)
 * and an OpenAI-shaped error naming the limit. Nothing was enqueued.
 */
export class TenantLimitError extends Error {
  constructor(
    readonly tenant: string,
    readonly limit: TenantLimit,
    message: string,
    readonly retryAfterS: number,
  ) {
    super(message);
  }
}

export interface TenantLimitOptions {
  /** Most requests of one tenant waiting to start, both classes together (0: no limit). */
  maxQueued: number;
  /** Requests (API calls that enqueue: a completion, a batch, a job) per second per tenant (0: no limit). */
  rate: number;
  /** The token bucket's size: requests a tenant may send at once past the rate (default: max(1, rate)). */
  burst?: number;
}

/**
 * Admit a tenant's new jobs: the queued limit (the exact count: the sizes of the tenant's queued sets), then the rate
 * (a token bucket on Redis's clock), then the ids join the class's queued set (a sorted set, scored by when they were
 * admitted, ms). All or nothing, in one script. Returns {'ok'}, or {limit, detail}: the queued count, or the seconds
 * until a token.
 */
const ADMIT = `
local n = #ARGV - 4
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local maxq = tonumber(ARGV[1])
if maxq > 0 then
  local q = redis.call('ZCARD', KEYS[1]) + redis.call('ZCARD', KEYS[2])
  if q + n > maxq then return {'max_queued_requests', tostring(q)} end
end
local rate = tonumber(ARGV[2])
if rate > 0 then
  local burst = tonumber(ARGV[3])
  local b = redis.call('HMGET', KEYS[3], 'tokens', 'at')
  local tokens = tonumber(b[1]) or burst
  local at = tonumber(b[2]) or now
  tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
  if tokens < 1 then return {'request_rate', tostring((1 - tokens) / rate)} end
  redis.call('HSET', KEYS[3], 'tokens', tostring(tokens - 1), 'at', tostring(now))
  redis.call('PEXPIRE', KEYS[3], math.ceil(burst / rate * 1000) + 1000)
end
local ms = tostring(math.floor(now * 1000))
for i = 5, #ARGV, 500 do
  local args = {}
  for j = i, math.min(i + 499, #ARGV) do
    table.insert(args, ms)
    table.insert(args, ARGV[j])
  end
  redis.call('ZADD', KEYS[1], unpack(args))
end
redis.call('SADD', KEYS[4], ARGV[4])
return {'ok'}
`;

export interface LimitsRedis {
  defineCommand(name: string, def: { numberOfKeys: number; lua: string }): void;
  zrem(key: string, ...members: string[]): Promise<number>;
  zcard(key: string): Promise<number>;
  zrangebyscore(key: string, min: string | number, max: string | number): Promise<string[]>;
  smembers(key: string): Promise<string[]>;
  /** Redis's clock: seconds and microseconds (strings or numbers, by client). */
  time(): Promise<unknown>;
}

/**
 * Per-tenant limits and the exact count of each tenant's queued requests (a set of job ids per class and tenant,
 * added at enqueue, removed when a worker starts the job (FairQueuing.started) or the job is removed: not a counter
 * that drifts when a step is lost half way). An id left behind all the same (a worker's removal that failed, an API
 * that died between admitting and enqueueing) is found by `reconcile`, which the API runs when a tenant hits its
 * queued limit: ids admitted more than minAgeMs ago whose job no queue holds waiting leave the set.
 */
export class TenantLimits {
  readonly burst: number;
  private readonly reconciled = new Map<string, number>();
  constructor(
    private readonly redis: LimitsRedis,
    private readonly keys: QosKeys,
    readonly o: TenantLimitOptions = { maxQueued: 0, rate: 0 },
  ) {
    this.burst = o.burst ?? Math.max(1, o.rate);
    redis.defineCommand('epicQosAdmit', { numberOfKeys: 4, lua: ADMIT });
  }

  /** Admit `ids` of a tenant's class (one API request), or throw TenantLimitError. */
  async admit(tenant: string, cls: RequestClass, ids: string[]): Promise<void> {
    const other: RequestClass = cls === 'batch' ? 'interactive' : 'batch';
    const r = this.redis as unknown as { epicQosAdmit(...a: (string | number)[]): Promise<string[]> };
    const [verdict, detail] = await r.epicQosAdmit(
      this.keys.queued(cls, tenant),
      this.keys.queued(other, tenant),
      this.keys.rate(tenant),
      this.keys.tenants,
      this.o.maxQueued,
      this.o.rate,
      this.burst,
      tenant,
      ...ids,
    );
    if (verdict === 'ok') return;
    if (verdict === 'max_queued_requests') {
      throw new TenantLimitError(
        tenant,
        'max_queued_requests',
        `tenant ${tenant} has ${detail} requests queued; adding ${ids.length} would pass its limit of ${this.o.maxQueued} queued requests (TENANT_MAX_QUEUED); retry when some have started`,
        1,
      );
    }
    throw new TenantLimitError(tenant, 'request_rate', `tenant ${tenant} is past its request rate of ${this.o.rate}/s (TENANT_RATE, burst ${this.burst}); retry later`, Math.max(1, Math.ceil(Number(detail))));
  }

  /** Ids that will not start after all (their enqueue failed, they were removed). */
  async release(tenant: string, cls: RequestClass, ids: string[]): Promise<void> {
    for (let i = 0; i < ids.length; i += 1000) await this.redis.zrem(this.keys.queued(cls, tenant), ...ids.slice(i, i + 1000));
  }

  /**
   * Drops a tenant's queued ids, admitted more than `minAgeMs` ago, whose jobs `isWaiting` says no queue holds waiting
   * (younger ones may still be on their way into a queue). At most once per `everyMs` per tenant in this process.
   * Returns how many it dropped.
   */
  async reconcile(tenant: string, isWaiting: (ids: string[]) => Promise<boolean[]>, o: { minAgeMs?: number; everyMs?: number } = {}): Promise<number> {
    const last = this.reconciled.get(tenant) ?? -Infinity;
    if (performance.now() - last < (o.everyMs ?? 5000)) return 0;
    this.reconciled.set(tenant, performance.now());
    const [sec, usec] = (await this.redis.time()) as [string | number, string | number];
    const before = Number(sec) * 1000 + Math.floor(Number(usec) / 1000) - (o.minAgeMs ?? 10_000);
    let dropped = 0;
    for (const cls of REQUEST_CLASSES) {
      const key = this.keys.queued(cls, tenant);
      const ids = await this.redis.zrangebyscore(key, '-inf', before);
      if (!ids.length) continue;
      const waiting = await isWaiting(ids);
      const stale = ids.filter((_, i) => !waiting[i]);
      for (let i = 0; i < stale.length; i += 1000) dropped += await this.redis.zrem(key, ...stale.slice(i, i + 1000));
    }
    return dropped;
  }

  /** Each tenant's queued requests per class. */
  async waiting(): Promise<{ tenant: string; cls: RequestClass; n: number }[]> {
    const tenants = await this.redis.smembers(this.keys.tenants);
    const pairs = tenants.flatMap((tenant) => REQUEST_CLASSES.map((cls) => ({ tenant, cls })));
    const counts = await Promise.all(pairs.map((p) => this.redis.zcard(this.keys.queued(p.cls, p.tenant))));
    return pairs.map((p, i) => ({ ...p, n: counts[i] }));
  }
}
