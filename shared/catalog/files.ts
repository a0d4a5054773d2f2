import type { CatalogKeys, Redis } from './redis';

export interface FileRecord {
  id: string;
  tenant: string;
  filename: string;
  purpose: string;
  bytes: number;
  createdAt: number;
}

/** OpenAI-style files (batch input and output JSONL), kept in Redis beside their metadata. */
export class FileStore {
  constructor(
    private readonly redis: Redis,
    private readonly keys: CatalogKeys,
  ) {}

  async put(rec: FileRecord, content: Buffer): Promise<void> {
    const k = this.keys.file(rec.tenant, rec.id);
    await this.redis
      .multi()
      .hset(k, { meta: JSON.stringify(rec), content })
      .zadd(this.keys.fileIndex(rec.tenant), rec.createdAt, rec.id)
      .exec();
  }

  async get(tenant: string, id: string): Promise<FileRecord | undefined> {
    const s = await this.redis.hget(this.keys.file(tenant, id), 'meta');
    return s ? (JSON.parse(s) as FileRecord) : undefined;
  }

  async content(tenant: string, id: string): Promise<Buffer | undefined> {
    return (await this.redis.hgetBuffer(this.keys.file(tenant, id), 'content')) ?? undefined;
  }

  async delete(tenant: string, id: string): Promise<boolean> {
    const [[, n]] = (await this.redis.multi().del(this.keys.file(tenant, id)).zrem(this.keys.fileIndex(tenant), id).exec()) as [[unknown, number]];
    return n > 0;
  }

  async list(tenant: string, limit = 100): Promise<FileRecord[]> {
    const ids = await this.redis.zrevrange(this.keys.fileIndex(tenant), 0, limit - 1);
    const out = await Promise.all(ids.map((id) => this.get(tenant, id)));
    return out.filter((f): f is FileRecord => !!f);
  }
}
