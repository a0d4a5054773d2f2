/**
 * Memory tier: an LRU of immutable blocks, bounded by bytes (lru-cache maxSize + sizeCalculation). A hit returns the
 * very block that was put — no copy — so readers must treat blocks as read-only (they are, by contract of kv.ts).
 */
import { LRUCache } from 'lru-cache';
import type { KVBlock } from '../engine/kv';
import { kvBytes } from '../engine/kv';
import type { KVBackend, ResidencyListener, StoredChunk, TierStats } from './backend';
import { emptyStats } from './backend';
import { validateBlock } from './format';

export interface MemoryTierOptions {
  /** Byte budget for KV held in process memory. */
  budgetBytes: number;
  /** Told when a chunk enters or leaves this tier. */
  onResidency?: ResidencyListener;
}

/** Bytes a block is charged: payload plus tokens and positions plus a small fixed overhead. */
export function blockCharge(block: KVBlock): number {
  return kvBytes(block) + 8 * block.length + 256;
}

export class MemoryBackend implements KVBackend {
  readonly tier = 'memory' as const;
  private readonly lru: LRUCache<string, KVBlock>;
  private readonly counters: TierStats;
  private readonly onResidency?: ResidencyListener;

  constructor(opts: MemoryTierOptions) {
    this.onResidency = opts.onResidency;
    if (!(opts.budgetBytes > 0)) throw new Error('memory tier: budgetBytes must be > 0');
    this.counters = emptyStats('memory', opts.budgetBytes);
    this.lru = new LRUCache<string, KVBlock>({
      maxSize: opts.budgetBytes,
      sizeCalculation: (b) => blockCharge(b),
      dispose: (_b, k, reason) => {
        if (reason === 'evict') this.counters.evictions++;
        if (reason !== 'set') opts.onResidency?.('memory', k, false);
      },
    });
  }

  async get(key: string): Promise<StoredChunk | undefined> {
    const block = this.getSync(key);
    return block ? { block } : undefined;
  }

  /** Synchronous lookup (the memory tier never waits). */
  getSync(key: string): KVBlock | undefined {
    const block = this.lru.get(key);
    if (block) {
      this.counters.hits++;
      this.counters.bytesRead += kvBytes(block);
    } else this.counters.misses++;
    return block;
  }

  async put(key: string, block: KVBlock): Promise<void> {
    this.putSync(key, block);
  }

  putSync(key: string, block: KVBlock): void {
    if (this.lru.has(key)) {
      this.lru.get(key); // refresh recency; content-addressed, so the stored block is the same
      return;
    }
    validateBlock(block);
    this.lru.set(key, block);
    if (this.lru.has(key)) this.onResidency?.('memory', key, true);
    this.counters.puts++;
    this.counters.bytesWritten += kvBytes(block);
  }

  async delete(key: string): Promise<boolean> {
    const had = this.lru.delete(key);
    if (had) this.counters.deletes++;
    return had;
  }

  async has(key: string): Promise<boolean> {
    return this.lru.has(key);
  }

  stats(): TierStats {
    return { ...this.counters, entries: this.lru.size, bytes: this.lru.calculatedSize };
  }

  async close(): Promise<void> {
    this.lru.clear();
  }
}
