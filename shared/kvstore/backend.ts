/**
 * What every tier offers. A tier maps a chunk key to an immutable KVBlock; the disk and Redis tiers keep it as a blob
 * (see format.ts) and validate it on every read. A tier that finds a damaged or foreign blob deletes it, counts it,
 * and throws the KVBlobError (CorruptBlobError / IncompatibleBlobError) so the caller can count and recompute; a
 * damaged blob is never returned.
 */
import type { KVBlock } from '../engine/kv';

export type TierName = 'memory' | 'disk' | 'redis';
export const TIERS: readonly TierName[] = ['memory', 'disk', 'redis'];

/**
 * Residency events of a process-local tier (memory, disk): `held` true when a chunk enters the tier, false when it
 * leaves it (evicted, deleted, cleared). What a worker publishes to the routing index (shared/routing/residency.ts).
 */
export type ResidencyListener = (tier: TierName, key: string, held: boolean) => void;

/** A block as a tier returns it; `blob` is the encoded bytes when the tier had them (saves re-encoding on promotion). */
export interface StoredChunk {
  block: KVBlock;
  blob?: Buffer;
}

/** Plain counters of one tier (cumulative since the tier was opened, except entries/bytes). */
export interface TierStats {
  tier: TierName;
  hits: number;
  misses: number;
  puts: number;
  evictions: number;
  deletes: number;
  /** Blobs that failed integrity checks (bad magic, truncated, checksum) and were deleted. */
  corrupt: number;
  /** Intact blobs for another format version / model / dtype / shape, deleted. */
  incompatible: number;
  /** I/O or connection errors (treated as misses / skipped writes). */
  errors: number;
  /** Current entries and bytes held by this tier, or null when this process cannot know (a shared Redis). */
  entries: number | null;
  bytes: number | null;
  /** Configured byte budget, or null when the tier has none (Redis: the server's maxmemory policy decides). */
  budgetBytes: number | null;
  bytesRead: number;
  bytesWritten: number;
}

/**
 * The capability of a tier every process shares (Redis): compiles of one chunk are coordinated across processes (a
 * lease per key: one compiles, the others wait for its blob), and the tier can be polled for that blob.
 */
export interface SharedTier {
  /** False while the tier cannot be reached: the store then compiles without coordinating. */
  readonly available: boolean;
  /** Takes the compile lease of `key` for `ttlMs`, or undefined when another process holds it. Throws when unreachable. */
  tryLease(key: string, ttlMs: number): Promise<{ release(): Promise<void> } | undefined>;
  /** Whether some process holds the compile lease of `key`. */
  leaseHeld(key: string): Promise<boolean>;
  /**
   * One read while waiting for another process's blob: undefined when absent or unreadable (not counted as a miss).
   * Throws a KVBlobError (after deleting and counting the blob) when it is bad.
   */
  poll(key: string): Promise<StoredChunk | undefined>;
}

/**
 * A tier. Beyond get/put/delete/has, a tier states what more it can do (as LMCache's abstract backend does), and the
 * store asks for the capability, never for the class: `putSync` (a write done before the caller's next await: process
 * memory), `shared` (coordination across processes: Redis).
 */
export interface KVBackend {
  readonly tier: TierName;
  /** Capability: stores a chunk synchronously (a lookup right after sees it). */
  putSync?(key: string, block: KVBlock): void;
  /** Capability: the tier is shared by every process and coordinates their compiles. */
  readonly shared?: SharedTier;
  /** The chunk, or undefined on a miss. Throws a KVBlobError (after deleting the entry) when the stored blob is bad. */
  get(key: string): Promise<StoredChunk | undefined>;
  /** Stores a chunk. `blob` may be passed when already encoded (it must be `encodeBlock(block, modelId)`). */
  put(key: string, block: KVBlock, blob?: Buffer): Promise<void>;
  delete(key: string): Promise<boolean>;
  has(key: string): Promise<boolean>;
  stats(): TierStats;
  close(): Promise<void>;
}

export function emptyStats(tier: TierName, budgetBytes: number | null): TierStats {
  return {
    tier,
    hits: 0,
    misses: 0,
    puts: 0,
    evictions: 0,
    deletes: 0,
    corrupt: 0,
    incompatible: 0,
    errors: 0,
    entries: 0,
    bytes: 0,
    budgetBytes,
    bytesRead: 0,
    bytesWritten: 0,
  };
}
