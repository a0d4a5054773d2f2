import type { ChunkKey } from '../kvstore/key';
import type { CatalogKeys, Redis } from './redis';
import type { TrackedCache } from './tracking';

export interface DocumentChunk {
  /** Content-addressed KV store key (model, tenant salt, tokens, variant). */
  key: ChunkKey;
  tokens: number[];
}

export interface DocumentRecord {
  id: string;
  tenant: string;
  chars: number;
  chunks: DocumentChunk[];
  metadata: Record<string, unknown>;
  createdAt: number;
}

/**
 * Documents: their chunking (token ids and chunk keys), not their text. With a TrackedCache (over `keys.docPrefix()`),
 * reads are served from this process's memory while Redis reports no change to the record: resolving a request's
 * documents then costs no round trip. A write evicts its key once it is done (which also voids every read in flight:
 * see TrackedCache.evict), so this process reads its own writes. Records handed out are shared: callers must not
 * modify them.
 */
export class DocumentStore {
  constructor(
    private readonly redis: Redis,
    private readonly keys: CatalogKeys,
    private readonly cache?: TrackedCache<DocumentRecord>,
  ) {}

  async put(doc: DocumentRecord): Promise<void> {
    const key = this.keys.doc(doc.tenant, doc.id);
    await this.redis.multi().set(key, JSON.stringify(doc)).zadd(this.keys.docIndex(doc.tenant), doc.createdAt, doc.id).exec();
    this.cache?.evict(key);
  }

  async get(tenant: string, id: string): Promise<DocumentRecord | undefined> {
    return (await this.getMany(tenant, [id]))[0];
  }

  async getMany(tenant: string, ids: string[]): Promise<(DocumentRecord | undefined)[]> {
    if (!ids.length) return [];
    const keys = ids.map((id) => this.keys.doc(tenant, id));
    const out = keys.map((k) => this.cache?.get(k));
    const missing = keys.filter((_, i) => !out[i]);
    if (!missing.length) return out;
    const ticket = this.cache?.ticket() ?? 0;
    const vals = await this.redis.mget(...missing);
    const read = new Map(missing.map((k, i) => [k, vals[i] ? (JSON.parse(vals[i]!) as DocumentRecord) : undefined]));
    return keys.map((k, i) => {
      if (out[i]) return out[i];
      const rec = read.get(k);
      if (rec) this.cache?.keep(k, rec, ticket);
      return rec;
    });
  }

  async delete(tenant: string, id: string): Promise<boolean> {
    const key = this.keys.doc(tenant, id);
    const [[, n]] = (await this.redis.multi().del(key).zrem(this.keys.docIndex(tenant), id).exec()) as [[unknown, number]];
    this.cache?.evict(key);
    return n > 0;
  }

  async list(tenant: string, limit = 100): Promise<string[]> {
    return this.redis.zrevrange(this.keys.docIndex(tenant), 0, limit - 1);
  }
}
