import IORedis from 'ioredis';
import { LRUCache } from 'lru-cache';

const INVALIDATE = '__redis__:invalidate';

/**
 * An in-process cache of Redis values kept correct by Redis itself: server-assisted client-side caching (CLIENT
 * TRACKING in broadcast mode over one key prefix). Every write or delete of a key under the prefix, by any client,
 * sends its name to this cache's connection, which evicts it. The connection tracks itself (REDIRECT to its own id)
 * and speaks RESP2, where invalidations arrive as messages on `__redis__:invalidate` (ioredis drops RESP3's
 * invalidation pushes).
 *
 * The cache answers only while that connection is subscribed: when it drops, everything is evicted and reads go to
 * Redis until tracking is registered again. A read whose value could be older than an invalidation that arrived while
 * it was in flight is not kept (each read takes a ticket; any invalidation or reconnection voids the tickets before it).
 * A writer in this process evicts its key itself as well, so it reads its own writes at once; other processes see them
 * once the invalidation message arrives (sub-millisecond on one machine).
 */
/** Redis answered but would not track keys for this cache (a Redis before 6, CLIENT denied by an ACL). */
export class TrackingUnavailableError extends Error {}

export class TrackedCache<V extends object> {
  private readonly entries: LRUCache<string, V>;
  private readonly conn: IORedis;
  private live = false;
  /** Bumped by every invalidation and reconnection: a read's ticket is good only while it is unchanged. */
  private epoch = 0;
  private closed = false;
  /** Bumped when the connection drops: a registration started on an earlier connection must not mark this one live. */
  private connection = 0;
  private failures = 0;
  private retry?: NodeJS.Timeout;
  private readonly counts = { hits: 0, misses: 0, invalidations: 0 };

  constructor(
    url: string,
    readonly prefix: string,
    opts: { max: number; onError?: (e: Error) => void },
  ) {
    this.entries = new LRUCache<string, V>({ max: opts.max });
    // RESP2 so invalidations are pub/sub messages; tracking is re-registered (not re-subscribed) after a reconnect, and
    // a registration cut off by a dropped connection is not replayed on the next one.
    this.conn = new IORedis(url, { protocol: 2, autoResubscribe: false, autoResendUnfulfilledCommands: false, maxRetriesPerRequest: null, lazyConnect: true });
    this.conn.on('messageBuffer', (channel: Buffer, keys: unknown) => {
      if (channel.toString() !== INVALIDATE) return;
      this.epoch++;
      this.counts.invalidations++;
      // A null payload: the whole keyspace changed (FLUSHALL, FLUSHDB).
      if (!Array.isArray(keys)) this.entries.clear();
      else for (const k of keys) this.entries.delete(String(k));
    });
    this.conn.on('close', () => {
      this.connection++;
      this.live = false;
      this.epoch++;
      this.entries.clear();
    });
    this.conn.on('ready', () => {
      if (this.closed) return;
      const connection = this.connection;
      this.register(connection).catch((e: Error) => {
        if (this.closed || connection !== this.connection) return; // that connection is gone already
        opts.onError?.(e);
        // Not tracked: stay off and start the connection over, waiting longer after each failure in a row.
        const wait = Math.min(5000, 50 * 2 ** this.failures++);
        this.retry = setTimeout(() => connection === this.connection && !this.closed && this.conn.disconnect(true), wait);
      });
    });
    this.conn.on('error', (e: Error) => opts.onError?.(e));
  }

  /** Connects and registers tracking; resolves once the cache answers. On failure nothing is left running. */
  async open(): Promise<this> {
    try {
      await this.conn.connect();
      for (let i = 0; i < 200 && !this.live; i++) await new Promise((r) => setTimeout(r, 5));
      if (!this.live) throw new TrackingUnavailableError(`client-side caching of ${this.prefix}* could not be registered with Redis (CLIENT TRACKING needs Redis 6 or later)`);
      return this;
    } catch (e) {
      await this.close();
      throw e;
    }
  }

  /** Registers tracking on connection number `connection`; gives up silently if that connection dropped meanwhile. */
  private async register(connection: number): Promise<void> {
    const current = () => connection === this.connection && !this.closed;
    const id = String(await this.conn.client('ID'));
    if (!current()) return;
    await this.conn.call('CLIENT', 'TRACKING', 'ON', 'REDIRECT', id, 'BCAST', 'PREFIX', this.prefix);
    if (!current()) return;
    await this.conn.subscribe(INVALIDATE);
    if (!current()) return;
    // Whatever was read before now could have changed unseen.
    this.epoch++;
    this.entries.clear();
    this.failures = 0;
    this.live = true;
  }

  /** True while invalidations are being received: only then is anything served from or kept in the cache. */
  get tracking(): boolean {
    return this.live;
  }

  get(key: string): V | undefined {
    const v = this.live ? this.entries.get(key) : undefined;
    if (v) this.counts.hits++;
    else this.counts.misses++;
    return v;
  }

  /** Take before reading from Redis; pass to `keep`. */
  ticket(): number {
    return this.epoch;
  }

  /** Keep a value read from Redis, unless something was invalidated (or the connection dropped) since `ticket`. */
  keep(key: string, value: V, ticket: number): void {
    if (this.live && ticket === this.epoch) this.entries.set(key, value);
  }

  /**
   * This process wrote or deleted `key`: forget it now rather than when the invalidation arrives, and void every read
   * in flight (its value may predate the write).
   */
  evict(key: string): void {
    this.epoch++;
    this.entries.delete(key);
  }

  stats(): { entries: number; hits: number; misses: number; invalidations: number; tracking: boolean } {
    return { entries: this.entries.size, ...this.counts, tracking: this.live };
  }

  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.retry);
    this.live = false;
    this.entries.clear();
    // QUIT only on a live connection: on one that is reconnecting it would wait in the offline queue.
    if (this.conn.status === 'ready') await this.conn.quit().catch(() => this.conn.disconnect());
    else this.conn.disconnect();
  }
}
