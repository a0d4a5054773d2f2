/**
 * Local-disk tier: one file per chunk (`<dir>/<key[0..2]>/<key>.kv`), written to a temp file in the same directory and
 * renamed into place, so a reader never sees a half-written file under the final name (a crash leaves only a temp
 * file, swept on the next start). The index is an LRU by bytes; on start it is rebuilt from the directory ordered by
 * file mtime, and hits refresh the mtime (at most once per `touchIntervalMs`), so recency survives a restart.
 *
 * Every read is validated (format.ts); a damaged or foreign file is unlinked, counted, and reported by throwing.
 * Without `fsync` (the default) a power loss can leave a short or empty file under the final name — the checksum
 * catches it and the chunk is recomputed; this is a cache, so durability is not bought with an fsync per chunk.
 * Several processes may share one directory: a file another process wrote is adopted into the index when read;
 * each process enforces the budget on the files it knows about.
 */
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { LRUCache } from 'lru-cache';
import type { KVBlock } from '../engine/kv';
import type { KVBackend, ResidencyListener, StoredChunk, TierStats } from './backend';
import { emptyStats } from './backend';
import { isKVBlobError } from './errors';
import { decodeBlock, encodeBlock, validateBlock } from './format';
import type { DecodeExpect } from './format';
import { assertValidKey } from './key';

export interface DiskTierOptions {
  dir: string;
  budgetBytes: number;
  /** fsync each file before the rename (default false). */
  fsync?: boolean;
  /** Minimum interval between mtime refreshes of one file on hits (default 60 s). */
  touchIntervalMs?: number;
  /** Temp files older than this are removed on start (default 10 min). */
  staleTempMs?: number;
  /** Told when a chunk enters or leaves this tier's index (files found on start included). */
  onResidency?: ResidencyListener;
}

interface IndexEntry {
  size: number;
  touchedAt: number;
}

const SUFFIX = '.kv';
const TMP_SUFFIX = '.tmp';

export class DiskBackend implements KVBackend {
  readonly tier = 'disk' as const;
  readonly dir: string;
  private readonly index: LRUCache<string, IndexEntry>;
  private readonly counters: TierStats;
  private readonly ready: Promise<void>;
  private readonly madeDirs = new Set<string>();
  private seq = 0;
  /** Unlinks of evicted files, awaited by the operation that caused the eviction. */
  private evicting: Promise<boolean>[] = [];

  constructor(
    private readonly opts: DiskTierOptions,
    private readonly expect: DecodeExpect,
  ) {
    if (!(opts.budgetBytes > 0)) throw new Error('disk tier: budgetBytes must be > 0');
    this.dir = path.resolve(opts.dir);
    this.counters = emptyStats('disk', opts.budgetBytes);
    this.index = new LRUCache<string, IndexEntry>({
      maxSize: opts.budgetBytes,
      sizeCalculation: (e) => Math.max(1, e.size),
      dispose: (_e, key, reason) => {
        if (reason !== 'set') opts.onResidency?.('disk', key, false);
        if (reason !== 'evict') return;
        this.counters.evictions++;
        this.evicting.push(this.unlink(key));
      },
    });
    this.ready = this.rebuild();
    this.ready.catch(() => undefined); // surfaced by the first operation
  }

  /** Opens the tier and waits for the index rebuild. */
  static async open(opts: DiskTierOptions, expect: DecodeExpect): Promise<DiskBackend> {
    const b = new DiskBackend(opts, expect);
    await b.ready;
    return b;
  }

  pathFor(key: string): string {
    assertValidKey(key);
    return path.join(this.dir, key.slice(0, 2).padEnd(2, '_'), key + SUFFIX);
  }

  private async rebuild(): Promise<void> {
    await fsp.mkdir(this.dir, { recursive: true });
    const staleTempMs = this.opts.staleTempMs ?? 10 * 60_000;
    const now = Date.now();
    const found: { key: string; size: number; mtime: number }[] = [];
    for (const sub of await fsp.readdir(this.dir, { withFileTypes: true })) {
      if (!sub.isDirectory()) continue;
      const subdir = path.join(this.dir, sub.name);
      this.madeDirs.add(subdir);
      for (const name of await fsp.readdir(subdir)) {
        const file = path.join(subdir, name);
        try {
          const st = await fsp.stat(file);
          if (!st.isFile()) continue;
          if (name.endsWith(TMP_SUFFIX)) {
            if (now - st.mtimeMs > staleTempMs) await fsp.unlink(file).catch(() => undefined);
          } else if (name.endsWith(SUFFIX)) {
            found.push({ key: name.slice(0, -SUFFIX.length), size: st.size, mtime: st.mtimeMs });
          }
        } catch {
          // vanished meanwhile (another process evicted it)
        }
      }
    }
    found.sort((a, b) => a.mtime - b.mtime); // oldest first: the most recent ends up most recently used
    for (const f of found) this.indexSet(f.key, { size: f.size, touchedAt: f.mtime });
    await this.settleEvictions();
  }

  /** Indexes a file, telling the residency listener when the key is new to the index. */
  private indexSet(key: string, e: IndexEntry): void {
    const had = this.index.has(key);
    this.index.set(key, e);
    if (!had && this.index.has(key)) this.opts.onResidency?.('disk', key, true);
  }

  private async settleEvictions(): Promise<void> {
    if (this.evicting.length) await Promise.all(this.evicting.splice(0));
  }

  async get(key: string): Promise<StoredChunk | undefined> {
    await this.ready;
    const file = this.pathFor(key);
    let blob: Buffer;
    try {
      blob = await fsp.readFile(file);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') this.counters.errors++;
      if (this.index.has(key)) this.index.delete(key);
      this.counters.misses++;
      return undefined;
    }
    this.counters.bytesRead += blob.length;
    let block: KVBlock;
    try {
      block = decodeBlock(blob, this.expect);
    } catch (e) {
      if (isKVBlobError(e)) {
        if (e.kind === 'corrupt') this.counters.corrupt++;
        else this.counters.incompatible++;
        this.index.delete(key);
        await this.unlink(key);
      }
      throw e;
    }
    this.counters.hits++;
    const now = Date.now();
    const entry = this.index.get(key);
    if (!entry || entry.size !== blob.length) {
      this.indexSet(key, { size: blob.length, touchedAt: now });
      await this.settleEvictions();
    } else if (now - entry.touchedAt > (this.opts.touchIntervalMs ?? 60_000)) {
      entry.touchedAt = now;
      const t = new Date(now);
      fsp.utimes(file, t, t).catch(() => undefined);
    }
    return { block, blob };
  }

  async put(key: string, block: KVBlock, blob?: Buffer): Promise<void> {
    await this.ready;
    const file = this.pathFor(key);
    if (this.index.has(key)) {
      this.index.get(key); // content-addressed: already stored; refresh recency
      return;
    }
    if (blob === undefined) blob = encodeBlock(block, this.expect.modelId, this.expect.dtype);
    else validateBlock(block);
    if (blob.length > this.opts.budgetBytes) return; // would evict everything and still not fit
    const subdir = path.dirname(file);
    if (!this.madeDirs.has(subdir)) {
      await fsp.mkdir(subdir, { recursive: true });
      this.madeDirs.add(subdir);
    }
    const tmp = `${file}.${process.pid}.${++this.seq}${TMP_SUFFIX}`;
    try {
      if (this.opts.fsync) {
        const fh = await fsp.open(tmp, 'wx');
        try {
          await fh.writeFile(blob);
          await fh.sync();
        } finally {
          await fh.close();
        }
      } else {
        await fsp.writeFile(tmp, blob, { flag: 'wx' });
      }
      await fsp.rename(tmp, file);
    } catch (e) {
      this.counters.errors++;
      await fsp.unlink(tmp).catch(() => undefined);
      throw e;
    }
    this.counters.puts++;
    this.counters.bytesWritten += blob.length;
    this.indexSet(key, { size: blob.length, touchedAt: Date.now() });
    await this.settleEvictions();
  }

  async delete(key: string): Promise<boolean> {
    await this.ready;
    const had = this.index.delete(key);
    const removed = await this.unlink(key);
    if (had || removed) this.counters.deletes++;
    return had || removed;
  }

  async has(key: string): Promise<boolean> {
    await this.ready;
    if (this.index.has(key)) return true;
    try {
      await fsp.access(this.pathFor(key));
      return true;
    } catch {
      return false;
    }
  }

  stats(): TierStats {
    return { ...this.counters, entries: this.index.size, bytes: this.index.calculatedSize };
  }

  async close(): Promise<void> {
    await this.ready.catch(() => undefined);
  }

  private async unlink(key: string): Promise<boolean> {
    try {
      await fsp.unlink(this.pathFor(key));
      return true;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') this.counters.errors++;
      return false;
    }
  }
}
