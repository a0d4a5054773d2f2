import type { KVBlock, KVShape } from './kv';
import type { BufferPool } from './pool';
import type { Rope } from './rope';

/**
 * A preallocated KV cache for a batch of sequences: per layer one Float32Array laid out [batch, kvHeads, capacity,
 * headDim] — the shape the decoder graph takes as its past, so the whole buffer is handed to onnxruntime as it is
 * (no copy) and slots that are unused, stale or belong to later chunks are hidden by the attention bias.
 *
 * Each slot records the position its key was computed at and whether it is valid. New KV is written into slots by
 * the engine (only the new tokens are copied); cached blocks are placed with their keys re-rotated on the way in.
 */
export class KVCache {
  readonly keys: Float32Array[];
  readonly values: Float32Array[];
  /** [batch * capacity] position of each slot's key. */
  readonly slotPos: Int32Array;
  /** [batch * capacity] 1 when the slot holds KV a query may attend to. */
  readonly slotValid: Uint8Array;
  /** [batch * capacity] token id in each slot. */
  readonly slotToken: Int32Array;
  /** Next free slot per row. */
  readonly length: Int32Array;
  /**
   * [batch * capacity] a number that changes whenever the slot's KV is written (any layer): lets a runner keep a
   * converted copy of the cache (float16 graphs) and convert only the slots written since its last call.
   */
  readonly slotGen: Uint32Array;
  private gen = 0;
  /** Floats copied into this cache so far (new KV and placed blocks): the copy accounting tests and benches read. */
  floatsWritten = 0;

  constructor(
    readonly shape: KVShape,
    readonly batch: number,
    readonly capacity: number,
    private readonly pool?: BufferPool,
  ) {
    const n = batch * shape.kvHeads * capacity * shape.headDim;
    // Pooled buffers are not cleared: a slot is read only once it holds KV (slotValid; the attention bias gives every
    // other slot a weight of exactly 0, and what the last user left there is finite KV). Clearing a batch's cache
    // cost ~0.5 ms a request in bench:pipeline's profile.
    const alloc = () => (pool ? pool.acquire(n, null) : new Float32Array(n));
    this.keys = Array.from({ length: shape.layers }, alloc);
    this.values = Array.from({ length: shape.layers }, alloc);
    this.slotPos = new Int32Array(batch * capacity);
    this.slotValid = new Uint8Array(batch * capacity);
    this.slotToken = new Int32Array(batch * capacity);
    this.length = new Int32Array(batch);
    this.slotGen = new Uint32Array(batch * capacity);
  }

  /** Mark slots [from, from + n) of a row, or the listed ones, as rewritten (see slotGen). */
  private touch(row: number, from: number, n: number, slots?: ArrayLike<number>): void {
    const g = ++this.gen;
    const base = row * this.capacity;
    if (slots) for (let s = 0; s < slots.length; s++) this.slotGen[base + slots[s]] = g;
    else this.slotGen.fill(g, base + from, base + from + n);
  }

  /** Hand the buffers back to the pool they came from; the cache must not be used afterwards. */
  release(): void {
    if (!this.pool) return;
    for (const b of [...this.keys, ...this.values]) this.pool.release(b);
    this.keys.length = 0;
    this.values.length = 0;
  }

  /** Offset of (row, head, slot) in a layer's buffer. */
  offset(row: number, head: number, slot: number): number {
    return ((row * this.shape.kvHeads + head) * this.capacity + slot) * this.shape.headDim;
  }

  /** Slots [from, to) of a row, as validity and positions. */
  rowSlots(row: number): { pos: Int32Array; valid: Uint8Array; token: Int32Array } {
    const a = row * this.capacity;
    const b = a + this.capacity;
    return { pos: this.slotPos.subarray(a, b), valid: this.slotValid.subarray(a, b), token: this.slotToken.subarray(a, b) };
  }

  /** Reserve `n` slots at the end of a row; returns the first. */
  reserve(row: number, n: number): number {
    const start = this.length[row];
    if (start + n > this.capacity) {
      throw new RangeError(`KV cache row ${row} is full: ${start} + ${n} slots > capacity ${this.capacity}`);
    }
    this.length[row] = start + n;
    return start;
  }

  /**
   * Place a cached block into a row at the next free slots, its token t at positions[t] (keys re-rotated from the
   * block's own positions). Returns the first slot used.
   */
  place(row: number, block: KVBlock, positions: ArrayLike<number>, rope: Rope): number {
    const { layers, kvHeads, headDim } = this.shape;
    if (block.shape.layers !== layers || block.shape.kvHeads !== kvHeads || block.shape.headDim !== headDim) {
      throw new RangeError('KV block shape does not match the cache');
    }
    const n = block.length;
    const start = this.reserve(row, n);
    let same = true;
    for (let t = 0; t < n && same; t++) same = block.positions[t] === positions[t];
    const d = same ? undefined : rope.deltas(block.positions, positions);
    for (let l = 0; l < layers; l++) {
      for (let h = 0; h < kvHeads; h++) {
        const src = h * n * headDim;
        const dst = this.offset(row, h, start);
        // Slots of a row are contiguous per head: one run per (layer, head), copied, then (keys) rotated in place.
        this.keys[l].set(block.keys[l].subarray(src, src + n * headDim), dst);
        if (d) rope.rotateInPlace(this.keys[l], dst, n, d.cos, d.sin);
        this.values[l].set(block.values[l].subarray(src, src + n * headDim), dst);
      }
    }
    const i0 = row * this.capacity + start;
    this.touch(row, start, n);
    this.slotPos.set(Int32Array.from(positions), i0);
    this.slotValid.fill(1, i0, i0 + n);
    this.slotToken.set(block.tokens, i0);
    this.floatsWritten += 2 * layers * kvHeads * headDim * block.length;
    return start;
  }

  /**
   * Write freshly computed KV into slots of `row`: the graph output is [batch, kvHeads, srcLen, headDim] per layer,
   * and entry (b, srcStart + s) goes to slots[s].
   */
  writeNew(
    row: number,
    b: number,
    srcLen: number,
    srcStart: number,
    newKeys: Float32Array[],
    newValues: Float32Array[],
    slots: ArrayLike<number>,
    positions: ArrayLike<number>,
    tokens: ArrayLike<number>,
  ): void {
    const { layers, kvHeads, headDim } = this.shape;
    for (let l = 0; l < layers; l++) {
      for (let h = 0; h < kvHeads; h++) {
        for (let s = 0; s < slots.length; s++) {
          const src = ((b * kvHeads + h) * srcLen + srcStart + s) * headDim;
          const dst = this.offset(row, h, slots[s]);
          this.keys[l].set(newKeys[l].subarray(src, src + headDim), dst);
          this.values[l].set(newValues[l].subarray(src, src + headDim), dst);
        }
      }
    }
    this.touch(row, 0, 0, slots);
    for (let s = 0; s < slots.length; s++) {
      const i = row * this.capacity + slots[s];
      this.slotPos[i] = positions[s];
      this.slotValid[i] = 1;
      this.slotToken[i] = tokens[s];
    }
    this.floatsWritten += 2 * layers * kvHeads * headDim * slots.length;
  }

  /**
   * Write one layer's fresh KV ([1, kvHeads, srcLen, headDim], entry s → slots[s]) into row 0 (per-layer modes).
   * Slot metadata is left to the caller, since other layers of those slots may still hold cached KV.
   */
  writeLayer(layer: number, key: Float32Array, value: Float32Array, srcLen: number, slots: ArrayLike<number>): void {
    const { kvHeads, headDim } = this.shape;
    for (let h = 0; h < kvHeads; h++) {
      for (let s = 0; s < slots.length; s++) {
        const src = (h * srcLen + s) * headDim;
        const dst = this.offset(0, h, slots[s]);
        this.keys[layer].set(key.subarray(src, src + headDim), dst);
        this.values[layer].set(value.subarray(src, src + headDim), dst);
      }
    }
    this.touch(0, 0, 0, slots);
    this.floatsWritten += 2 * kvHeads * headDim * slots.length;
  }

  /** Mark slots of a row valid, holding `tokens` at `positions` (after their KV was written in every layer). */
  markValid(row: number, slots: ArrayLike<number>, positions: ArrayLike<number>, tokens: ArrayLike<number>): void {
    for (let s = 0; s < slots.length; s++) {
      const i = row * this.capacity + slots[s];
      this.slotPos[i] = positions[s];
      this.slotToken[i] = tokens[s];
      this.slotValid[i] = 1;
    }
  }

  /** Copy slots [0, n) of `src`'s row `srcRow` (every layer and the slot metadata) into this cache's row `dstRow`. */
  copyRow(src: KVCache, srcRow: number, dstRow: number, n = src.length[srcRow]): void {
    const { layers, kvHeads, headDim } = this.shape;
    if (n > this.capacity) throw new RangeError(`KV cache row needs ${n} slots, capacity ${this.capacity}`);
    for (let l = 0; l < layers; l++) {
      for (let h = 0; h < kvHeads; h++) {
        const a = src.offset(srcRow, h, 0);
        const b = this.offset(dstRow, h, 0);
        this.keys[l].set(src.keys[l].subarray(a, a + n * headDim), b);
        this.values[l].set(src.values[l].subarray(a, a + n * headDim), b);
      }
    }
    const s0 = srcRow * src.capacity;
    const d0 = dstRow * this.capacity;
    this.slotPos.set(src.slotPos.subarray(s0, s0 + n), d0);
    this.slotValid.set(src.slotValid.subarray(s0, s0 + n), d0);
    this.slotToken.set(src.slotToken.subarray(s0, s0 + n), d0);
    this.length[dstRow] = n;
    this.touch(dstRow, 0, n);
    this.floatsWritten += 2 * layers * kvHeads * headDim * n;
  }

  /** One past the highest valid slot of any row (0 when none is valid): the slots from there on hold nothing to see. */
  usedSlots(): number {
    const C = this.capacity;
    let used = 0;
    for (let b = 0; b < this.batch; b++) {
      for (let j = C - 1; j >= used; j--) {
        if (this.slotValid[b * C + j]) {
          used = j + 1;
          break;
        }
      }
    }
    return used;
  }

  /**
   * A layer's buffer (`keys[l]` or `values[l]`) with every (row, head) cut to its first `slots` slots, packed into
   * `out` as [batch, kvHeads, width, headDim] (width >= slots; what lies past `slots` in each run is left as it is):
   * a dense past for a graph call that should not span the whole capacity.
   */
  packSlots(buf: Float32Array, slots: number, width: number, out: Float32Array): Float32Array {
    const { kvHeads, headDim } = this.shape;
    for (let b = 0; b < this.batch; b++) {
      for (let h = 0; h < kvHeads; h++) {
        const src = this.offset(b, h, 0);
        out.set(buf.subarray(src, src + slots * headDim), (b * kvHeads + h) * width * headDim);
      }
    }
    return out;
  }

  /** Slots [start, end) of a row as a standalone block (copies). */
  toBlock(row: number, start: number, end: number): KVBlock {
    const { layers, kvHeads, headDim } = this.shape;
    const n = end - start;
    const keys = Array.from({ length: layers }, () => new Float32Array(kvHeads * n * headDim));
    const values = Array.from({ length: layers }, () => new Float32Array(kvHeads * n * headDim));
    for (let l = 0; l < layers; l++) {
      for (let h = 0; h < kvHeads; h++) {
        const src = this.offset(row, h, start);
        keys[l].set(this.keys[l].subarray(src, src + n * headDim), h * n * headDim);
        values[l].set(this.values[l].subarray(src, src + n * headDim), h * n * headDim);
      }
    }
    const a = row * this.capacity;
    return {
      shape: this.shape,
      length: n,
      tokens: this.slotToken.slice(a + start, a + end),
      positions: this.slotPos.slice(a + start, a + end),
      keys,
      values,
    };
  }
}
