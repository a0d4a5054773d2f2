import { promises as fsp, existsSync, readdirSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { CorruptBlobError, DiskBackend, IncompatibleBlobError, MemoryBackend, blockCharge, encodeBlock } from '../../shared/kvstore';
import { MODEL, SHAPE, expectSameBlock, keyOf, makeBlock, tempDir } from './helpers';

const expectModel = { modelId: MODEL, shape: SHAPE };

describe('memory tier', () => {
  it('returns the very block that was put (zero copy)', async () => {
    const m = new MemoryBackend({ budgetBytes: 1 << 20 });
    const b = makeBlock(1);
    await m.put('a', b);
    expect((await m.get('a'))?.block).toBe(b);
    expect(await m.get('b')).toBeUndefined();
    expect(m.stats()).toMatchObject({ hits: 1, misses: 1, puts: 1, entries: 1, bytes: blockCharge(b) });
  });

  it('evicts least recently used blocks by bytes', async () => {
    const blocks = [0, 1, 2, 3].map((i) => makeBlock(i));
    const charge = blockCharge(blocks[0]);
    const m = new MemoryBackend({ budgetBytes: Math.floor(charge * 3.5) });
    for (let i = 0; i < 3; i++) await m.put(keyOf(i), blocks[i]);
    await m.get(keyOf(0)); // 0 is now more recent than 1
    await m.put(keyOf(3), blocks[3]);
    expect(await m.has(keyOf(1))).toBe(false);
    for (const i of [0, 2, 3]) expect(await m.has(keyOf(i))).toBe(true);
    const s = m.stats();
    expect(s.evictions).toBe(1);
    expect(s.entries).toBe(3);
    expect(s.bytes).toBe(3 * charge);
    expect(s.bytes!).toBeLessThanOrEqual(s.budgetBytes!);
  });
});

describe('disk tier', () => {
  let tmp: ReturnType<typeof tempDir>;
  beforeEach(() => (tmp = tempDir('disk')));
  afterEach(() => tmp.cleanup());

  const blobSize = encodeBlock(makeBlock(0), MODEL).length;

  it('writes one file per chunk, atomically, and reads it back', async () => {
    const d = await DiskBackend.open({ dir: tmp.dir, budgetBytes: 1 << 20 }, expectModel);
    const b = makeBlock(5);
    await d.put(keyOf(5), b);
    const file = d.pathFor(keyOf(5));
    expect(existsSync(file)).toBe(true);
    expect(readdirSync(path.dirname(file)).filter((f) => f.endsWith('.tmp'))).toEqual([]);
    expectSameBlock(b, (await d.get(keyOf(5)))!.block);
    expect(d.stats()).toMatchObject({ hits: 1, puts: 1, entries: 1, bytes: blobSize });
  });

  it('evicts by bytes, keeps LRU order across a restart, and finds its files after it', async () => {
    const budget = Math.floor(blobSize * 3.5);
    const d1 = await DiskBackend.open({ dir: tmp.dir, budgetBytes: budget, touchIntervalMs: 0 }, expectModel);
    for (let i = 0; i < 4; i++) {
      await d1.put(keyOf(i), makeBlock(i));
      await sleep(15); // distinct mtimes
    }
    // 0 was evicted by bytes, and its file removed
    expect(existsSync(d1.pathFor(keyOf(0)))).toBe(false);
    expect(d1.stats()).toMatchObject({ evictions: 1, entries: 3, bytes: 3 * blobSize });
    await sleep(15);
    await d1.get(keyOf(1)); // refreshes 1's mtime: it becomes the most recent
    await sleep(15);
    await d1.close();

    // "restart": a new instance on the same directory
    const d2 = await DiskBackend.open({ dir: tmp.dir, budgetBytes: budget, touchIntervalMs: 0 }, expectModel);
    expect(d2.stats()).toMatchObject({ entries: 3, bytes: 3 * blobSize, evictions: 0 });
    expectSameBlock(makeBlock(3), (await d2.get(keyOf(3)))!.block);
    await sleep(15); // its mtime refresh lands before the next write
    // order now (old → new): 2, 1, 3 — adding 4 evicts 2
    await d2.put(keyOf(4), makeBlock(4));
    expect(existsSync(d2.pathFor(keyOf(2)))).toBe(false);
    expect(await d2.has(keyOf(2))).toBe(false);
    for (const i of [1, 3, 4]) expect(await d2.has(keyOf(i))).toBe(true);

    // a smaller budget on restart trims to fit
    const d3 = await DiskBackend.open({ dir: tmp.dir, budgetBytes: Math.floor(blobSize * 1.5) }, expectModel);
    expect(d3.stats()).toMatchObject({ entries: 1 });
    expect(readdirSync(tmp.dir, { recursive: true }).filter((f) => String(f).endsWith('.kv'))).toHaveLength(1);
    expect(await d3.has(keyOf(4))).toBe(true);
  });

  it('catches a flipped bit and a truncation, deletes the file and counts it', async () => {
    const d = await DiskBackend.open({ dir: tmp.dir, budgetBytes: 1 << 20 }, expectModel);
    await d.put('flip', makeBlock(1));
    await d.put('trunc', makeBlock(2));
    const fh = await fsp.open(d.pathFor('flip'), 'r+');
    const byte = Buffer.alloc(1);
    await fh.read(byte, 0, 1, 5000);
    byte[0] ^= 0x04;
    await fh.write(byte, 0, 1, 5000);
    await fh.close();
    await fsp.truncate(d.pathFor('trunc'), blobSize - 1000);

    await expect(d.get('flip')).rejects.toMatchObject({ reason: 'checksum' });
    await expect(d.get('trunc')).rejects.toBeInstanceOf(CorruptBlobError);
    expect(existsSync(d.pathFor('flip'))).toBe(false);
    expect(existsSync(d.pathFor('trunc'))).toBe(false);
    expect(await d.get('flip')).toBeUndefined();
    expect(d.stats()).toMatchObject({ corrupt: 2, entries: 0, bytes: 0 });
  });

  it('refuses and deletes a file written for another model', async () => {
    const d = await DiskBackend.open({ dir: tmp.dir, budgetBytes: 1 << 20 }, expectModel);
    await d.put('x', makeBlock(1)); // creates the subdirectory
    writeFileSync(d.pathFor('x'), encodeBlock(makeBlock(1), 'another-model'));
    await expect(d.get('x')).rejects.toBeInstanceOf(IncompatibleBlobError);
    expect(existsSync(d.pathFor('x'))).toBe(false);
    expect(d.stats().incompatible).toBe(1);
  });

  it('sweeps stale temp files on start', async () => {
    const d = await DiskBackend.open({ dir: tmp.dir, budgetBytes: 1 << 20 }, expectModel);
    await d.put('y', makeBlock(1));
    const stale = d.pathFor('y') + '.999.1.tmp';
    writeFileSync(stale, 'partial');
    const old = new Date(Date.now() - 3600_000);
    await fsp.utimes(stale, old, old);
    await DiskBackend.open({ dir: tmp.dir, budgetBytes: 1 << 20 }, expectModel);
    expect(existsSync(stale)).toBe(false);
    expect(existsSync(d.pathFor('y'))).toBe(true);
  });
});

function sleep(ms: number) {
  return new Promise((r) => setTimeout(r, ms));
}
