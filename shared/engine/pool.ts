/**
 * A pool of Float32Array buffers for KV caches. A request's cache is megabytes; allocating (and later collecting) one
 * per request puts garbage-collection pauses on the TTFT path. Buffers are kept by size class and handed out as
 * exact-length views (onnxruntime takes a view as it is), zeroed on the way out. Classes are quarter octaves
 * (2^(k/4) floats, rounded up to 1,024): a view wastes at most 19% of its buffer, where powers of two wasted up to
 * half (a 4,137-slot cache at the SmolLM2-135M shape: 252 MB of buffers for 190 MB of KV).
 */
export class BufferPool {
  private readonly free = new Map<number, ArrayBuffer[]>();
  private pooledBytes = 0;
  private lent = 0;

  constructor(readonly maxPooledBytes = 512 * 1024 * 1024) {}

  /**
   * A view of `floats` floats, every one set to `fill` (0 by default). `null`: contents unspecified (a reused buffer
   * keeps what its last user wrote), for callers that write before they read, or never read what they did not write.
   */
  acquire(floats: number, fill: number | null = 0): Float32Array {
    const size = sizeClass(floats);
    const list = this.free.get(size * 4);
    const buf = list?.pop();
    this.lent++;
    if (buf) {
      this.pooledBytes -= buf.byteLength;
      const view = new Float32Array(buf, 0, floats);
      if (fill !== null) view.fill(fill);
      return view;
    }
    const view = new Float32Array(new ArrayBuffer(size * 4), 0, floats);
    if (fill !== null && fill !== 0) view.fill(fill);
    return view;
  }

  release(view: Float32Array): void {
    this.lent--;
    const buf = view.buffer as ArrayBuffer;
    if (this.pooledBytes + buf.byteLength > this.maxPooledBytes) return;
    const list = this.free.get(buf.byteLength) ?? [];
    list.push(buf);
    this.free.set(buf.byteLength, list);
    this.pooledBytes += buf.byteLength;
  }

  get bytes(): number {
    return this.pooledBytes;
  }

  /** Views handed out and not released yet: a serving loop that releases every cache on every path keeps it level. */
  get outstanding(): number {
    return this.lent;
  }
}

/** The buffer length (floats) a view of `floats` floats is cut from: the next quarter-octave step, a multiple of 1,024. */
export function sizeClass(floats: number): number {
  if (floats <= 1024) return 1024;
  let size = 2 ** (Math.ceil(Math.log2(floats) * 4) / 4);
  size = Math.ceil(size / 1024) * 1024;
  // log2's rounding can land a step short
  return size >= floats ? size : sizeClass(floats * (1 + 1e-9) + 1);
}
