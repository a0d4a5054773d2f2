/**
 * The KV type: plain data, shared by the engine, the link modes and the KV store.
 *
 * A `KVBlock` holds the keys and values of a run of `length` tokens for every layer, batch 1, in the layout ONNX
 * decoders use: per layer a Float32Array of [kvHeads, length, headDim] (row-major). Keys are post-RoPE: the key of a
 * token at position p carries the rotation R(p); `positions[t]` says which p each token was computed at.
 *
 * Blocks are immutable once built: the store hands the same block to every reader (no copies), and anything that
 * needs different positions builds a new block (see rope.ts).
 */
export interface KVShape {
  layers: number;
  kvHeads: number;
  headDim: number;
}

export interface KVBlock {
  shape: KVShape;
  /** Number of tokens. */
  length: number;
  /** Token ids the block was computed from (length). */
  tokens: Int32Array;
  /** Position of each token when its KV was computed (length). */
  positions: Int32Array;
  /** Per layer, [kvHeads, length, headDim]. */
  keys: Float32Array[];
  /** Per layer, [kvHeads, length, headDim]. */
  values: Float32Array[];
}

export function floatsPerLayer(shape: KVShape, length: number): number {
  return shape.kvHeads * length * shape.headDim;
}

/** Bytes of KV payload (keys and values, all layers), excluding tokens and positions. */
export function kvBytes(block: KVBlock): number {
  return 2 * block.shape.layers * floatsPerLayer(block.shape, block.length) * 4;
}

export function allocBlock(shape: KVShape, length: number): KVBlock {
  const n = floatsPerLayer(shape, length);
  return {
    shape,
    length,
    tokens: new Int32Array(length),
    positions: new Int32Array(length),
    keys: Array.from({ length: shape.layers }, () => new Float32Array(n)),
    values: Array.from({ length: shape.layers }, () => new Float32Array(n)),
  };
}

/** Tokens [start, end) of a block as a new block (copies). */
export function sliceBlock(block: KVBlock, start: number, end: number): KVBlock {
  const { shape } = block;
  const out = allocBlock(shape, end - start);
  out.tokens.set(block.tokens.subarray(start, end));
  out.positions.set(block.positions.subarray(start, end));
  for (let l = 0; l < shape.layers; l++) {
    for (let h = 0; h < shape.kvHeads; h++) {
      const src = (h * block.length + start) * shape.headDim;
      const dst = h * out.length * shape.headDim;
      const n = (end - start) * shape.headDim;
      out.keys[l].set(block.keys[l].subarray(src, src + n), dst);
      out.values[l].set(block.values[l].subarray(src, src + n), dst);
    }
  }
  return out;
}

/** Blocks laid end to end (copies). */
export function concatBlocks(shape: KVShape, blocks: KVBlock[]): KVBlock {
  const total = blocks.reduce((s, b) => s + b.length, 0);
  const out = allocBlock(shape, total);
  let off = 0;
  for (const b of blocks) {
    out.tokens.set(b.tokens, off);
    out.positions.set(b.positions, off);
    for (let l = 0; l < shape.layers; l++) {
      for (let h = 0; h < shape.kvHeads; h++) {
        const n = b.length * shape.headDim;
        const dst = (h * total + off) * shape.headDim;
        out.keys[l].set(b.keys[l].subarray(h * n, (h + 1) * n), dst);
        out.values[l].set(b.values[l].subarray(h * n, (h + 1) * n), dst);
      }
    }
    off += b.length;
  }
  return out;
}
