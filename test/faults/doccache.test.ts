/**
 * The API's document cache (TrackedCache: Redis client-side caching, broadcast tracking) against a private
 * redis-server: writes and deletes by any client evict the record, a read that raced a write is not kept, FLUSHALL
 * empties it, and while its connection is down it serves nothing (and comes back by itself). Also the queue's
 * admission: no count while the queue is far below its cap, an exact count past half of it.
 */
import { Queue } from 'bullmq';
import { CatalogKeys, DocumentStore, TrackedCache, type DocumentRecord } from '../../shared/catalog';
import { chunkKey } from '../../shared/kvstore';
import { Admission, queueAdmission } from '../../services/api/admission';
import { freePort, waitFor } from '../helpers/net';
import { suiteRedis } from './procs';

const doc = (id: string, tokens: number[]): DocumentRecord => ({ id, tenant: 't', chars: 10, chunks: [{ key: chunkKey({ modelId: 'm', tokens, tenantSalt: id }), tokens }], metadata: {}, createdAt: 1 });

describe('document cache', () => {
  const r = suiteRedis();
  const keys = new CatalogKeys('test:{api}');
  const open: { close: () => Promise<void> }[] = [];
  const cacheOf = async () => {
    const c = await new TrackedCache<DocumentRecord>(r.redis.url, keys.docPrefix(), { max: 100 }).open();
    open.push(c);
    return c;
  };
  afterEach(async () => {
    for (const c of open.splice(0)) await c.close();
    await r.client.flushall();
  });

  test('a write or delete by another client evicts the record; reads are served from memory until then', async () => {
    const cache = await cacheOf();
    const docs = new DocumentStore(r.client, keys, cache);
    // Another API process: its own connection and cache.
    const otherConn = r.redis.client();
    open.push({ close: async () => otherConn.disconnect() });
    const other = new DocumentStore(otherConn, keys, await cacheOf());
    await other.put(doc('a', [1, 2, 3]));
    expect((await docs.get('t', 'a'))?.chunks[0].tokens).toEqual([1, 2, 3]);
    const hits = cache.stats().hits;
    expect((await docs.getMany('t', ['a', 'a']))[1]?.chunks[0].tokens).toEqual([1, 2, 3]);
    expect(cache.stats().hits).toBe(hits + 2);
    // Changed behind the cache's back, by a plain client: the invalidation evicts it.
    await r.client.set(keys.doc('t', 'a'), JSON.stringify(doc('a', [7])));
    await waitFor(async () => ((await docs.get('t', 'a'))?.chunks[0].tokens[0] === 7 ? true : undefined), 2000, 'the new record');
    // Deleted by the other process: this one answers "unknown" once the invalidation arrives.
    expect(await other.delete('t', 'a')).toBe(true);
    await waitFor(async () => ((await docs.get('t', 'a')) === undefined ? true : undefined), 2000, 'the delete to be seen');
    // The deleting process itself sees its delete at once (it evicted the key before answering).
    await other.put(doc('b', [4]));
    expect(await other.get('t', 'b')).toBeDefined();
    expect(await other.delete('t', 'b')).toBe(true);
    expect(await other.get('t', 'b')).toBeUndefined();
    // Keys outside the prefix do not invalidate anything.
    const inv = cache.stats().invalidations;
    await r.client.set('test:{api}:docs:t', 'x');
    await r.client.set('elsewhere', 'x');
    await r.client.ping();
    await new Promise((res) => setTimeout(res, 50));
    expect(cache.stats().invalidations).toBe(inv);
  });

  test('a read that raced an invalidation is not kept; FLUSHALL empties the cache', async () => {
    const cache = await cacheOf();
    const key = keys.doc('t', 'a');
    const before = cache.ticket();
    await r.client.set(key, '{}');
    await waitFor(async () => (cache.stats().invalidations > 0 ? true : undefined), 2000, 'the invalidation');
    cache.keep(key, doc('a', [1]), before); // read before the write, answered after it: dropped
    expect(cache.get(key)).toBeUndefined();
    cache.keep(key, doc('a', [2]), cache.ticket());
    expect(cache.get(key)?.chunks[0].tokens).toEqual([2]);
    await r.client.flushall();
    await waitFor(async () => (cache.get(key) === undefined ? true : undefined), 2000, 'FLUSHALL to empty the cache');
  });

  test('while its connection is down the cache serves nothing; it tracks again after Redis comes back', async () => {
    const cache = await cacheOf();
    const docs = new DocumentStore(r.client, keys, cache);
    await docs.put(doc('a', [1]));
    await docs.get('t', 'a');
    expect(cache.stats().entries).toBe(1);
    // Kill the cache's own connection (a real dropped connection; ioredis reconnects it).
    const clients = String(await r.client.client('LIST'));
    const tracked = clients.split('\n').find((l) => /flags=\S*t/.test(l) && /cmd=subscribe/.test(l));
    expect(tracked).toBeDefined();
    const id = /id=(\d+)/.exec(tracked!)![1];
    await r.client.client('KILL', 'ID', id);
    await waitFor(async () => (!cache.tracking || cache.stats().entries === 0 ? true : undefined), 2000, 'the cache to drop');
    // The key changes while nothing listens for it; the cache must not answer with what it had.
    await r.client.set(keys.doc('t', 'a'), JSON.stringify(doc('a', [9])));
    expect(cache.get(keys.doc('t', 'a'))).toBeUndefined();
    await waitFor(async () => (cache.tracking ? true : undefined), 5000, 'tracking to be registered again');
    expect((await docs.get('t', 'a'))?.chunks[0].tokens).toEqual([9]);
    await r.client.set(keys.doc('t', 'a'), JSON.stringify(doc('a', [10])));
    await waitFor(async () => ((await docs.get('t', 'a'))?.chunks[0].tokens[0] === 10 ? true : undefined), 2000, 'invalidations after the reconnect');
  });
});

test('open() against a Redis that does not answer fails and leaves no connection retrying', async () => {
  const cache = new TrackedCache<DocumentRecord>(`redis://127.0.0.1:${await freePort()}`, 'x:doc:', { max: 1 });
  await expect(cache.open()).rejects.toThrow();
  // ioredis would try again within 50 ms (its first retry delay): watch for any attempt.
  const conn = (cache as unknown as { conn: import('ioredis').default }).conn;
  let attempts = 0;
  conn.on('connecting', () => attempts++);
  await new Promise((r) => setTimeout(r, 500));
  expect(attempts).toBe(0);
});

describe('admission', () => {
  const r = suiteRedis();
  afterEach(async () => {
    await r.client.flushall();
  });

  test('no count while far below the cap, an exact count past half of it: 429 exactly at the cap', async () => {
    const conn = r.redis.client();
    const queue = new Queue('inference', { connection: conn, prefix: '{adm}' });
    try {
      let counts = 0;
      const counting = new Admission(() => (counts++, queue.getJobCountByTypes('waiting', 'delayed', 'prioritized')), 10, 60_000);
      await counting.admit(1); // the first admission counts
      expect(counts).toBe(1);
      await counting.admit(3); // 0 + 1 + 3 ≤ 5: no count
      expect(counts).toBe(1);
      await counting.admit(2); // 0 + 4 + 2 would pass half the cap: counted (0 waiting: nothing was enqueued here)
      expect(counts).toBe(2);
      // Another producer fills the queue to 9. A count at most freshMs old does not see it, so far below half the cap
      // an admission can pass unseen (the documented trade-off); past half the cap every admission counts.
      await queue.addBulk(Array.from({ length: 9 }, (_, i) => ({ name: 'r', data: { i } })));
      await expect(counting.admit(4)).rejects.toMatchObject({ status: 429, code: 'queue_full' }); // 0 + 2 + 4 > 5: 9 + 4 > 10
      expect(counts).toBe(3);
      await counting.admit(1); // 9 + 1 ≤ 10
      expect(counts).toBe(4);
      // The service's admission over the same queue.
      const adm = queueAdmission(queue, 10);
      await adm.admit(1); // 9 waiting + 1
      await expect(adm.admit(2)).rejects.toMatchObject({ status: 429, retryAfter: 2 }); // 9 + 2 > 10
      await queue.drain();
      await adm.admit(5); // counted again (9 + 5 is past half the cap): the queue is empty
    } finally {
      await queue.close();
      conn.disconnect();
    }
  });
});
