/**
 * Batch records survive any client text: metadata and custom ids with lone surrogates or 17-digit numbers (which Redis's
 * Lua cjson refuses or rounds) neither break result recording nor come back changed. Found by the fuzz run: a batch
 * whose metadata held "\ud83d" never completed.
 */
import { BatchStore, CatalogKeys, type BatchRecord } from '../../shared/catalog';
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
