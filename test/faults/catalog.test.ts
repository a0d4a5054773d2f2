/**
 * Batch records survive any client text: metadata and custom ids with lone surrogates or 17-digit numbers (which Redis's
 * Lua cjson refuses or rounds) neither break result recording nor come back changed. Found by the fuzz run: a batch
 * whose metadata held "\ud83d" never completed.
 */
import { BatchStore, CatalogKeys, DocumentStore, type BatchRecord } from '../../shared/catalog';
import { RedisServer } from './procs';

test('results are recorded and counted once, whatever the metadata holds', async () => {
  const redis = await RedisServer.start();
  const client = redis.client();
  try {
    const batches = new BatchStore(client, new CatalogKeys());
    const metadata = { lone: '\ud83d', reversed: '\udfff\ud800', big: 12345678901234568, tiny: 5e-324, emoji: '🦄' };
    const b: BatchRecord = {
      id: 'batch_x',
      tenant: 't',
      kind: '/v1/completions',
      status: 'in_progress',
      total: 2,
      completed: 0,
      failed: 0,
      createdAt: 1_700_000_000,
      customIds: ['\ud800', 'a'],
      metadata,
    };
    await batches.create(b);
    expect(await batches.record('t', 'batch_x', 0, true, { text: '\udc00' })).toBe(true);
    expect(await batches.record('t', 'batch_x', 0, true, { text: 'again' })).toBe(false); // a re-run: not counted
    expect(await batches.record('t', 'batch_x', 1, false, { error: 'x' })).toBe(true);
    const done = (await batches.get('t', 'batch_x'))!;
    expect({ status: done.status, completed: done.completed, failed: done.failed }).toEqual({ status: 'completed', completed: 1, failed: 1 });
    expect(done.metadata).toEqual(metadata);
    expect(done.customIds).toEqual(['\ud800', 'a']);
    const updated = await batches.update('t', 'batch_x', { outputFileId: 'file-1' });
    expect(updated).toMatchObject({ outputFileId: 'file-1', metadata, status: 'completed' });
    expect((await batches.results('t', 'batch_x')).map((r) => r.index)).toEqual([0, 1]);
  } finally {
    client.disconnect();
    await redis.stop();
  }
});

test("a batch's compare-and-set does not hold other requests' transactions on the shared connection", async () => {
  // Found by the fuzz run: update() used WATCH, which holds for the whole connection, so a DELETE's MULTI sent on the
  // same connection meanwhile ran under it and came back empty (a 500) when the batch changed.
  const redis = await RedisServer.start();
  const shared = redis.client();
  const other = redis.client();
  try {
    const keys = new CatalogKeys();
    const batches = new BatchStore(shared, keys);
    const docs = new DocumentStore(shared, keys);
    const b: BatchRecord = { id: 'batch_y', tenant: 't', kind: 'jobs', status: 'in_progress', total: 1, completed: 0, failed: 0, createdAt: 1_700_000_000, metadata: {} };
    await batches.create(b);
    let stop = false;
    // Another process keeps changing the batch record.
    const churn = (async () => {
      for (let i = 0; !stop; i++) await other.set(keys.batch('t', 'batch_y'), JSON.stringify({ ...b, completed: i % 2 }));
    })();
    const failures: string[] = [];
    for (let i = 0; i < 150; i++) {
      const doc = { id: `d${i}`, tenant: 't', chars: 1, chunks: [], metadata: {}, createdAt: i };
      await docs.put(doc);
      const update = batches.update('t', 'batch_y', { status: 'in_progress' });
      // The delete's transaction goes out at some point of the update's exchange (its first reply, or later).
      for (let t = 0; t < i % 4; t++) await new Promise((r) => setImmediate(r));
      const [, deleted] = await Promise.allSettled([update, docs.delete('t', doc.id)]);
      if (deleted.status === 'rejected') failures.push(String(deleted.reason));
      else if (deleted.value !== true) failures.push(`delete of d${i} answered ${deleted.value}`);
    }
    stop = true;
    await churn;
    expect(failures).toEqual([]);
  } finally {
    shared.disconnect();
    other.disconnect();
    await redis.stop();
  }
}, 60_000);
