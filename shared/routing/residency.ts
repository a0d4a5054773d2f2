import type IORedis from 'ioredis';
import type { Cluster } from 'ioredis';
import type { ResidencyListener, TierName } from '../kvstore';
import { RoutingKeys } from './keys';
import type { Residence } from './score';

export type RedisLike = IORedis | Cluster;

/**
 * One heartbeat, atomically (every key shares the queue prefix's slot): the worker is live until now + ttl (Redis's
 * clock), its chunk hash expires then too, it is no orphan (a worker that came back after being given up takes its
 * queue back), and its queue is known. Returns [whether it was a live member before, whether its hash existed].
 */
const HEARTBEAT = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
local was = redis.call('ZSCORE', KEYS[1], ARGV[1])
local live = 0
if was and tonumber(was) > now then live = 1 end
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('SADD', KEYS[3], ARGV[1])
local had = redis.call('PEXPIRE', KEYS[4], ttl)
return {live, had}
`;

export interface ResidencyOptions {
  redis: RedisLike;
  keys: RoutingKeys;
  workerId: string;
  /** Heartbeat TTL: the worker and its index entries vanish this long after its last beat (default 10 s). */
  ttlMs?: number;
  /** Changes are written in batches at most this often (default 50 ms). */
  flushMs?: number;
  onError?: (e: Error) => void;
}

/**
 * The worker's side of the routing index: its memory and disk tiers' residency events (the KV store's
 * `residency` listener) kept as a local map and written to its chunk hash in batches; and its heartbeat, every
 * ttl/3. A beat that finds the worker had been given up (its hash expired, or it was no live member) writes the
 * whole map again.
 */
export class ResidencyPublisher {
  private readonly memory = new Set<string>();
  private readonly disk = new Set<string>();
  private readonly dirty = new Set<string>();
  private readonly ttlMs: number;
  private readonly flushMs: number;
  private beatTimer?: NodeJS.Timeout;
  private flushTimer?: NodeJS.Timeout;
  private flushing: Promise<void> = Promise.resolve();
  private closed = false;
  /** Beats sent (tests wait for one). */
  beats = 0;

  constructor(private readonly o: ResidencyOptions) {
    this.ttlMs = o.ttlMs ?? 10_000;
    this.flushMs = o.flushMs ?? 50;
    o.redis.defineCommand('epicRoutingBeat', { numberOfKeys: 4, lua: HEARTBEAT });
  }

  /** The KV store's residency listener. */
  readonly listener: ResidencyListener = (tier: TierName, key: string, held: boolean) => {
    const set = tier === 'memory' ? this.memory : tier === 'disk' ? this.disk : undefined;
    if (!set) return;
    if (held) set.add(key);
    else set.delete(key);
    this.dirty.add(key);
    this.schedule();
  };

  /** Where this worker holds `key` now (the value its hash gets). */
  residence(key: string): Residence {
    return this.memory.has(key) ? 'm' : this.disk.has(key) ? 'd' : undefined;
  }

  /** Chunks held in each tier, as published. */
  sizes(): { memory: number; disk: number } {
    return { memory: this.memory.size, disk: this.disk.size };
  }

  /** First beat and the whole map written; then beats every ttl/3. */
  async start(): Promise<void> {
    for (const k of [...this.memory, ...this.disk]) this.dirty.add(k);
    await this.beat();
    await this.flush();
    this.beatTimer = setInterval(() => void this.beat().catch((e: Error) => this.o.onError?.(e)), Math.max(50, Math.floor(this.ttlMs / 3)));
    this.beatTimer.unref();
  }

  async beat(): Promise<void> {
    if (this.closed) return;
    const { keys, workerId } = this.o;
    const [live, had] = (await (this.o.redis as unknown as { epicRoutingBeat(...a: (string | number)[]): Promise<[number, number]> }).epicRoutingBeat(
      keys.workers,
      keys.orphans,
      keys.queues,
      keys.chunks(workerId),
      workerId,
      this.ttlMs,
    )) as [number, number];
    this.beats++;
    if ((!live || !had) && this.memory.size + this.disk.size > 0) {
      for (const k of [...this.memory, ...this.disk]) this.dirty.add(k);
      this.schedule(0);
    }
  }

  private schedule(ms = this.flushMs): void {
    if (this.flushTimer || this.closed) return;
    this.flushTimer = setTimeout(() => {
      this.flushTimer = undefined;
      void this.flush().catch((e: Error) => this.o.onError?.(e));
    }, ms);
    this.flushTimer.unref();
  }

  /** Writes the pending changes (one pipeline: HSET, HDEL, PEXPIRE). */
  flush(): Promise<void> {
    this.flushing = this.flushing.catch(() => undefined).then(async () => {
      if (!this.dirty.size) return;
      const key = this.o.keys.chunks(this.o.workerId);
      const set: string[] = [];
      const del: string[] = [];
      for (const k of this.dirty) {
        const r = this.residence(k);
        if (r) set.push(k, r);
        else del.push(k);
      }
      this.dirty.clear();
      const p = this.o.redis.pipeline();
      if (set.length) p.hset(key, ...set);
      if (del.length) p.hdel(key, ...del);
      p.pexpire(key, this.ttlMs);
      const res = await p.exec();
      const failed = res?.find(([e]) => e)?.[0];
      if (failed) throw failed;
    });
    return this.flushing;
  }

  /** Leaves the index at once (a clean stop): no longer live, its hash gone. The caller marks its queue orphaned. */
  async close(): Promise<void> {
    this.closed = true;
    if (this.beatTimer) clearInterval(this.beatTimer);
    if (this.flushTimer) clearTimeout(this.flushTimer);
    await this.flushing.catch(() => undefined);
    const { keys, workerId } = this.o;
    await this.o.redis.multi().zrem(keys.workers, workerId).del(keys.chunks(workerId)).exec();
  }
}
