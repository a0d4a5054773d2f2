import {
  CorruptBlobError,
  FORMAT_VERSION,
  IncompatibleBlobError,
  InvalidBlockError,
  blobBytes,
  chunkKey,
  decodeBlock,
  encodeBlock,
} from '../../shared/kvstore';
import { MODEL, SHAPE, expectSameBlock, makeBlock } from './helpers';

describe('chunkKey', () => {
  const base = { modelId: 'm', tokens: [1, 2, 3] };
  it('is a deterministic hex SHA-256', () => {
    expect(chunkKey(base)).toMatch(/^[0-9a-f]{64}$/);
    expect(chunkKey(base)).toBe(chunkKey({ ...base, tokens: Int32Array.from([1, 2, 3]) }));
    expect(chunkKey(base)).toBe(chunkKey({ ...base, tenantSalt: '', variant: '' }));
  });
  it('changes with model, salt, tokens and variant', () => {
    const keys = new Set([
      chunkKey(base),
      chunkKey({ ...base, modelId: 'm2' }),
      chunkKey({ ...base, tenantSalt: 'tenant-a' }),
      chunkKey({ ...base, variant: 'legolink0' }),
      chunkKey({ ...base, tokens: [1, 2, 4] }),
      chunkKey({ ...base, tokens: [1, 2] }),
      // field boundaries are unambiguous
      chunkKey({ modelId: 'ab', tenantSalt: 'c', tokens: [] }),
      chunkKey({ modelId: 'a', tenantSalt: 'bc', tokens: [] }),
    ]);
    expect(keys.size).toBe(8);
  });
});

describe('blob format', () => {
  const block = makeBlock(1, 48);
  const blob = encodeBlock(block, MODEL);

  it('round-trips and reports its size', () => {
    expect(blob.length).toBe(blobBytes(MODEL, SHAPE, 48));
    expectSameBlock(block, decodeBlock(blob, { modelId: MODEL, shape: SHAPE }));
  });

  it('decodes as views on the buffer when aligned, copies when not', () => {
    expect(blob.byteOffset % 4).toBe(0);
    const viewed = decodeBlock(blob, { modelId: MODEL });
    expect(viewed.keys[0].buffer).toBe(blob.buffer);
    expect(viewed.tokens.buffer).toBe(blob.buffer);
    const shifted = Buffer.alloc(blob.length + 1).subarray(1);
    blob.copy(shifted);
    const copied = decodeBlock(shifted, { modelId: MODEL });
    expect(copied.keys[0].buffer).not.toBe(shifted.buffer);
    expectSameBlock(block, copied);
  });

  it('detects a flipped bit anywhere after the version field', () => {
    for (const at of [8, 13, 20, 40, blob.length >> 1, blob.length - 1]) {
      const bad = Buffer.from(blob);
      bad[at] ^= 0x10;
      expect(() => decodeBlock(bad, { modelId: MODEL })).toThrow(CorruptBlobError);
    }
    const bad = Buffer.from(blob);
    bad[blob.length - 3] ^= 1;
    expect(() => decodeBlock(bad, { modelId: MODEL })).toThrow(/checksum/);
  });

  it('detects truncation and extension', () => {
    for (const n of [0, 10, 40, blob.length - 1]) {
      const e = catchErr(() => decodeBlock(blob.subarray(0, n), { modelId: MODEL }));
      expect(e).toBeInstanceOf(CorruptBlobError);
      expect((e as CorruptBlobError).reason).toBe('truncated');
    }
    const longer = Buffer.concat([blob, Buffer.alloc(4)]);
    expect(() => decodeBlock(longer, { modelId: MODEL })).toThrow(/length/);
  });

  it('refuses bad magic', () => {
    const bad = Buffer.from(blob);
    bad.write('GGUF', 0);
    expect(catchErr(() => decodeBlock(bad, { modelId: MODEL }))).toMatchObject({ kind: 'corrupt', reason: 'magic' });
  });

  it('refuses another model id, format version or shape', () => {
    const other = catchErr(() => decodeBlock(blob, { modelId: 'other-model' }));
    expect(other).toBeInstanceOf(IncompatibleBlobError);
    expect(other).toMatchObject({ reason: 'model' });
    expect((other as Error).message).toContain('other-model');

    const v2 = Buffer.from(blob);
    v2.writeUInt16LE(FORMAT_VERSION + 1, 4);
    expect(catchErr(() => decodeBlock(v2, { modelId: MODEL }))).toMatchObject({ kind: 'incompatible', reason: 'version' });

    expect(catchErr(() => decodeBlock(blob, { modelId: MODEL, shape: { ...SHAPE, headDim: 64 } }))).toMatchObject({
      kind: 'incompatible',
      reason: 'shape',
    });
  });

  it('refuses to encode an inconsistent block', () => {
    const b = makeBlock(2, 8);
    const broken = { ...b, keys: [b.keys[0]] };
    expect(() => encodeBlock(broken, MODEL)).toThrow(InvalidBlockError);
  });
});

function catchErr(f: () => unknown): unknown {
  try {
    f();
  } catch (e) {
    return e;
  }
  throw new Error('expected a throw');
}
