/**
 * The tiered KV store: memory → disk → Redis, fastest first.
 *
 * - `get` looks the tiers up in order; a hit is promoted into the faster tiers that are written (memory at once, disk
 *   in the background). A blob that fails validation in one tier has already been deleted and counted by that tier;
 *   the lookup goes on to the next tier, and a chunk found nowhere intact is recomputed — a damaged blob is never
 *   returned.
 * - `getOrCompute` adds single flight. In one process, concurrent calls for one key share one lookup and at most one
 *   compile. Across processes (when Redis is read and written), a miss takes the chunk's compile lease (lease.ts);
 *   others poll Redis for the blob until it appears, the lease disappears without a blob (the holder died or failed:
 *   they take the lease themselves), or `waitTimeoutMs` passes (they compile without the lease).
 * - Which tiers are read and which are written is configurable; stats() returns plain counters.
 */
import type { KVBlock, KVShape } from '../engine/kv';
import type { KVBackend, ResidencyListener, SharedTier, StoredChunk, TierName, TierStats } from './backend';
import { TIERS } from './backend';
import { DiskBackend } from './disk';
import type { DiskTierOptions } from './disk';
import { isKVBlobError } from './errors';
import { encodeBlock, validateBlock } from './format';
import type { BlobDtype, DecodeExpect } from './format';
import { MemoryBackend } from './memory';
import type { MemoryTierOptions } from './memory';
import { RedisBackend } from './redis';
import type { RedisTierOptions } from './redis';

export interface LeaseOptions {
  /** Lease lifetime; refreshed every ttl/3 while compiling, so it only runs out when the holder is gone (default 10 s). */
  ttlMs?: number;
  /** Longest a process waits for another's compile before compiling itself (default 30 s). */
  waitTimeoutMs?: number;
  /** First poll interval while waiting; grows ×1.5 per poll up to maxPollMs (default 5 ms / 50 ms). */
  pollMs?: number;
  maxPollMs?: number;
}

/** A tier with the shared capability. */
type SharedBackend = KVBackend & { readonly shared: SharedTier };

export interface KVStoreOptions {
  /** Model id written into and required of every blob. */
  modelId: string;
  /** If given, every block put and every blob read must have this shape. */
  shape?: KVShape;
  /**
   * Payload type of the blobs written to disk and Redis (default float32). A model whose graph computes KV in float16
   * (engine.capabilities.kvDtype) stores float16: its KV is exactly representable, at half the bytes. Blobs of the
   * other type are refused as incompatible (and recomputed).
   */
  dtype?: BlobDtype;
  memory?: MemoryTierOptions | false;
  disk?: DiskTierOptions | false;
  redis?: RedisTierOptions | false;
  /** Tiers looked up (default: all configured). */
  readTiers?: TierName[];
  /** Tiers written on compile, put and promotion (default: all configured). */
  writeTiers?: TierName[];
  /** Cross-process compile lease over Redis (default on when Redis is read and written; false to disable). */
  lease?: LeaseOptions | false;
  /** Told when a chunk enters or leaves the memory or disk tier (the routing index's events). */
  residency?: ResidencyListener;
}

export type ChunkSource = TierName | 'compiled' | 'joined';

export interface ChunkResult {
  block: KVBlock;
  /** Where this call got the block: a tier, its own compile, or another in-process call's result. */
  source: ChunkSource;
  /** For 'joined': where the call it joined got the block. */
  leader?: ChunkSource;
}

export type CompileFn = () => KVBlock | Promise<KVBlock>;

export interface KVStoreStats {
  modelId: string;
  tiers: Partial<Record<TierName, TierStats>>;
  /** Store-level lookups (get / getOrCompute) and their outcome. */
  lookups: number;
  hits: number;
  misses: number;
  /** Hits that were copied into faster tiers. */
  promotions: number;
  computes: number;
  computeErrors: number;
  computeSeconds: number;
  /** getOrCompute calls that joined an in-flight call for the same key in this process. */
  singleFlightJoins: number;
  /** Misses that waited for another process's compile, how many of those got the blob, and how many timed out. */
  remoteWaits: number;
  remoteHits: number;
  remoteWaitTimeouts: number;
  /** Leases taken after the previous holder vanished without writing the blob. */
  leaseTakeovers: number;
  /** Blobs refused in any tier (deleted and recomputed), summed over tiers. */
  corrupt: number;
  incompatible: number;
  /** Failed tier writes (the chunk is still served). */
  writeErrors: number;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export class KVStore {
  readonly modelId: string;
  readonly shape?: KVShape;
  /** Payload type of the blobs this store writes. */
  readonly dtype: BlobDtype;
  private readonly backends = new Map<TierName, KVBackend>();
  private readonly readOrder: KVBackend[];
  private readonly writeSet: Set<TierName>;
  private readonly lease: Required<LeaseOptions> | undefined;
  private readonly sharedTier: SharedBackend | undefined;
  private readonly inflight = new Map<string, Promise<ChunkResult>>();
  private readonly background = new Set<Promise<unknown>>();
  private readonly c = {
    lookups: 0,
    hits: 0,
    misses: 0,
    promotions: 0,
    computes: 0,
    computeErrors: 0,
    computeSeconds: 0,
    singleFlightJoins: 0,
    remoteWaits: 0,
    remoteHits: 0,
    remoteWaitTimeouts: 0,
    leaseTakeovers: 0,
    writeErrors: 0,
  };

  private constructor(opts: KVStoreOptions, backends: KVBackend[]) {
    this.modelId = opts.modelId;
    this.shape = opts.shape;
    this.dtype = opts.dtype ?? 'float32';
    for (const b of backends) this.backends.set(b.tier, b);
    const configured = TIERS.filter((t) => this.backends.has(t));
    for (const t of [...(opts.readTiers ?? []), ...(opts.writeTiers ?? [])]) {
      if (!this.backends.has(t)) throw new Error(`kvstore: tier ${t} is listed but not configured`);
    }
    const reads = new Set(opts.readTiers ?? configured);
    this.readOrder = configured.filter((t) => reads.has(t)).map((t) => this.backends.get(t)!);
    this.writeSet = new Set(opts.writeTiers ?? configured);
    // The tier that coordinates compiles across processes (Redis): only when it is both read and written.
    this.sharedTier = [...this.backends.values()].find((b): b is SharedBackend => !!b.shared && reads.has(b.tier) && this.writeSet.has(b.tier));
    this.lease =
      opts.lease === false || !this.sharedTier
        ? undefined
        : {
            ttlMs: opts.lease?.ttlMs ?? 10_000,
            waitTimeoutMs: opts.lease?.waitTimeoutMs ?? 30_000,
            pollMs: opts.lease?.pollMs ?? 5,
            maxPollMs: opts.lease?.maxPollMs ?? 50,
          };
  }

  /** Opens the configured tiers (the disk tier rebuilds its index from its directory first). */
  static async open(opts: KVStoreOptions): Promise<KVStore> {
    const expect: DecodeExpect = { modelId: opts.modelId, shape: opts.shape, dtype: opts.dtype };
    const backends: KVBackend[] = [];
    try {
      const onResidency = opts.residency;
      if (opts.memory) backends.push(new MemoryBackend(onResidency ? { onResidency, ...opts.memory } : opts.memory));
      if (opts.disk) backends.push(await DiskBackend.open(onResidency ? { onResidency, ...opts.disk } : opts.disk, expect));
      if (opts.redis) backends.push(new RedisBackend(opts.redis, expect));
      return new KVStore(opts, backends);
    } catch (e) {
      await Promise.all(backends.map((b) => b.close().catch(() => undefined)));
      throw e;
    }
  }

  /** The backend of a tier, if configured (for tools, tests and benchmarks). */
  tier<T extends TierName>(name: T): (T extends 'memory' ? MemoryBackend : T extends 'disk' ? DiskBackend : RedisBackend) | undefined {
    return this.backends.get(name) as never;
  }

  /** Looks the chunk up in the read tiers, promoting a hit. Never returns a blob that failed validation. */
  async get(key: string): Promise<KVBlock | undefined> {
    this.c.lookups++;
    const hit = await this.lookup(key, this.readOrder);
    if (hit) this.c.hits++;
    else this.c.misses++;
    return hit?.block;
  }

  /** Several chunks at once (e.g. one request's chunks), looked up concurrently. */
  async getMany(keys: string[]): Promise<(KVBlock | undefined)[]> {
    return Promise.all(keys.map((k) => this.get(k)));
  }

  /** The fastest read tier that holds the key (no validation, no counters), or undefined. */
  async has(key: string): Promise<TierName | undefined> {
    for (const b of this.readOrder) if (await b.has(key)) return b.tier;
    return undefined;
  }

  /** Writes a block into every write tier (Redis and memory awaited; disk too). */
  async put(key: string, block: KVBlock): Promise<void> {
    validateBlock(block, this.shape);
    await this.writeAll(key, block, undefined, TIERS, false);
  }

  /**
   * Writes a block the process holds into the tiers after `from` (slower, shared: disk, Redis) that lack it: a shared
   * tier may have lost an entry (eviction, a restart) that a faster tier still has. Returns the tiers written.
   */
  async restore(key: string, block: KVBlock, from: TierName): Promise<TierName[]> {
    const slower = TIERS.slice(TIERS.indexOf(from) + 1).filter((t) => this.writeSet.has(t) && this.backends.has(t));
    const missing: TierName[] = [];
    for (const t of slower) if (!(await this.backends.get(t)!.has(key).catch(() => true))) missing.push(t);
    if (missing.length) await this.writeAll(key, block, undefined, missing, false);
    return missing;
  }

  /** Removes the key from every configured tier. */
  async delete(key: string): Promise<void> {
    await Promise.all([...this.backends.values()].map((b) => b.delete(key).catch(() => false)));
  }

  async getOrCompute(key: string, compile: CompileFn): Promise<KVBlock> {
    return (await this.lookupOrCompute(key, compile)).block;
  }

  /** Like getOrCompute, and says where the block came from (for cached-token accounting). */
  lookupOrCompute(key: string, compile: CompileFn): Promise<ChunkResult> {
    const pending = this.inflight.get(key);
    if (pending) {
      this.c.singleFlightJoins++;
      return pending.then((r) => ({ block: r.block, source: 'joined' as const, leader: r.source }));
    }
    const p = (async (): Promise<ChunkResult> => {
      this.c.lookups++;
      const hit = await this.lookup(key, this.readOrder);
      if (hit) {
        this.c.hits++;
        return { block: hit.block, source: hit.tier };
      }
      this.c.misses++;
      return this.computeShared(key, compile);
    })();
    this.inflight.set(key, p);
    const done = () => {
      if (this.inflight.get(key) === p) this.inflight.delete(key);
    };
    p.then(done, done);
    return p;
  }

  /** Waits for background promotions and writes. */
  async flush(): Promise<void> {
    while (this.background.size) await Promise.all([...this.background]);
  }

  stats(): KVStoreStats {
    const tiers: Partial<Record<TierName, TierStats>> = {};
    let corrupt = 0;
    let incompatible = 0;
    for (const [name, b] of this.backends) {
      const s = b.stats();
      tiers[name] = s;
      corrupt += s.corrupt;
      incompatible += s.incompatible;
    }
    return { modelId: this.modelId, tiers, ...this.c, corrupt, incompatible };
  }

  async close(): Promise<void> {
    await this.flush();
    await Promise.all([...this.backends.values()].map((b) => b.close()));
  }

  // ——— internals ———

  private async lookup(key: string, order: KVBackend[]): Promise<(StoredChunk & { tier: TierName }) | undefined> {
    for (let i = 0; i < order.length; i++) {
      const b = order[i];
      let got: StoredChunk | undefined;
      try {
        got = await b.get(key);
      } catch (e) {
        if (isKVBlobError(e)) continue; // deleted and counted by the tier; try the next one, else recompute
        throw e;
      }
      if (!got) continue;
      this.promote(key, got, b.tier);
      return { ...got, tier: b.tier };
    }
    return undefined;
  }

  /** Copies a hit into the written tiers faster than the one it came from. */
  private promote(key: string, got: StoredChunk, from: TierName): void {
    const faster = TIERS.slice(0, TIERS.indexOf(from)).filter((t) => this.writeSet.has(t) && this.backends.has(t));
    if (!faster.length) return;
    this.c.promotions++;
    void this.writeAll(key, got.block, got.blob, faster, true);
  }

  /**
   * Writes into `tiers` ∩ write tiers. Memory synchronously; Redis awaited; disk awaited unless `diskInBackground`.
   * Failures are counted, not thrown: the block is still good to serve.
   */
  private async writeAll(key: string, block: KVBlock, blob: Buffer | undefined, tiers: readonly TierName[], diskInBackground: boolean): Promise<void> {
    const targets = tiers.filter((t) => this.writeSet.has(t)).map((t) => this.backends.get(t)).filter((b): b is KVBackend => !!b);
    const waits: Promise<unknown>[] = [];
    for (const b of targets) {
      if (b.putSync) {
        b.putSync(key, block);
        continue;
      }
      blob ??= encodeBlock(block, this.modelId, this.dtype);
      const w = b.put(key, block, blob).catch(() => {
        this.c.writeErrors++;
      });
      if (b.tier === 'disk' && diskInBackground) this.track(w);
      else waits.push(w);
    }
    await Promise.all(waits);
  }

  private track(p: Promise<unknown>): void {
    this.background.add(p);
    void p.finally(() => this.background.delete(p));
  }

  private async compileAndStore(key: string, compile: CompileFn): Promise<ChunkResult> {
    this.c.computes++;
    const t0 = process.hrtime.bigint();
    let block: KVBlock;
    try {
      block = await compile();
      validateBlock(block, this.shape);
    } catch (e) {
      this.c.computeErrors++;
      throw e;
    } finally {
      this.c.computeSeconds += Number(process.hrtime.bigint() - t0) / 1e9;
    }
    await this.writeAll(key, block, undefined, TIERS, false);
    return { block, source: 'compiled' };
  }

  /** One read of the shared tier while coordinating: an absent blob is not counted as a tier miss; a bad one is refused. */
  private async pollShared(b: SharedBackend, key: string): Promise<KVBlock | undefined> {
    let got: StoredChunk | undefined;
    try {
      got = await b.shared.poll(key);
    } catch (e) {
      if (isKVBlobError(e)) return undefined;
      throw e;
    }
    if (!got) return undefined;
    this.promote(key, got, b.tier);
    return got.block;
  }

  /** Compile under the cross-process lease, or wait for whoever holds it. */
  private async computeShared(key: string, compile: CompileFn): Promise<ChunkResult> {
    const lease = this.lease;
    const shared = this.sharedTier;
    if (!lease || !shared || !shared.shared.available) return this.compileAndStore(key, compile);
    const deadline = Date.now() + lease.waitTimeoutMs;
    let waited = false;
    let sawHolder = false;
    for (;;) {
      let held;
      try {
        held = await shared.shared.tryLease(key, lease.ttlMs);
      } catch {
        return this.compileAndStore(key, compile); // Redis unreachable: no coordination
      }
      if (held) {
        try {
          if (sawHolder) this.c.leaseTakeovers++;
          // Someone may have finished between our miss and our lease.
          const late = await this.pollShared(shared, key);
          if (late) return { block: late, source: 'redis' };
          return await this.compileAndStore(key, compile);
        } finally {
          await held.release();
        }
      }
      sawHolder = true;
      if (!waited) {
        waited = true;
        this.c.remoteWaits++;
      }
      // Wait for the holder's blob, or for its lease to vanish.
      let delay = lease.pollMs;
      for (;;) {
        if (Date.now() >= deadline) {
          this.c.remoteWaitTimeouts++;
          return this.compileAndStore(key, compile);
        }
        await sleep(Math.min(delay, Math.max(1, deadline - Date.now())));
        delay = Math.min(lease.maxPollMs, delay * 1.5);
        const got = await this.pollShared(shared, key);
        if (got) {
          this.c.remoteHits++;
          return { block: got, source: 'redis' };
        }
        if (!(await shared.shared.leaseHeld(key))) break; // holder gone without a blob: try to take over
      }
    }
  }
}
