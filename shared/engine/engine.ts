import * as ort from 'onnxruntime-node';
import { KVCache } from './cache';
import { BufferPool } from './pool';
import { kvShape, loadModelConfig, type ModelConfig } from './config';
import { ContextLengthError, EngineInputError, ModelLoadError } from './errors';
import { allocBlock, type KVBlock, type KVShape } from './kv';
import { Rope } from './rope';
import { kvOutputNames, openGraph, pastInputNames, type GraphSession, type SessionOptions } from './session';
import { loadTokenizer, type TextTokenizer } from './tokenizer';

/** Additive bias for keys a query must not see. Finite, so a padding row stays finite. */
export const NEG_INF = -1e9;

export interface EngineOptions extends SessionOptions {
  /** Which graph runs the primitive: the model's own primitive graph when it has one (default), or the stock one. */
  graph?: 'auto' | 'primitive' | 'stock';
  /** Verify RoPE re-rotation against the model at load (default true). */
  selfCheck?: boolean;
}

/** One row of a forward call: tokens to compute at the given positions, written into `slots` (default: appended). */
export interface RowInput {
  tokens: ArrayLike<number>;
  positions: ArrayLike<number>;
  slots?: ArrayLike<number>;
}

export interface ForwardResult {
  /** Per row: [S_row, vocab] logits (`all`) or [vocab] of the row's last token (`last`); empty for empty rows. */
  logits: Float32Array[];
  /** Float32 values the graph returned for KV (the new tokens only, with the primitive graph). */
  kvFloatsOut: number;
}

export interface GenerateOptions {
  /** Most tokens to generate: one number for every row, or one per row. */
  maxTokens: number | number[];
  /** Token ids that end a row (default: the model's eos ids). */
  stopIds?: number[];
  /** Called with (row, token) as each token is chosen, for streaming. */
  onToken?: (row: number, token: number) => void;
}

export interface GenerateResult {
  tokens: number[][];
  /** Why each row stopped. */
  finish: ('stop' | 'length')[];
}

export function argmax(v: Float32Array): number {
  let best = 0;
  let bv = -Infinity;
  for (let i = 0; i < v.length; i++) {
    if (v[i] > bv) {
      bv = v[i];
      best = i;
    }
  }
  return best;
}

/** forward's `pastSlots` promise: no valid slot at or past it is visible to (at or before the position of) a token of its row. */
function checkPastSlots(cache: KVCache, rows: RowInput[], pastSlots: number): void {
  if (!Number.isInteger(pastSlots) || pastSlots < 0) throw new EngineInputError(`pastSlots must be a non-negative integer, got ${pastSlots}`);
  const C = cache.capacity;
  for (let b = 0; b < rows.length; b++) {
    let last = -Infinity;
    const ps = rows[b].positions;
    for (let s = 0; s < ps.length; s++) last = Math.max(last, ps[s]);
    for (let j = pastSlots; j < C; j++) {
      if (cache.slotValid[b * C + j] && cache.slotPos[b * C + j] <= last) {
        throw new EngineInputError(`row ${b}: slot ${j} (position ${cache.slotPos[b * C + j]}) is visible to the call's tokens but lies past pastSlots ${pastSlots}`);
      }
    }
  }
}

/**
 * The additive attention bias [B, 1, S, P + S] of a primitive call: query s of row b sees a valid cached slot whose
 * position is at most its own, and the call's tokens at positions at most its own. The common shapes (increasing
 * positions, a cache wholly before the new tokens) are filled by ranges; anything else is checked key by key.
 */
export function buildBias(
  cache: KVCache,
  rows: RowInput[],
  S: number,
  P: number,
  slotValid: Uint8Array = cache.slotValid,
  out?: Float32Array,
): Float32Array {
  const B = cache.batch;
  const C = cache.capacity;
  const T = P + S;
  // `out`, when given, arrives filled with NEG_INF (BufferPool.acquire's fill).
  const bias = out ?? new Float32Array(B * S * T).fill(NEG_INF);
  for (let b = 0; b < B; b++) {
    const r = rows[b];
    const n = r.tokens.length;
    let increasing = true;
    let first = Infinity;
    for (let s = 0; s < n; s++) {
      first = Math.min(first, r.positions[s]);
      if (s && r.positions[s] <= r.positions[s - 1]) increasing = false;
    }
    const valid: number[] = [];
    let pastBefore = true;
    // Valid slots' positions never decrease with the slot index (chunks placed in prompt order): then the past a query
    // sees is every valid slot up to one index, a copy of a prefix of pastRow.
    let monotone = true;
    let lastPos = -Infinity;
    // The past passed is the cache's first P slots (all of them, or a compacted prefix; P = 1 with no valid slot is
    // the masked placeholder of an empty past).
    for (let j = 0; j < Math.min(P, C); j++) {
      if (!slotValid[b * C + j]) continue;
      valid.push(j);
      const pos = cache.slotPos[b * C + j];
      if (pos >= first) pastBefore = false;
      if (pos < lastPos) monotone = false;
      lastPos = pos;
    }
    const pastRow = new Float32Array(P).fill(NEG_INF);
    for (const j of valid) pastRow[j] = 0;
    for (let s = 0; s < S; s++) {
      const rowOff = (b * S + s) * T;
      if (s >= n) {
        bias[rowOff + P + s] = 0; // padding query: sees only itself
        continue;
      }
      const q = r.positions[s];
      if (pastBefore) bias.set(pastRow, rowOff);
      else if (monotone) {
        // How many valid slots have position <= q (binary search), then copy pastRow up to the last of them.
        let lo = 0;
        let hi = valid.length;
        while (lo < hi) {
          const mid = (lo + hi) >> 1;
          if (cache.slotPos[b * C + valid[mid]] <= q) lo = mid + 1;
          else hi = mid;
        }
        if (lo) bias.set(pastRow.subarray(0, valid[lo - 1] + 1), rowOff);
      } else for (const j of valid) if (cache.slotPos[b * C + j] <= q) bias[rowOff + j] = 0;
      if (increasing) bias.fill(0, rowOff + P, rowOff + P + s + 1);
      else for (let k = 0; k < n; k++) if (r.positions[k] <= q) bias[rowOff + P + k] = 0;
    }
  }
  return bias;
}

/**
 * The engine: a model, its tokenizer and one primitive — compute a set of tokens at given positions over a KV cache,
 * each token attending causally by position to the valid slots of its row and to the call's earlier tokens.
 * Everything else (compile a chunk, prefill, link, decode) is built on `forward`.
 */
export class Engine {
  readonly shape: KVShape;
  readonly rope: Rope;
  /** Which graph `forward` runs. */
  readonly graphKind: 'primitive' | 'stock';
  /** Buffers for request caches (see newCache / KVCache.release). */
  readonly pool = new BufferPool();
  /**
   * Attention-bias buffers, pooled apart from KV buffers: a KV buffer is handed out uncleared (KVCache), which is safe
   * only if all it can hold is KV; a bias buffer's -1e9s in a masked key slot would outweigh the mask.
   */
  private readonly biasPool = new BufferPool(64 * 1024 * 1024);

  private constructor(
    readonly config: ModelConfig,
    readonly tokenizer: TextTokenizer,
    private readonly graph: GraphSession,
    /** The options its sessions were opened with: other graphs of the model (LayeredModel) open with the same. */
    readonly sessionOptions: SessionOptions,
  ) {
    this.shape = kvShape(config);
    this.rope = new Rope(config.headDim, config.ropeTheta, config.ropeScaling);
    this.graphKind = graph.kind;
  }

  get id(): string {
    return this.config.id;
  }

  get contextLength(): number {
    return this.config.contextLength;
  }

  static async load(dir: string, opts: EngineOptions = {}): Promise<Engine> {
    const config = loadModelConfig(dir);
    const tokenizer = loadTokenizer(config);
    const want = opts.graph ?? 'auto';
    let graph: GraphSession;
    if (want === 'stock' || (want === 'auto' && !config.graphs.primitive)) {
      graph = await openGraph(config, 'stock', config.graphs.stock ?? 'model.onnx', opts);
    } else {
      if (!config.graphs.primitive) {
        throw new ModelLoadError(`${dir}/config.json names no primitive graph (epic.graphs.primitive)`, `${dir}/config.json`);
      }
      graph = await openGraph(config, 'primitive', config.graphs.primitive, opts);
    }
    const engine = new Engine(config, tokenizer, graph, opts);
    if (opts.selfCheck !== false) await engine.checkRope();
    return engine;
  }

  newCache(batch: number, capacity: number): KVCache {
    if (capacity > this.contextLength) throw new ContextLengthError(capacity, this.contextLength, 'KV cache');
    return new KVCache(this.shape, batch, capacity, this.pool);
  }

  /** Prompt token ids: BOS then the text's tokens. */
  encodePrompt(text: string): number[] {
    return [this.config.bosTokenId, ...this.tokenizer.encode(text)];
  }

  /**
   * The primitive. `rows[i]` is row i of the cache (an empty row computes nothing). `pastSlots` (primitive graph)
   * promises that no token of the call sees a cached slot at or past that index, so only the first `pastSlots` slots
   * are passed: a call whose tokens all sit early in a long cache attends over that much less. The promise is checked
   * (a valid slot there at or before a token's position is refused).
   */
  async forward(cache: KVCache, rows: RowInput[], opts: { logits?: 'last' | 'all'; pastSlots?: number } = {}): Promise<ForwardResult> {
    if (rows.length !== cache.batch) throw new EngineInputError(`forward needs ${cache.batch} rows, got ${rows.length}`);
    const B = cache.batch;
    const S = Math.max(1, ...rows.map((r) => r.tokens.length));
    const slots: number[][] = [];
    for (let b = 0; b < B; b++) {
      const r = rows[b];
      if (r.positions.length !== r.tokens.length) throw new EngineInputError(`row ${b}: ${r.tokens.length} tokens but ${r.positions.length} positions`);
      for (let s = 0; s < r.tokens.length; s++) {
        const p = r.positions[s];
        if (!Number.isInteger(p) || p < 0) throw new EngineInputError(`row ${b}: position ${p} is not a non-negative integer`);
        if (p >= this.contextLength) throw new ContextLengthError(p + 1, this.contextLength);
        const t = r.tokens[s];
        if (!Number.isInteger(t) || t < 0 || t >= this.config.vocabSize) throw new EngineInputError(`row ${b}: token id ${t} outside vocabulary of ${this.config.vocabSize}`);
      }
      if (r.slots && r.slots.length !== r.tokens.length) throw new EngineInputError(`row ${b}: ${r.tokens.length} tokens but ${r.slots.length} slots`);
      if (!r.slots && cache.length[b] + r.tokens.length > cache.capacity) {
        throw new EngineInputError(`row ${b}: ${r.tokens.length} more tokens do not fit the cache (${cache.length[b]} of ${cache.capacity} slots used)`);
      }
    }
    if (opts.pastSlots !== undefined) checkPastSlots(cache, rows, opts.pastSlots);
    // Every row checked: only now take slots, so a refused call leaves the cache as it was.
    for (let b = 0; b < B; b++) {
      const r = rows[b];
      if (r.slots) slots.push(Array.from(r.slots));
      else {
        const start = cache.reserve(b, r.tokens.length);
        slots.push(Array.from({ length: r.tokens.length }, (_, i) => start + i));
      }
    }
    const ids = new BigInt64Array(B * S);
    const pos = new BigInt64Array(B * S);
    for (let b = 0; b < B; b++) {
      const r = rows[b];
      for (let s = 0; s < S; s++) {
        const real = s < r.tokens.length;
        ids[b * S + s] = BigInt(real ? r.tokens[s] : this.config.padTokenId);
        pos[b * S + s] = BigInt(real ? r.positions[s] : 0);
      }
    }
    const { logits, newK, newV, srcLen, srcStart, kvFloatsOut } =
      this.graph.kind === 'primitive' ? await this.runPrimitive(cache, rows, S, ids, pos, opts.pastSlots) : await this.runStock(cache, rows, S, ids, pos);
    for (let b = 0; b < B; b++) {
      const r = rows[b];
      if (r.tokens.length) cache.writeNew(b, b, srcLen, srcStart, newK, newV, slots[b], r.positions, r.tokens);
    }
    const V = this.config.vocabSize;
    const out: Float32Array[] = [];
    for (let b = 0; b < B; b++) {
      const n = rows[b].tokens.length;
      if (!n) out.push(new Float32Array(0));
      else if (opts.logits === 'all') out.push(logits.subarray(b * S * V, (b * S + n) * V));
      else out.push(logits.slice((b * S + n - 1) * V, (b * S + n) * V));
    }
    return { logits: out, kvFloatsOut };
  }

  private kvDims(B: number, P: number): number[] {
    return [B, this.shape.kvHeads, P, this.shape.headDim];
  }

  /**
   * How many cached slots a primitive call of S tokens attends over (P). A past much shorter than the cache (a
   * prefix-cache hit followed by a long prefill, or forward's `pastSlots`) is passed as a copy of its first `used`
   * slots when the keys that saves outweigh the copy; otherwise the cache's buffers go in whole (views, no copy). An
   * empty past is passed as one masked zero slot: some exported graphs (GQA head repetition) reject a zero-length past.
   */
  pastPlan(cache: KVCache, S: number, pastSlots = Infinity): { used: number; compact: boolean; P: number } {
    const C = cache.capacity;
    const used = Math.min(cache.usedSlots(), pastSlots);
    const compact = used > 0 && used < C && (C - used) * S > used * this.shape.headDim;
    return { used, compact, P: used === 0 ? 1 : compact ? used : C };
  }

  /** Primitive graph: the cache's buffers go in whole (views, no copy); a bias hides what a query must not see. */
  private async runPrimitive(cache: KVCache, rows: RowInput[], S: number, ids: BigInt64Array, pos: BigInt64Array, pastSlots = Infinity) {
    const B = cache.batch;
    const C = cache.capacity;
    const { kvHeads, headDim } = this.shape;
    const { used, compact, P } = this.pastPlan(cache, S, pastSlots);
    const anyValid = used > 0;
    const T = P + S;
    // The bias is B × S × (P + S) floats (megabytes for a batch): pooled, so it is not garbage on every call.
    const bias = buildBias(cache, rows, S, P, cache.slotValid, this.biasPool.acquire(B * S * T, NEG_INF));
    const feeds: Record<string, ort.Tensor> = {
      input_ids: new ort.Tensor('int64', ids, [B, S]),
      position_ids: new ort.Tensor('int64', pos, [B, S]),
      attn_bias: new ort.Tensor('float32', bias, [B, 1, S, T]),
    };
    const names = pastInputNames(this.shape.layers);
    const dummy = anyValid ? null : new Float32Array(B * kvHeads * headDim);
    const copies: Float32Array[] = [];
    const past = (buf: Float32Array): Float32Array => {
      if (dummy) return dummy;
      if (!compact) return buf;
      const out = cache.packSlots(buf, P, P, this.pool.acquire(B * kvHeads * P * headDim, null));
      copies.push(out);
      return out;
    };
    for (let l = 0; l < this.shape.layers; l++) {
      feeds[names[2 * l]] = new ort.Tensor('float32', past(cache.keys[l]), this.kvDims(B, P));
      feeds[names[2 * l + 1]] = new ort.Tensor('float32', past(cache.values[l]), this.kvDims(B, P));
    }
    let res: ort.InferenceSession.OnnxValueMapType;
    try {
      res = await this.graph.session.run(feeds);
    } finally {
      this.biasPool.release(bias);
      for (const c of copies) this.pool.release(c);
    }
    return this.collect(res, 'primitive', S, 0);
  }

  /**
   * Stock Optimum graph: its past must be dense, so the valid prefix of each row is copied in and the graph returns
   * the whole cache concatenated. Supports rows whose valid slots precede the new tokens (prefill, extend, decode).
   */
  private async runStock(cache: KVCache, rows: RowInput[], S: number, ids: BigInt64Array, pos: BigInt64Array) {
    const B = cache.batch;
    const C = cache.capacity;
    const dense = cache.usedSlots(); // slots copied from the cache; an empty past becomes one masked zero slot (see runPrimitive)
    const P = Math.max(dense, 1);
    for (let b = 0; b < B; b++) {
      const r = rows[b];
      if (!r.tokens.length) continue;
      let first = Infinity;
      for (let s = 0; s < r.positions.length; s++) first = Math.min(first, r.positions[s]);
      for (let j = 0; j < dense; j++) {
        if (cache.slotValid[b * C + j] && cache.slotPos[b * C + j] >= first) {
          throw new EngineInputError(
            'the stock graph attends to every valid cached slot; this call needs position-masked attention, which only the primitive graph (model_epic.onnx) provides',
          );
        }
      }
    }
    const T = P + S;
    const mask = new BigInt64Array(B * T);
    for (let b = 0; b < B; b++) {
      for (let j = 0; j < dense; j++) mask[b * T + j] = BigInt(cache.slotValid[b * C + j]);
      for (let s = 0; s < S; s++) mask[b * T + P + s] = s < rows[b].tokens.length ? 1n : 0n;
    }
    const { kvHeads, headDim } = this.shape;
    const feeds: Record<string, ort.Tensor> = {
      input_ids: new ort.Tensor('int64', ids, [B, S]),
      attention_mask: new ort.Tensor('int64', mask, [B, T]),
      position_ids: new ort.Tensor('int64', pos, [B, S]),
    };
    const names = pastInputNames(this.shape.layers);
    for (let l = 0; l < this.shape.layers; l++) {
      const k = cache.packSlots(cache.keys[l], dense, P, new Float32Array(B * kvHeads * P * headDim));
      const v = cache.packSlots(cache.values[l], dense, P, new Float32Array(B * kvHeads * P * headDim));
      feeds[names[2 * l]] = new ort.Tensor('float32', k, this.kvDims(B, P));
      feeds[names[2 * l + 1]] = new ort.Tensor('float32', v, this.kvDims(B, P));
    }
    const res = await this.graph.session.run(feeds);
    return this.collect(res, 'stock', T, P);
  }

  private collect(res: ort.InferenceSession.OnnxValueMapType, kind: 'primitive' | 'stock', srcLen: number, srcStart: number) {
    const outNames = kvOutputNames(kind, this.shape.layers);
    const newK: Float32Array[] = [];
    const newV: Float32Array[] = [];
    let kvFloatsOut = 0;
    for (let l = 0; l < this.shape.layers; l++) {
      const k = res[outNames[2 * l]].data as Float32Array;
      const v = res[outNames[2 * l + 1]].data as Float32Array;
      newK.push(k);
      newV.push(v);
      kvFloatsOut += k.length + v.length;
    }
    return { logits: res.logits.data as Float32Array, newK, newV, srcLen, srcStart, kvFloatsOut };
  }

  /** KV of `tokens` computed alone (no context) at positions start..start+L-1: a chunk's compiled form. */
  async compile(tokens: ArrayLike<number>, start = 0): Promise<KVBlock> {
    if (!tokens.length) throw new EngineInputError('cannot compile an empty chunk');
    if (start + tokens.length > this.contextLength) throw new ContextLengthError(start + tokens.length, this.contextLength, 'chunk');
    const cache = new KVCache(this.shape, 1, tokens.length);
    await this.forward(cache, [{ tokens, positions: Array.from({ length: tokens.length }, (_, i) => start + i) }]);
    return cache.toBlock(0, 0, tokens.length);
  }

  /**
   * Prefill a batch of prompts from position 0 into a fresh cache with room for `maxNewTokens` more per row.
   * Returns the cache and each row's last-token logits.
   */
  async prefill(prompts: number[][], maxNewTokens = 0): Promise<{ cache: KVCache; logits: Float32Array[] }> {
    if (!prompts.length) throw new EngineInputError('no prompts');
    for (const p of prompts) {
      if (!p.length) throw new EngineInputError('empty prompt');
      if (p.length + maxNewTokens > this.contextLength) throw new ContextLengthError(p.length + maxNewTokens, this.contextLength);
    }
    const capacity = Math.max(...prompts.map((p) => p.length)) + maxNewTokens;
    const cache = this.newCache(prompts.length, capacity);
    const { logits } = await this.forward(
      cache,
      prompts.map((p) => ({ tokens: p, positions: p.map((_, i) => i) })),
    );
    return { cache, logits };
  }

  /**
   * Greedy decoding from each row's last logits. Each new token sits at the row's next position (one past its highest
   * cached position) in the next free slot. Stops a row at a stop id (not included) or after maxTokens.
   */
  async generate(cache: KVCache, lastLogits: Float32Array[], opts: GenerateOptions): Promise<GenerateResult> {
    const B = cache.batch;
    if (lastLogits.length !== B) throw new EngineInputError(`generate needs ${B} logits rows, got ${lastLogits.length}`);
    const maxOf = Array.isArray(opts.maxTokens) ? opts.maxTokens : Array<number>(B).fill(opts.maxTokens);
    if (maxOf.length !== B || maxOf.some((m) => !Number.isInteger(m) || m < 0)) {
      throw new EngineInputError(`maxTokens must be a non-negative integer (or one per row), got ${JSON.stringify(opts.maxTokens)}`);
    }
    const steps = Math.max(0, ...maxOf);
    const stop = new Set(opts.stopIds ?? this.config.eosTokenIds);
    const nextPos = new Int32Array(B);
    for (let b = 0; b < B; b++) {
      let m = -1;
      const { pos, valid } = cache.rowSlots(b);
      for (let j = 0; j < cache.capacity; j++) if (valid[j] && pos[j] > m) m = pos[j];
      nextPos[b] = m + 1;
    }
    const tokens: number[][] = Array.from({ length: B }, () => []);
    const finish: ('stop' | 'length')[] = Array(B).fill('length');
    const done = maxOf.map((m) => m === 0);
    let logits = lastLogits;
    for (let step = 0; step < steps; step++) {
      const rows: RowInput[] = [];
      for (let b = 0; b < B; b++) {
        if (done[b]) {
          rows.push({ tokens: [], positions: [] });
          continue;
        }
        const t = argmax(logits[b]);
        if (stop.has(t)) {
          done[b] = true;
          finish[b] = 'stop';
          rows.push({ tokens: [], positions: [] });
          continue;
        }
        tokens[b].push(t);
        opts.onToken?.(b, t);
        if (tokens[b].length >= maxOf[b]) {
          done[b] = true;
          rows.push({ tokens: [], positions: [] });
          continue;
        }
        if (nextPos[b] >= this.contextLength) throw new ContextLengthError(nextPos[b] + 1, this.contextLength);
        rows.push({ tokens: [t], positions: [nextPos[b]++] });
      }
      if (done.every(Boolean)) break;
      logits = (await this.forward(cache, rows)).logits;
    }
    return { tokens, finish };
  }

  /**
   * Run the graph once at the largest shapes serving expects, so onnxruntime's memory arena grows now and not during
   * the first requests (vLLM's profile run does the same for its KV memory). The calls: a prefill of one row of
   * `capacity` tokens (full mode's shape), `rows` rows of `tokens` tokens after `capacity - tokens - 1` cached
   * slots each (a batch of linked requests), and one decode step of `rows` rows. Measured here, in one process, on
   * 64 requests linked in attnlink-16 batches of 16 right after loading: 47-52 jobs/s without it, 90-110 after a
   * warm-up of (16 rows, 2,048 slots, 256 tokens), which took ~2 s; the second pass ran at 104-139 either way.
   * Returns the milliseconds it took.
   */
  async warmup(opts: { rows: number; capacity: number; tokens: number }): Promise<number> {
    const t0 = performance.now();
    // At least one cached slot before the tokens (a budget too small for that still warms up a minimal batch).
    const capacity = Math.min(this.contextLength, Math.max(opts.capacity, 3));
    const tokens = Math.max(1, Math.min(opts.tokens, capacity - 2));
    const rows = Math.max(1, opts.rows);
    const at = (start: number, n: number) => Array.from({ length: n }, (_, i) => start + i);
    const pad = this.config.padTokenId;
    const one = this.newCache(1, capacity);
    try {
      await this.forward(one, [{ tokens: Array<number>(capacity).fill(pad), positions: at(0, capacity) }]);
    } finally {
      one.release();
    }
    // The past of each row: zero KV placed as it is (no rotation), then the row's tokens after it.
    const past = capacity - tokens - 1;
    if (past < 1) return performance.now() - t0;
    const block = allocBlock(this.shape, past);
    block.positions.set(at(0, past));
    const cache = this.newCache(rows, capacity);
    try {
      for (let b = 0; b < rows; b++) cache.place(b, block, block.positions, this.rope);
      await this.forward(cache, Array.from({ length: rows }, () => ({ tokens: Array<number>(tokens).fill(pad), positions: at(past, tokens) })));
      await this.forward(cache, Array.from({ length: rows }, () => ({ tokens: [pad], positions: [past + tokens] })));
    } finally {
      cache.release();
    }
    return performance.now() - t0;
  }

  /**
   * Self-check: a random chunk compiled at 0 and re-rotated to P must equal the chunk compiled at P. Refuses a model
   * whose rotary convention (interleaved pairs, scaling, partial rotary) the re-rotation does not reproduce.
   */
  async checkRope(tol = 1e-3): Promise<void> {
    const n = 8;
    const P = Math.min(1000, this.contextLength - n);
    let seed = 12345;
    const tokens = Array.from({ length: n }, () => {
      seed = (seed * 1103515245 + 12345) % 2147483648;
      return 5 + (seed % Math.max(1, this.config.vocabSize - 5));
    });
    const at0 = await this.compile(tokens, 0);
    const atP = await this.compile(tokens, P);
    const moved = this.rope.shiftBlock(at0, P);
    let worst = 0;
    for (let l = 0; l < this.shape.layers; l++) {
      const a = moved.keys[l];
      const b = atP.keys[l];
      for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]));
    }
    if (!(worst <= tol)) {
      throw new ModelLoadError(
        `RoPE self-check failed for ${this.config.dir}: keys computed at position 0 and re-rotated to ${P} differ from keys ` +
          `computed at ${P} by ${worst.toExponential(2)} (> ${tol}). The model's rotary embedding is not the rotate_half ` +
          `convention with rope_theta ${this.config.ropeTheta}` +
          (this.config.ropeScaling ? ` and rope_scaling ${JSON.stringify(this.config.ropeScaling)}` : ' (no rope_scaling)') +
          ` over the full head_dim, so cached chunks cannot be moved.`,
        `${this.config.dir}/config.json`,
      );
    }
  }
}

export async function loadEngine(dir: string, opts: EngineOptions = {}): Promise<Engine> {
  return Engine.load(dir, opts);
}
