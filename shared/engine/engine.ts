import { CALL_BUDGET, tokensPerCall } from './budget';
import { KVCache } from './cache';
import type { ModelConfig, ModelConfigOptions } from './config';
import { ContextLengthError, EngineInputError, ModelLoadError } from './errors';
import { generateAll } from './generate';
import { allocBlock, type KVBlock, type KVShape } from './kv';
import { Model, type EngineCapabilities } from './model';
import { BufferPool } from './pool';
import type { Rope } from './rope';
import type { GraphChoice, GraphRunner, RowInput } from './runner';
import type { SessionOptions } from './session';
import type { TextTokenizer } from './tokenizer';

export type { RowInput } from './runner';

export interface EngineOptions extends SessionOptions, ModelConfigOptions {
  /** Which graph runs the primitive: the model's own primitive graph when it has one (default), or the stock one. */
  graph?: GraphChoice;
  /** Verify RoPE re-rotation against the model at load (default true). */
  selfCheck?: boolean;
  /**
   * Floats one graph call may spend on attention scores (heads × tokens × keys per row; plus tokens × vocab of logits
   * where the graph cannot return only the rows' last ones). A longer forward runs as several calls (chunked
   * prefill). Default CALL_BUDGET.
   */
  callBudget?: number;
}

export { CALL_BUDGET } from './budget';

export interface ForwardResult {
  /** Per row: [S_row, vocab] logits (`all`) or [vocab] of the row's last token (`last`); empty for empty rows. */
  logits: Float32Array[];
  /** Float32 values the graph returned for KV (the new tokens only, with the primitive graph). */
  kvFloatsOut: number;
  /** Floats converted between float32 and float16 at the graph boundary (float16-KV graphs; 0 otherwise). */
  floatsConverted: number;
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

export { argmax } from './sampling';

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
 * The engine: a model, its tokenizer and one primitive — compute a set of tokens at given positions over a KV cache,
 * each token attending causally by position to the valid slots of its row and to the call's earlier tokens.
 * Everything else (compile a chunk, prefill, link, decode) is built on `forward`.
 *
 * A façade over three parts (node-llama-cpp's LlamaModel → LlamaContext → LlamaContextSequence; vLLM v1's model
 * runner behind its scheduler): `Model` (config, tokenizer, RoPE, the graph runner chosen at load), the runner
 * (runner/primitive.ts or runner/stock.ts: graph I/O, biases, masks, float16 conversion) and `KVCache` (the rows'
 * state). Callers ask `capabilities` what the runner can do; nothing outside the engine looks at which graph it is.
 */
export class Engine {
  readonly shape: KVShape;
  readonly rope: Rope;
  /** Buffers for request caches (see newCache / KVCache.release). */
  readonly pool: BufferPool;
  readonly config: ModelConfig;
  readonly tokenizer: TextTokenizer;
  /** The options its sessions were opened with: other graphs of the model (LayeredModel) open with the same. */
  readonly sessionOptions: SessionOptions;
  /** What the loaded graphs can do (position-masked attention, pastSlots, per-layer graphs, KV dtype, ...). */
  readonly capabilities: EngineCapabilities;
  private readonly runner: GraphRunner;

  /** See EngineOptions.callBudget. */
  readonly callBudget: number;

  private constructor(
    readonly model: Model,
    pool: BufferPool,
    callBudget = CALL_BUDGET,
  ) {
    if (!(callBudget > 0)) throw new EngineInputError(`callBudget must be positive, got ${callBudget}`);
    this.callBudget = callBudget;
    this.pool = pool;
    this.config = model.config;
    this.tokenizer = model.tokenizer;
    this.sessionOptions = model.sessionOptions;
    this.shape = model.shape;
    this.rope = model.rope;
    this.runner = model.runner;
    this.capabilities = model.capabilities;
  }

  /** Which graph runs `forward`, for logs and tests; decisions go through `capabilities`. */
  get graphKind(): 'primitive' | 'stock' {
    return this.runner.kind;
  }

  get id(): string {
    return this.config.id;
  }

  get contextLength(): number {
    return this.config.contextLength;
  }

  static async load(dir: string, opts: EngineOptions = {}): Promise<Engine> {
    const pool = new BufferPool();
    const model = await Model.load(dir, opts.graph ?? 'auto', opts);
    const engine = new Engine(model, pool, opts.callBudget);
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
    if (opts.pastSlots !== undefined) {
      if (!this.capabilities.pastSlots) throw new EngineInputError(`pastSlots needs a graph that takes a partial past; ${this.runner.file} does not`);
      checkPastSlots(cache, rows, opts.pastSlots);
    }
    this.runner.check(cache, rows);
    // Every row checked: only now take slots, so a refused call leaves the cache as it was.
    for (let b = 0; b < B; b++) {
      const r = rows[b];
      if (r.slots) slots.push(Array.from(r.slots));
      else {
        const start = cache.reserve(b, r.tokens.length);
        slots.push(Array.from({ length: r.tokens.length }, (_, i) => start + i));
      }
    }
    const wantAll = opts.logits === 'all';
    const step = this.callTokens(cache, rows, slots, S, wantAll);
    if (step >= S) {
      const r = await this.call(cache, rows, slots, S, wantAll, opts.pastSlots);
      return { logits: r.logits, kvFloatsOut: r.kvFloatsOut, floatsConverted: r.floatsConverted };
    }
    // Chunked: the rows' tokens [s0, s0 + step) per call. Each call's KV is written before the next, which sees it as
    // cached slots at earlier positions: what one call would have computed (callTokens splits only where that holds).
    const V = this.config.vocabSize;
    const logits = rows.map((r) => new Float32Array(wantAll ? r.tokens.length * V : r.tokens.length ? V : 0));
    let kvFloatsOut = 0;
    let floatsConverted = 0;
    let written = 0;
    const tokens = rows.map((r) => Array.from(r.tokens));
    const positions = rows.map((r) => Array.from(r.positions));
    for (let s0 = 0; s0 < S; s0 += step) {
      const part = rows.map((r, b) => {
        const end = Math.min(r.tokens.length, s0 + step);
        const from = Math.min(s0, end);
        return { tokens: tokens[b].slice(from, end), positions: positions[b].slice(from, end), slots: slots[b].slice(from, end) };
      });
      const partS = Math.max(1, ...part.map((p) => p.tokens.length));
      // The promise of pastSlots holds for the slots this forward writes too: pass them, as one call would see them.
      const pastSlots = opts.pastSlots === undefined ? undefined : Math.max(opts.pastSlots, written);
      const r = await this.call(cache, part, part.map((p) => p.slots), partS, wantAll, pastSlots);
      kvFloatsOut += r.kvFloatsOut;
      floatsConverted += r.floatsConverted;
      part.forEach((p, b) => {
        for (const j of p.slots) written = Math.max(written, j + 1);
        if (!p.tokens.length) return;
        if (wantAll) logits[b].set(r.logits[b], s0 * V);
        else if (s0 + p.tokens.length === rows[b].tokens.length) logits[b].set(r.logits[b]);
      });
    }
    return { logits, kvFloatsOut, floatsConverted };
  }

  /**
   * Tokens a row per graph call for this forward: all of them (S), or fewer when the call would pass callBudget and
   * cutting it keeps its meaning: each row's positions increase (so no token would see one computed after it) and
   * its slots hold nothing valid yet (a token of a later call must not be visible as an old value to an earlier one).
   */
  private callTokens(cache: KVCache, rows: RowInput[], slots: number[][], S: number, wantAll: boolean): number {
    const B = cache.batch;
    const logitFloats = wantAll || !this.capabilities.logitsIndex ? this.config.vocabSize : 0;
    const cost = (n: number) => B * n * (this.config.heads * (cache.capacity + n) + logitFloats);
    const step = tokensPerCall(S, cost, this.callBudget);
    if (step >= S) return S;
    const C = cache.capacity;
    for (let b = 0; b < rows.length; b++) {
      const ps = rows[b].positions;
      for (let s = 1; s < ps.length; s++) if (ps[s] <= ps[s - 1]) return S;
      for (const j of slots[b]) if (cache.slotValid[b * C + j]) return S;
    }
    return step;
  }

  /** One graph call: rows' tokens into their slots; per row its logits (all tokens', or its last token's). */
  private async call(cache: KVCache, rows: RowInput[], slots: number[][], S: number, wantAll: boolean, pastSlots: number | undefined) {
    const B = cache.batch;
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
    const res = await this.runner.run({ cache, rows, S, ids, pos, pastSlots, logits: wantAll ? 'all' : 'last' });
    for (let b = 0; b < B; b++) {
      const r = rows[b];
      if (r.tokens.length) cache.writeNew(b, b, res.srcLen, res.srcStart[b], res.newK, res.newV, slots[b], r.positions, r.tokens);
    }
    const V = this.config.vocabSize;
    const logits: Float32Array[] = [];
    for (let b = 0; b < B; b++) {
      const n = rows[b].tokens.length;
      if (!n) logits.push(new Float32Array(0));
      else if (res.lastOnly) logits.push(res.logits.subarray(b * V, (b + 1) * V));
      else if (wantAll) logits.push(res.logits.subarray(b * S * V, (b * S + n) * V));
      else logits.push(res.logits.slice((b * S + n - 1) * V, (b * S + n) * V));
    }
    return { logits, kvFloatsOut: res.kvFloatsOut, floatsConverted: res.floatsConverted };
  }

  /**
   * How many cached slots a call of S tokens attends over (P), and whether they go in as a packed copy of the first
   * `used` slots rather than the cache's buffers whole (see PrimitiveRunner.pastPlan).
   */
  pastPlan(cache: KVCache, S: number, pastSlots = Infinity): { used: number; compact: boolean; P: number } {
    return this.runner.pastPlan(cache, S, pastSlots);
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
    try {
      const { logits } = await this.forward(
        cache,
        prompts.map((p) => ({ tokens: p, positions: p.map((_, i) => i) })),
      );
      return { cache, logits };
    } catch (e) {
      cache.release();
      throw e;
    }
  }

  /**
   * Greedy decoding from each row's last logits (shared/engine/generate.ts with greedy rows: sampling, stop strings
   * and streamed text are there). Each new token sits at the row's next position (one past its highest cached
   * position) in the next free slot. Stops a row at a stop id (not included) or after maxTokens.
   */
  async generate(cache: KVCache, lastLogits: Float32Array[], opts: GenerateOptions): Promise<GenerateResult> {
    const B = cache.batch;
    const maxOf = Array.isArray(opts.maxTokens) ? opts.maxTokens : Array<number>(B).fill(opts.maxTokens);
    if (maxOf.length !== B || maxOf.some((m) => !Number.isInteger(m) || m < 0)) {
      throw new EngineInputError(`maxTokens must be a non-negative integer (or one per row), got ${JSON.stringify(opts.maxTokens)}`);
    }
    const stopIds = opts.stopIds ?? this.tokenizer.stopIds;
    const onToken = opts.onToken;
    const rows = await generateAll(
      this,
      cache,
      lastLogits,
      maxOf.map((maxTokens) => ({ maxTokens, stopIds })),
      onToken && ((e) => e.kind === 'token' && onToken(e.row, e.token)),
    );
    return { tokens: rows.map((r) => r.tokens), finish: rows.map((r) => r.finish) };
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
  async checkRope(tol = this.capabilities.kvDtype === 'float16' ? 4e-3 : 1e-3): Promise<void> {
    const n = 8;
    const P = Math.min(1000, this.contextLength - n);
    let seed = 12345;
    const tokens = Array.from({ length: n }, () => {
      seed = (seed * 1103515245 + 12345) % 2147483648;
      return 5 + (seed % Math.max(1, this.config.vocabSize - 5));
    });
    const at0 = await this.compile(tokens, 0);
    let atP: KVBlock;
    // int8 weights (config epic.quantization, tools/model/quantize.py): onnxruntime quantizes each call's activations
    // over the whole tensor, so past layer 0 float noise of 1e-5 between the two positions rounds to different int8
    // steps and grows with depth (SmolLM2-135M shape: 5e-7 at layers 0-1, 0.08 at layer 2, 1.1 at layer 28). Layer 0's
    // keys see the same activations at any position and still test the rotary convention, at the same tolerance.
    const quantized = (this.config.raw.epic as { quantization?: unknown } | undefined)?.quantization !== undefined;
    let layers = quantized ? 1 : this.shape.layers;
    if (this.capabilities.positionIds) atP = await this.compile(tokens, P);
    else {
      // A graph without position_ids places a call's tokens after its past: compute them after P zero slots. Only
      // layer 0's keys are compared (they depend on the token and its position alone, not on what it attends to).
      const cache = new KVCache(this.shape, 1, P + n);
      const zeros = allocBlock(this.shape, P);
      zeros.positions.set(Array.from({ length: P }, (_, i) => i));
      cache.place(0, zeros, zeros.positions, this.rope);
      await this.forward(cache, [{ tokens, positions: Array.from({ length: n }, (_, i) => P + i) }]);
      atP = cache.toBlock(0, P, P + n);
      layers = 1;
    }
    const moved = this.rope.shiftBlock(at0, P);
    let worst = 0;
    for (let l = 0; l < layers; l++) {
      const a = moved.keys[l];
      const b = atP.keys[l];
      // relative to the key's size past 1: float16 KV rounds to ~1e-3 of it
      for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]) / Math.max(1, Math.abs(b[i])));
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
