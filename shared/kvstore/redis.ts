/**
 * Redis tier: shared by every worker. One string value per chunk holding the blob (format.ts), read with getBuffer
 * (no string conversion) and decoded as views on the reply buffer.
 *
 * Keys: `<prefix>:<model>:{<chunk key>}` and, for the compile lease (lease.ts), `<prefix>:<model>:{<chunk key>}:lock`.
 * The hash tag is the chunk key, so on Redis Cluster a blob and its lock live in one slot (atomic scripts over both
 * work) while different chunks spread over all the shards — a single `{kv}` tag for everything would pin the whole
 * cache to one shard.
 *
 * Give the KV cache its own Redis (URL separate from the BullMQ queue's): a cache wants `maxmemory-policy allkeys-lru`
 * and no persistence, the queue needs `noeviction` (DESIGN.md §3). Connection errors degrade to misses and skipped
 * writes; they never fail a request.
 */
import { Cluster, Redis } from 'ioredis';
import type { KVBlock } from '../engine/kv';
import type { KVBackend, SharedTier, StoredChunk, TierStats } from './backend';
import { emptyStats } from './backend';
import { isKVBlobError } from './errors';
import { decodeBlock, encodeBlock, validateBlock } from './format';
import type { DecodeExpect } from './format';
import { assertValidKey } from './key';
import { leaseHeld, tryAcquireLease, type RedisClient } from './lease';

export type { RedisClient };


export interface RedisTierOptions {
  /** redis://… URL of the KV cache's Redis (not the queue's). Ignored when `client` is given. */
  url?: string;
  /** An existing client (standalone or Cluster); the tier does not close a client it did not create. */
  client?: RedisClient;
  /** Key prefix (default `epic:kv`). */
  prefix?: string;
  /** Expire entries this many ms after the last write (or read, with slidingTtl). Default: no TTL. */
  ttlMs?: number;
  /** With ttlMs: refresh the TTL on every hit (GETEX). Default true. */
  slidingTtl?: boolean;
  /** Per-command timeout (default 5000 ms). */
  commandTimeoutMs?: number;
}

function sanitizeModel(modelId: string): string {
  return modelId.replace(/[^A-Za-z0-9._\/-]/g, '_');
}

export class RedisBackend implements KVBackend {
  readonly tier = 'redis' as const;
  readonly client: RedisClient;
  readonly prefix: string;
  private readonly ownsClient: boolean;
  private readonly counters: TierStats;

  constructor(
    private readonly opts: RedisTierOptions,
    private readonly expect: DecodeExpect,
  ) {
    this.counters = { ...emptyStats('redis', null), entries: null, bytes: null };
    this.prefix = `${opts.prefix ?? 'epic:kv'}:${sanitizeModel(expect.modelId)}`;
    if (opts.client) {
      this.client = opts.client;
      this.ownsClient = false;
    } else {
      this.client = new Redis(opts.url ?? 'redis://127.0.0.1:6379', {
        maxRetriesPerRequest: 1,
        commandTimeout: opts.commandTimeoutMs ?? 5000,
        connectionName: 'epic-kvstore',
        // ioredis arms this timer even when the socket is already gone (then it only delays process exit)
        disconnectTimeout: 200,
      });
      this.client.on('error', () => {
        this.counters.errors++;
      });
      this.ownsClient = true;
    }
  }

  /**
   * False while the connection is lost (reconnecting / closed): operations then fail fast as misses and skipped writes
   * instead of queueing behind the reconnect. Before the first connect, commands queue as usual.
   */
  get available(): boolean {
    const s = this.client.status;
    return s !== 'reconnecting' && s !== 'close' && s !== 'end';
  }

  blobKey(key: string): string {
    assertValidKey(key);
    return `${this.prefix}:{${key}}`;
  }

  lockKey(key: string): string {
    return `${this.blobKey(key)}:lock`;
  }

  /** The compile lease and polling for another process's blob (see SharedTier). */
  readonly shared: SharedTier = ((b: RedisBackend): SharedTier => ({
    get available() {
      return b.available;
    },
    tryLease: (key, ttlMs) => tryAcquireLease(b.client, b.lockKey(key), ttlMs),
    leaseHeld: (key) => leaseHeld(b.client, b.lockKey(key)),
    poll: async (key) => {
      let blob: Buffer | null;
      try {
        blob = await b.getRaw(key);
      } catch {
        return undefined;
      }
      return blob ? { block: b.decode(key, blob), blob } : undefined;
    },
  }))(this);

  /** Raw read (no validation); null when absent. Throws on connection errors. */
  async getRaw(key: string): Promise<Buffer | null> {
    const k = this.blobKey(key);
    if (!this.available) throw new Error('redis tier: connection lost');
    const { ttlMs, slidingTtl } = this.opts;
    return ttlMs && slidingTtl !== false ? this.client.getexBuffer(k, 'PX', ttlMs) : this.client.getBuffer(k);
  }

  async get(key: string): Promise<StoredChunk | undefined> {
    let blob: Buffer | null;
    try {
      blob = await this.getRaw(key);
    } catch {
      this.counters.errors++;
      this.counters.misses++;
      return undefined;
    }
    if (!blob) {
      this.counters.misses++;
      return undefined;
    }
    return { block: this.decode(key, blob), blob };
  }

  /** Validates a blob read from `key`; on failure deletes the key, counts, and rethrows. */
  decode(key: string, blob: Buffer): KVBlock {
    this.counters.bytesRead += blob.length;
    try {
      const block = decodeBlock(blob, this.expect);
      this.counters.hits++;
      return block;
    } catch (e) {
      if (isKVBlobError(e)) {
        if (e.kind === 'corrupt') this.counters.corrupt++;
        else this.counters.incompatible++;
        this.client.del(this.blobKey(key)).catch(() => this.counters.errors++);
      }
      throw e;
    }
  }

  async put(key: string, block: KVBlock, blob?: Buffer): Promise<void> {
    if (blob === undefined) blob = encodeBlock(block, this.expect.modelId, this.expect.dtype);
    else validateBlock(block);
    const k = this.blobKey(key);
    try {
      if (!this.available) throw new Error('redis tier: connection lost');
      if (this.opts.ttlMs) await this.client.set(k, blob, 'PX', this.opts.ttlMs);
      else await this.client.set(k, blob);
    } catch (e) {
      this.counters.errors++;
      throw e;
    }
    this.counters.puts++;
    this.counters.bytesWritten += blob.length;
  }

  async delete(key: string): Promise<boolean> {
    const n = await this.client.del(this.blobKey(key));
    if (n > 0) this.counters.deletes++;
    return n > 0;
  }

  async has(key: string): Promise<boolean> {
    if (!this.available) return false;
    try {
      return (await this.client.exists(this.blobKey(key))) > 0;
    } catch {
      this.counters.errors++;
      return false;
    }
  }

  stats(): TierStats {
    return { ...this.counters };
  }

  /**
   * Entries and bytes under this model's prefix, by SCAN + STRLEN (standalone Redis only; O(keys) — for tools and
   * tests, not for the request path).
   */
  async scanUsage(): Promise<{ entries: number; bytes: number }> {
    const keys = await this.scanKeys();
    let bytes = 0;
    for (let i = 0; i < keys.length; i += 500) {
      const p = (this.client as Redis).pipeline();
      for (const k of keys.slice(i, i + 500)) p.strlen(k);
      for (const [err, n] of (await p.exec()) ?? []) if (!err) bytes += Number(n);
    }
    return { entries: keys.length, bytes };
  }

  /** Deletes every blob and lock under this model's prefix (standalone Redis only). Returns the number deleted. */
  async deleteAll(): Promise<number> {
    const keys = await this.scanKeys(true);
    let n = 0;
    for (let i = 0; i < keys.length; i += 500) n += await this.client.del(...keys.slice(i, i + 500));
    return n;
  }

  private async scanKeys(withLocks = false): Promise<string[]> {
    if (this.client instanceof Cluster) throw new Error('redis tier: scan is only supported on standalone Redis');
    const pattern = `${this.prefix.replace(/[*?[\]\\]/g, '\\$&')}:{*}${withLocks ? '*' : ''}`;
    const out: string[] = [];
    let cursor = '0';
    do {
      const [next, keys] = await this.client.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
      cursor = next;
      for (const k of keys) if (withLocks || !k.endsWith(':lock')) out.push(k);
    } while (cursor !== '0');
    return out;
  }

  async close(): Promise<void> {
    if (!this.ownsClient) return;
    if (this.client.status !== 'ready') {
      this.client.disconnect();
      return;
    }
    try {
      await this.client.quit();
    } catch {
      this.client.disconnect();
    }
  }
}
