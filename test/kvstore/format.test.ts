import {
  CorruptBlobError,
  FORMAT_VERSION,
  IncompatibleBlobError,
  InvalidBlockError,
  blobBytes,
  chunkKey,
  decodeBlock,
  DTYPE_FP16,
  DTYPE_FP32,
  encodeBlock,
} from '../../shared/kvstore';
import { floatsToHalf, halfToFloats } from '../../shared/engine';
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

describe('float16 blobs (a model whose graph computes KV in float16)', () => {
  // KV as a float16 graph returns it: every value a half (what the engine's float32 cache holds for such a model)
  const block = makeBlock(3, 40);
  const toHalfExact = (a: Float32Array) => {
    const h = new Uint16Array(a.length);
    floatsToHalf(a, h);
    halfToFloats(h, a);
  };
  for (let l = 0; l < SHAPE.layers; l++) {
    toHalfExact(block.keys[l]);
    toHalfExact(block.values[l]);
  }
  const blob = encodeBlock(block, MODEL, 'float16');

  it('holds the payload as halves (dtype 2 in the header), round-trips exactly, and is about half the size', () => {
    expect(blob.readUInt8(6)).toBe(DTYPE_FP16);
    expect(blob.length).toBe(blobBytes(MODEL, SHAPE, 40, 'float16'));
    const f32 = encodeBlock(block, MODEL);
    expect(f32.readUInt8(6)).toBe(DTYPE_FP32);
    const payload = 2 * SHAPE.layers * SHAPE.kvHeads * 40 * SHAPE.headDim;
    expect(f32.length - blob.length).toBe(2 * payload);
    const back = decodeBlock(blob, { modelId: MODEL, shape: SHAPE, dtype: 'float16' });
    expectSameBlock(block, back);
    expect(back.keys[0]).toBeInstanceOf(Float32Array);
    // the float32 blob of the same block is what it always was: fp32 payload, bytes equal to the block's floats
    expect(Buffer.from(f32.buffer, f32.byteOffset + f32.length - 4 * block.values[SHAPE.layers - 1].length).equals(Buffer.from(block.values[SHAPE.layers - 1].buffer))).toBe(true);
  });

  it('a store of one dtype refuses blobs of the other (incompatible, so they are recomputed); checksums cover halves too', () => {
    expect(catchErr(() => decodeBlock(blob, { modelId: MODEL }))).toMatchObject({ kind: 'incompatible', reason: 'dtype' });
    expect(catchErr(() => decodeBlock(encodeBlock(block, MODEL), { modelId: MODEL, dtype: 'float16' }))).toMatchObject({ kind: 'incompatible', reason: 'dtype' });
    const bad = Buffer.from(blob);
    bad[bad.length - 5] ^= 4;
    expect(() => decodeBlock(bad, { modelId: MODEL, dtype: 'float16' })).toThrow(/checksum/);
    const unknown = Buffer.from(blob);
    unknown.writeUInt8(7, 6);
    expect(catchErr(() => decodeBlock(unknown, { modelId: MODEL }))).toMatchObject({ kind: 'incompatible', reason: 'dtype' });
  });

  it('a float32 value that is not a half is rounded to nearest even when stored', () => {
    const b = makeBlock(4, 2);
    const back = decodeBlock(encodeBlock(b, MODEL, 'float16'), { modelId: MODEL, dtype: 'float16' });
    const want = Float32Array.from(b.keys[0]);
    toHalfExact(want);
    expect(Array.from(back.keys[0])).toEqual(Array.from(want));
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
