import type { CatalogKeys, Redis } from './redis';

export type BatchStatus = 'validating' | 'in_progress' | 'finalizing' | 'completed' | 'failed' | 'expired' | 'cancelling' | 'cancelled';

export interface BatchRecord {
  id: string;
  tenant: string;
  /** `jobs` (native API) or the OpenAI endpoint the batch's lines call. */
  kind: 'jobs' | '/v1/completions' | '/v1/chat/completions';
  status: BatchStatus;
  total: number;
  completed: number;
  failed: number;
  createdAt: number;
  completedAt?: number;
  cancelledAt?: number;
  inputFileId?: string;
  outputFileId?: string;
  errorFileId?: string;
  /** Results the output and error files were written from (a cancelled batch's are rewritten when more land). */
  outputCount?: number;
  /** custom_id of each request, in order (OpenAI batches). */
  customIds?: string[];
  metadata: Record<string, unknown>;
}

export interface StoredResult {
  index: number;
  ok: boolean;
  body: unknown;
}

/**
 * Record a request's result once (HSETNX) and count it only then: a job re-run after a worker died neither
 * duplicates nor double-counts its result. The batch turns `completed` when the last result lands. The record is
 * decoded before anything is written, so a script error leaves nothing half done; it holds only server-made fields
 * (Redis's cjson refuses lone surrogates and rounds numbers to 14 digits, so client strings and numbers stay out of it).
 */
const RECORD = `
local raw = redis.call('GET', KEYS[1])
if not raw then
  return redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2])
end
local b = cjson.decode(raw)
local added = redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2])
if added == 0 then return 0 end
local field = ARGV[3]
b[field] = b[field] + 1
if b.completed + b.failed >= b.total and (b.status == 'in_progress' or b.status == 'validating' or b.status == 'finalizing') then
  b.status = 'completed'
  b.completedAt = tonumber(ARGV[4])
end
redis.call('SET', KEYS[1], cjson.encode(b))
return 1
`;

/** Fields the client supplies, kept apart from the record the RECORD script decodes and re-encodes. */
type ClientFields = Pick<BatchRecord, 'metadata' | 'customIds'>;

/** KEYS[1] = ARGV[2] if it still holds ARGV[1]: 1 when written, 0 when the value changed since it was read. */
const SET_IF_UNCHANGED = `if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('SET', KEYS[1], ARGV[2]) return 1 end return 0`;

export class BatchStore {
  constructor(
    private readonly redis: Redis,
    private readonly keys: CatalogKeys,
  ) {}

  async create(b: BatchRecord): Promise<void> {
    const { metadata, customIds, ...core } = b;
    const client: ClientFields = { metadata, customIds };
    await this.redis
      .multi()
      .set(this.keys.batchClientFields(b.tenant, b.id), JSON.stringify(client))
      .set(this.keys.batch(b.tenant, b.id), JSON.stringify(core))
      .zadd(this.keys.batchIndex(b.tenant), b.createdAt, b.id)
      .exec();
  }

  /** Remove a batch's record, client fields, results and index entry (a batch whose jobs could not be enqueued). */
  async delete(tenant: string, id: string): Promise<void> {
    await this.redis
      .multi()
      .del(this.keys.batch(tenant, id), this.keys.batchClientFields(tenant, id), this.keys.batchResults(tenant, id))
      .zrem(this.keys.batchIndex(tenant), id)
      .exec();
  }

  async get(tenant: string, id: string): Promise<BatchRecord | undefined> {
    const [s, c] = await this.redis.mget(this.keys.batch(tenant, id), this.keys.batchClientFields(tenant, id));
    return s ? merge(s, c) : undefined;
  }

  async list(tenant: string, limit = 100): Promise<BatchRecord[]> {
    const ids = await this.redis.zrevrange(this.keys.batchIndex(tenant), 0, limit - 1);
    const out = await Promise.all(ids.map((id) => this.get(tenant, id)));
    return out.filter((b): b is BatchRecord => !!b);
  }

  /** Compare-and-set of fields (status transitions); returns the updated record. */
  async update(tenant: string, id: string, patch: Partial<BatchRecord>, onlyIf?: BatchStatus[]): Promise<BatchRecord | undefined> {
    const key = this.keys.batch(tenant, id);
    // Compare-and-set by a script that writes only if the record is still the one read: not WATCH, which holds for the
    // whole connection, so another request's MULTI on the same shared connection would run under it (and its EXEC
    // come back empty when this record changed: the fuzz run found a DELETE answered 500 that way).
    for (let attempt = 0; attempt < 20; attempt++) {
      const s = await this.redis.get(key);
      if (!s) return undefined;
      const b = JSON.parse(s) as BatchRecord;
      const client = async () => merge(s, await this.redis.get(this.keys.batchClientFields(tenant, id)));
      if (onlyIf && !onlyIf.includes(b.status)) return client();
      const { metadata: _m, customIds: _c, ...rest } = patch;
      const ok = await this.redis.eval(SET_IF_UNCHANGED, 1, key, s, JSON.stringify({ ...b, ...rest }));
      if (ok === 1) return { ...(await client()), ...rest };
    }
    throw new Error(`batch ${id}: too much contention updating it`);
  }

  /** Store request `index`'s result once; returns false when it was already stored. */
  async record(tenant: string, id: string, index: number, ok: boolean, body: unknown): Promise<boolean> {
    const r = await this.redis.eval(
      RECORD,
      2,
      this.keys.batch(tenant, id),
      this.keys.batchResults(tenant, id),
      String(index),
      JSON.stringify({ index, ok, body }),
      ok ? 'completed' : 'failed',
      String(Math.floor(Date.now() / 1000)),
    );
    return r === 1;
  }

  async results(tenant: string, id: string): Promise<StoredResult[]> {
    const all = await this.redis.hgetall(this.keys.batchResults(tenant, id));
    return Object.values(all)
      .map((s) => JSON.parse(s) as StoredResult)
      .sort((a, b) => a.index - b.index);
  }

  async resultCount(tenant: string, id: string): Promise<number> {
    return this.redis.hlen(this.keys.batchResults(tenant, id));
  }
}

/** The record with its client fields (records written before they were kept apart hold them inline). */
function merge(core: string, client: string | null): BatchRecord {
  const b = JSON.parse(core) as BatchRecord;
  return client ? { ...b, ...(JSON.parse(client) as ClientFields) } : b;
}
