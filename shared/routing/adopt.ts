import type { RoutingKeys } from './keys';
import type { RedisLike } from './residency';

/**
 * Claims the queues of workers that are gone, atomically (one claimer each): members of `workers` whose heartbeat ran
 * out, and `orphans` whose adopter's claim ran out (that adopter died too). Each moves to `orphans` with a claim of
 * ttl ms, and a dead worker's chunk hash is deleted. The caller itself is never claimed. Returns the ids claimed.
 */
const CLAIM = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[1])
local out = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)) do
  if id ~= ARGV[2] then
    redis.call('ZREM', KEYS[1], id)
    redis.call('DEL', ARGV[3] .. id)
    redis.call('ZADD', KEYS[2], now + ttl, id)
    table.insert(out, id)
  end
end
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)) do
  if id ~= ARGV[2] then
    redis.call('ZADD', KEYS[2], now + ttl, id)
    table.insert(out, id)
  end
end
return out
`;

/** Extends the caller's claims on the orphans it adopted; returns those it still holds (the others came back or went). */
const RENEW = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {}
for i = 2, #ARGV do
  if redis.call('ZSCORE', KEYS[1], ARGV[i]) then
    redis.call('ZADD', KEYS[1], now + tonumber(ARGV[1]), ARGV[i])
    table.insert(out, ARGV[i])
  end
end
return out
`;

/** What an adopter runs on a dead worker's queues: a BullMQ Worker, or several closed together. */
export interface Consumer {
  close(): Promise<unknown>;
}

export interface AdopterOptions {
  redis: RedisLike;
  keys: RoutingKeys;
  workerId: string;
  ttlMs?: number;
  /**
   * What consumes a dead worker's own queues (a BullMQ Worker per request class), taking its jobs into this worker
   * (the same processor): closed when the queues are drained or their owner is back.
   */
  consume: (deadWorkerId: string) => Consumer;
  /** Jobs left in a dead worker's queues (waiting, delayed, active; both classes): the adopter stops at 0. */
  remaining: (deadWorkerId: string) => Promise<number>;
  onAdopt?: (deadWorkerId: string) => void;
  onDone?: (deadWorkerId: string, reason: 'drained' | 'returned') => void;
  onError?: (e: Error) => void;
}

/**
 * A worker's watch over the others: every ttl/2 it claims the queues of dead workers and runs a BullMQ Worker on each
 * until it is empty (the Worker's stalled-job check hands the dead worker's running jobs back once their locks
 * expire, and then runs them here), or until the owner's heartbeat is back. Its claims are renewed meanwhile, so an
 * adopter that dies in turn leaves the orphan to another.
 */
export class Adopter {
  private readonly adopted = new Map<string, Consumer>();
  private timer?: NodeJS.Timeout;
  private running?: Promise<void>;
  private closed = false;
  private readonly ttlMs: number;

  constructor(private readonly o: AdopterOptions) {
    this.ttlMs = o.ttlMs ?? 10_000;
    o.redis.defineCommand('epicRoutingClaim', { numberOfKeys: 2, lua: CLAIM });
    o.redis.defineCommand('epicRoutingRenew', { numberOfKeys: 1, lua: RENEW });
  }

  start(): void {
    this.timer = setInterval(() => void this.tick(), Math.max(50, Math.floor(this.ttlMs / 2)));
    this.timer.unref();
  }

  /** Ids whose queues this worker consumes now. */
  adopting(): string[] {
    return [...this.adopted.keys()];
  }

  tick(): Promise<void> {
    this.running ??= this.step()
      .catch((e: Error) => this.o.onError?.(e))
      .finally(() => (this.running = undefined));
    return this.running;
  }

  private async step(): Promise<void> {
    if (this.closed) return;
    const r = this.o.redis as unknown as {
      epicRoutingClaim(...a: (string | number)[]): Promise<string[]>;
      epicRoutingRenew(...a: (string | number)[]): Promise<string[]>;
    };
    const { keys } = this.o;
    if (this.adopted.size) {
      const held = new Set(await r.epicRoutingRenew(keys.orphans, this.ttlMs, ...this.adopted.keys()));
      for (const id of [...this.adopted.keys()]) if (!held.has(id)) await this.release(id, 'returned');
    }
    for (const id of await r.epicRoutingClaim(keys.workers, keys.orphans, this.ttlMs, this.o.workerId, keys.chunks(''))) {
      if (this.closed || this.adopted.has(id)) continue;
      this.adopted.set(id, this.o.consume(id));
      this.o.onAdopt?.(id);
    }
    for (const id of [...this.adopted.keys()]) {
      if ((await this.o.remaining(id)) > 0) continue;
      await this.release(id, 'drained');
      await this.o.redis.zrem(keys.orphans, id);
    }
  }

  private async release(id: string, reason: 'drained' | 'returned'): Promise<void> {
    const w = this.adopted.get(id);
    this.adopted.delete(id);
    await w?.close();
    this.o.onDone?.(id, reason);
  }

  /** Stops adopting; the queues it held go back to the orphans (their claims run out, another worker takes them). */
  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    await this.running;
    await Promise.all([...this.adopted.keys()].map((id) => this.release(id, 'returned')));
  }
}
