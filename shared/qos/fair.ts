import type { QosKeys } from './keys';

/** BullMQ's largest job priority (2^21): a tag past it is clamped, and fairness there degrades to FIFO. */
export const MAX_PRIORITY = 2_097_152;

/**
 * Start-time fair queuing (Goyal et al., 1996) of tenants within one queue, on BullMQ's job priorities (a worker takes
 * the prioritized jobs by priority, then insertion order). A tenant's n new jobs get tags
 * max(V, last_t) + i·S/w_t (i = 1..n, S = 1, w_t the tenant's weight) and priority 1 + floor(tag); `last_t` becomes
 * the last of them; V, the queue's virtual time, is the largest tag a worker has started. So a tenant that sends a
 * batch of 3,000 holds tags V+1..V+3,000, and another tenant's batch, sent later, starts at the V of that moment:
 * their jobs interleave, one each by turn (by weight), and an idle tenant's share goes to the others (its last tag
 * falls behind V, and the max() takes V). Tags restart from 0 when the queue holds no waiting job, so priorities stay
 * small; a queue that holds more than MAX_PRIORITY jobs' worth of tags gets the clamped priority for the rest (FIFO).
 */
const TAGS = `
if redis.call('LLEN', KEYS[2]) == 0 and redis.call('ZCARD', KEYS[3]) == 0 then
  redis.call('DEL', KEYS[1])
end
local v = tonumber(redis.call('HGET', KEYS[1], 'v') or '0')
local field = 't:' .. ARGV[1]
local last = tonumber(redis.call('HGET', KEYS[1], field) or '0')
local start = math.max(v, last)
redis.call('HSET', KEYS[1], field, tostring(start + tonumber(ARGV[3]) * tonumber(ARGV[2])))
redis.call('PEXPIRE', KEYS[1], 7 * 86400 * 1000)
return tostring(start)
`;

/** A worker started a job: V = max(V, its tag), and the job leaves its tenant's queued set. */
const STARTED = `
if ARGV[1] ~= '' then
  local v = tonumber(redis.call('HGET', KEYS[1], 'v') or '0')
  if tonumber(ARGV[1]) > v then redis.call('HSET', KEYS[1], 'v', ARGV[1]) end
end
redis.call('ZREM', KEYS[2], ARGV[2])
return 1
`;

/** What the scripts need of a connection (ioredis's, or a Cluster's). */
export interface ScriptRedis {
  defineCommand(name: string, def: { numberOfKeys: number; lua: string }): void;
}

/** Parses TENANT_WEIGHTS (`tenant:weight,…`): a tenant's weight, default 1. */
export function parseWeights(spec: string | undefined): Map<string, number> {
  const out = new Map<string, number>();
  for (const part of (spec ?? '').split(',').map((p) => p.trim()).filter(Boolean)) {
    const at = part.lastIndexOf(':');
    const w = Number(part.slice(at + 1));
    if (at <= 0 || !(w > 0) || !Number.isFinite(w)) throw new Error(`TENANT_WEIGHTS: want tenant:weight with a weight > 0, got ${JSON.stringify(part)}`);
    out.set(part.slice(0, at), w);
  }
  return out;
}

export function priorityOf(tag: number): number {
  return Math.min(MAX_PRIORITY, 1 + Math.floor(tag));
}

export class FairQueuing {
  constructor(
    private readonly redis: ScriptRedis,
    private readonly keys: QosKeys,
    private readonly weights: Map<string, number> = new Map(),
  ) {
    redis.defineCommand('epicQosTags', { numberOfKeys: 3, lua: TAGS });
    redis.defineCommand('epicQosStarted', { numberOfKeys: 2, lua: STARTED });
  }

  weight(tenant: string): number {
    return this.weights.get(tenant) ?? 1;
  }

  /** Tags of a tenant's `n` new jobs in a queue, in order (each job's priority is priorityOf(tag)). */
  async tags(queueName: string, tenant: string, n: number): Promise<number[]> {
    const step = 1 / this.weight(tenant);
    const r = this.redis as unknown as { epicQosTags(...a: (string | number)[]): Promise<string> };
    const start = Number(await r.epicQosTags(this.keys.fair(queueName), this.keys.queueKey(queueName, 'wait'), this.keys.queueKey(queueName, 'prioritized'), tenant, step, n));
    return Array.from({ length: n }, (_, i) => start + (i + 1) * step);
  }

  /** A worker started a job of `queueName`: the queue's virtual time advances to its tag; it no longer counts as queued. */
  async started(queueName: string, queuedKey: string, jobId: string, tag: number | undefined): Promise<void> {
    const r = this.redis as unknown as { epicQosStarted(...a: (string | number)[]): Promise<number> };
    await r.epicQosStarted(this.keys.fair(queueName), queuedKey, tag === undefined ? '' : String(tag), jobId);
  }
}
