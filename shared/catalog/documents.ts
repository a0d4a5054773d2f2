import { CatalogKeys, type Redis } from './redis';

export interface DocumentChunk {
  /** Content-addressed KV store key (model, tenant salt, tokens, variant). */
  key: string;
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

/** Documents: their chunking (token ids and chunk keys), not their text. */
export class DocumentStore {
  constructor(
    private readonly redis: Redis,
    private readonly keys = new CatalogKeys(),
  ) {}

  async put(doc: DocumentRecord): Promise<void> {
    await this.redis.multi().set(this.keys.doc(doc.tenant, doc.id), JSON.stringify(doc)).zadd(this.keys.docIndex(doc.tenant), doc.createdAt, doc.id).exec();
  }

  async get(tenant: string, id: string): Promise<DocumentRecord | undefined> {
    const s = await this.redis.get(this.keys.doc(tenant, id));
    return s ? (JSON.parse(s) as DocumentRecord) : undefined;
  }

  async getMany(tenant: string, ids: string[]): Promise<(DocumentRecord | undefined)[]> {
    if (!ids.length) return [];
    const vals = await this.redis.mget(...ids.map((id) => this.keys.doc(tenant, id)));
    return vals.map((s) => (s ? (JSON.parse(s) as DocumentRecord) : undefined));
  }

  async delete(tenant: string, id: string): Promise<boolean> {
    const [[, n]] = (await this.redis.multi().del(this.keys.doc(tenant, id)).zrem(this.keys.docIndex(tenant), id).exec()) as [[unknown, number]];
    return n > 0;
  }

  async list(tenant: string, limit = 100): Promise<string[]> {
    return this.redis.zrevrange(this.keys.docIndex(tenant), 0, limit - 1);
  }
}
