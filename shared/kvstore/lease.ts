/**
 * The compile lease: across processes, one chunk is compiled by whoever holds its Redis lock
 * (`SET <lock> <token> NX PX <ttl>`). The holder refreshes the lease while compiling, writes the blob, then releases
 * the lease (compare-and-delete, so an expired holder never frees someone else's lease). Others wait for the blob;
 * if the holder dies its lease expires after `ttlMs` and a waiter takes over.
 */
import { randomBytes } from 'node:crypto';
import type { Cluster, Redis } from 'ioredis';

/** A standalone or Cluster client. */
export type RedisClient = Redis | Cluster;

const REFRESH = `if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end`;
const RELEASE = `if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end`;

export interface Lease {
  readonly lockKey: string;
  readonly token: string;
  /** Stops refreshing and deletes the lock if still ours. Never throws. */
  release(): Promise<void>;
}

export function leaseToken(): string {
  return `${process.pid}:${randomBytes(8).toString('hex')}`;
}

/** Tries to take the lease; undefined when another process holds it. Throws when Redis cannot be reached. */
export async function tryAcquireLease(client: RedisClient, lockKey: string, ttlMs: number): Promise<Lease | undefined> {
  const token = leaseToken();
  const ok = await client.set(lockKey, token, 'PX', ttlMs, 'NX');
  if (ok !== 'OK') return undefined;
  const timer = setInterval(() => {
    client.eval(REFRESH, 1, lockKey, token, ttlMs).catch(() => undefined);
  }, Math.max(50, Math.floor(ttlMs / 3)));
  timer.unref();
  let released = false;
  return {
    lockKey,
    token,
    async release() {
      if (released) return;
      released = true;
      clearInterval(timer);
      await client.eval(RELEASE, 1, lockKey, token).catch(() => undefined);
    },
  };
}

/** True when some process holds the lease. Errors count as "not held". */
export async function leaseHeld(client: RedisClient, lockKey: string): Promise<boolean> {
  try {
    return (await client.exists(lockKey)) > 0;
  } catch {
    return false;
  }
}
