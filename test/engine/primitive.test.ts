import { Engine, NEG_INF, buildBias, type KVBlock, type KVCache, type RowInput } from '../../shared/engine';
import { TINY, maxAbsDiff, randomTokens, range } from '../helpers/model';

function expectBlocksClose(a: KVBlock, b: KVBlock, tol: number) {
  expect(a.length).toBe(b.length);
  for (let l = 0; l < a.shape.layers; l++) {
    expect(maxAbsDiff(a.keys[l], b.keys[l])).toBeLessThan(tol);
    expect(maxAbsDiff(a.values[l], b.values[l])).toBeLessThan(tol);
  }
}

describe.each(['primitive', 'stock'] as const)('engine primitive (%s graph)', (graph) => {
  let engine: Engine;
  beforeAll(async () => {
    engine = await Engine.load(TINY, { graph });
  });
  const V = () => engine.config.vocabSize;

  test('prefill of A;B equals A then B over A past (logits and KV)', async () => {
    const A = [engine.config.bosTokenId, ...randomTokens(40, 1, 5, V())];
    const Bt = randomTokens(25, 2, 5, V());
    const n = A.length + Bt.length;

    const whole = engine.newCache(1, n);
    const all = await engine.forward(whole, [{ tokens: [...A, ...Bt], positions: range(0, n) }], { logits: 'all' });

    const split = engine.newCache(1, n);
    await engine.forward(split, [{ tokens: A, positions: range(0, A.length) }]);
    const tail = await engine.forward(split, [{ tokens: Bt, positions: range(A.length, Bt.length) }], { logits: 'all' });

    const vocab = V();
    expect(maxAbsDiff(tail.logits[0], all.logits[0].subarray(A.length * vocab))).toBeLessThan(1e-4);
    expectBlocksClose(split.toBlock(0, 0, n), whole.toBlock(0, 0, n), 1e-4);
  });

  test('a long call after a short past in a large cache (its past passed compacted) equals one prefill', async () => {
    // 3 rows, 40 cached tokens each, then 150 more, in a cache of 1,000 slots: the past handed to the graph is the
    // first 40 slots (copied), not all 1,000 (the primitive graph's compaction; the stock graph always packs them).
    const rowsA = [1, 2, 3].map((seed) => [engine.config.bosTokenId, ...randomTokens(39, 20 + seed, 5, V())]);
    const rowsB = [1, 2, 3].map((seed) => randomTokens(150, 30 + seed, 5, V()));
    const whole = engine.newCache(3, 190);
    const all = await engine.forward(whole, rowsA.map((a, i) => ({ tokens: [...a, ...rowsB[i]], positions: range(0, 190) })));
    const split = engine.newCache(3, 1000);
    await engine.forward(split, rowsA.map((a) => ({ tokens: a, positions: range(0, 40) })));
    const tail = await engine.forward(split, rowsB.map((bt) => ({ tokens: bt, positions: range(40, 150) })));
    for (let i = 0; i < 3; i++) {
      expect(maxAbsDiff(tail.logits[i], all.logits[i])).toBeLessThan(1e-4);
      expectBlocksClose(split.toBlock(i, 0, 190), whole.toBlock(i, 0, 190), 1e-4);
    }
    whole.release();
    split.release();
  });

  test('a chunk compiled alone at 0 and rotated to P equals it compiled alone at P (every layer)', async () => {
    const chunk = randomTokens(32, 3, 5, V());
    const at0 = await engine.compile(chunk, 0);
    for (const P of [1, 37, 512, 2000]) {
      const atP = await engine.compile(chunk, P);
      const moved = engine.rope.shiftBlock(at0, P);
      expect(Array.from(moved.positions)).toEqual(range(P, chunk.length));
      expectBlocksClose(moved, atP, 1e-4);
    }
  });

  test('a placed chunk (rotated on the way into the cache) gives the same next-token logits as computing it there', async () => {
    const prefix = [engine.config.bosTokenId, ...randomTokens(10, 4, 5, V())];
    const chunk = randomTokens(12, 5, 5, V());
    const q = randomTokens(3, 6, 5, V());
    // Reference: prefix computed, then the chunk computed alone at its offset (no view of the prefix), then q.
    const P = prefix.length;
    const alone = await engine.compile(chunk, P);
    const c1 = engine.newCache(1, P + chunk.length + q.length);
    await engine.forward(c1, [{ tokens: prefix, positions: range(0, P) }]);
    c1.place(0, alone, range(P, chunk.length), engine.rope);
    const r1 = await engine.forward(c1, [{ tokens: q, positions: range(P + chunk.length, q.length) }]);
    // Same, but the chunk compiled at 0 and placed at P by re-rotation.
    const at0 = await engine.compile(chunk, 0);
    const c2 = engine.newCache(1, P + chunk.length + q.length);
    await engine.forward(c2, [{ tokens: prefix, positions: range(0, P) }]);
    c2.place(0, at0, range(P, chunk.length), engine.rope);
    const r2 = await engine.forward(c2, [{ tokens: q, positions: range(P + chunk.length, q.length) }]);
    expect(maxAbsDiff(r1.logits[0], r2.logits[0])).toBeLessThan(1e-4);
  });

  test('warm-up runs the serving shapes and changes nothing: a prompt answers the same before and after', async () => {
    const prompt = [engine.config.bosTokenId, ...randomTokens(60, 11, 5, V())];
    const run = async () => {
      const c = engine.newCache(2, prompt.length + 4);
      const { logits } = await engine.forward(c, [0, 1].map(() => ({ tokens: prompt, positions: range(0, prompt.length) })));
      const gen = await engine.generate(c, logits, { maxTokens: 4, stopIds: [] });
      c.release();
      return { logits: logits[0], tokens: gen.tokens };
    };
    const before = await run();
    // At run's own shape: its batch cache goes back to the pool last, so the next run gets those buffers, uncleared,
    // holding the warm-up's KV in every slot.
    const ms = await engine.warmup({ rows: 2, capacity: prompt.length + 4, tokens: 40 });
    expect(ms).toBeGreaterThan(0);
    const reused = engine.newCache(2, prompt.length + 4);
    expect(reused.keys[0].some((x) => x !== 0)).toBe(true);
    reused.release();
    const after = await run();
    expect(maxAbsDiff(after.logits, before.logits)).toBe(0);
    expect(after.tokens).toEqual(before.tokens);
  });

  test('a padded batch equals the same prompts run one by one', async () => {
    const prompts = [
      [engine.config.bosTokenId, ...randomTokens(30, 7, 5, V())],
      [engine.config.bosTokenId, ...randomTokens(11, 8, 5, V())],
      [engine.config.bosTokenId, ...randomTokens(19, 9, 5, V())],
    ];
    const batch = await engine.prefill(prompts, 6);
    const gen = await engine.generate(batch.cache, batch.logits, { maxTokens: 6, stopIds: [] });
    for (let i = 0; i < prompts.length; i++) {
      const one = await engine.prefill([prompts[i]], 6);
      expect(maxAbsDiff(one.logits[0], batch.logits[i])).toBeLessThan(1e-4);
      const g1 = await engine.generate(one.cache, one.logits, { maxTokens: 6, stopIds: [] });
      expect(g1.tokens[0]).toEqual(gen.tokens[i]);
    }
  });

  test('greedy decode over the cache equals re-running the whole sequence each step', async () => {
    const prompt = [engine.config.bosTokenId, ...randomTokens(20, 10, 5, V())];
    const { cache, logits } = await engine.prefill([prompt], 8);
    const out = await engine.generate(cache, logits, { maxTokens: 8, stopIds: [] });
    expect(out.tokens[0]).toHaveLength(8);
    const seq = [...prompt];
    for (let i = 0; i < 8; i++) {
      const full = await engine.prefill([seq]);
      let best = 0;
      for (let v = 1; v < full.logits[0].length; v++) if (full.logits[0][v] > full.logits[0][best]) best = v;
      expect(best).toBe(out.tokens[0][i]);
      seq.push(best);
    }
  });
});

describe('decode over a preallocated cache', () => {
  test('each step returns and writes only the new token KV (the cache is never copied)', async () => {
    const engine = await Engine.load(TINY, { graph: 'primitive' });
    const { layers, kvHeads, headDim } = engine.shape;
    const prompt = [engine.config.bosTokenId, ...randomTokens(500, 11, 5, engine.config.vocabSize)];
    const { cache } = await engine.prefill([prompt], 16);
    const perToken = 2 * layers * kvHeads * headDim;
    const keysBuffer = cache.keys[0];
    let pos = prompt.length;
    for (let i = 0; i < 10; i++) {
      const before = cache.floatsWritten;
      const r = await engine.forward(cache, [{ tokens: [7], positions: [pos++] }]);
      // What the graph hands back is the one new token's KV, not the cache concatenated with it …
      expect(r.kvFloatsOut).toBe(perToken);
      // … and what the engine writes into the cache is that token alone.
      expect(cache.floatsWritten - before).toBe(perToken);
    }
    // The same buffers serve every step (preallocated, never reallocated).
    expect(cache.keys[0]).toBe(keysBuffer);
    // The stock Optimum graph, by contrast, returns the whole cache every step.
    const stock = await Engine.load(TINY, { graph: 'stock', selfCheck: false });
    const s = await stock.prefill([prompt], 1);
    const r = await stock.forward(s.cache, [{ tokens: [7], positions: [prompt.length] }]);
    expect(r.kvFloatsOut).toBe(perToken * (prompt.length + 1));
  });
});

describe('attention bias', () => {
  /** The rule, written plainly: query (b, s) sees valid slot j when its position <= the query's, and new token k when
   *  k's position <= the query's; a padding query sees only itself. */
  function reference(cache: KVCache, rows: RowInput[], S: number): Float32Array {
    const B = cache.batch;
    const C = cache.capacity;
    const T = C + S;
    const bias = new Float32Array(B * S * T).fill(NEG_INF);
    for (let b = 0; b < B; b++) {
      const r = rows[b];
      for (let s = 0; s < S; s++) {
        const off = (b * S + s) * T;
        if (s >= r.tokens.length) {
          bias[off + C + s] = 0;
          continue;
        }
        const q = r.positions[s];
        for (let j = 0; j < C; j++) if (cache.slotValid[b * C + j] && cache.slotPos[b * C + j] <= q) bias[off + j] = 0;
        for (let k = 0; k < r.tokens.length; k++) if (r.positions[k] <= q) bias[off + C + k] = 0;
      }
    }
    return bias;
  }

  test('equals the plain rule for ordered caches with stale slots, unordered caches and padded rows', async () => {
    const engine = await Engine.load(TINY);
    const V = engine.config.vocabSize;
    const cache = engine.newCache(3, 64);
    // Row 0: two chunks placed in prompt order, the first 3 slots of the second marked stale (AttnLink's one pass).
    const a = await engine.compile(randomTokens(10, 1, 5, V), 0);
    const c = await engine.compile(randomTokens(12, 2, 5, V), 0);
    cache.place(0, a, range(1, 10), engine.rope);
    const first = cache.place(0, c, range(11, 12), engine.rope);
    for (let t = 0; t < 3; t++) cache.rowSlots(0).valid[first + t] = 0;
    // Row 1: the same chunks placed out of position order (positions decrease with the slot index).
    cache.place(1, c, range(11, 12), engine.rope);
    cache.place(1, a, range(1, 10), engine.rope);
    // Row 2: empty cache, padded query row.
    const rows: RowInput[] = [
      { tokens: [5, 6, 7, 8, 9], positions: [11, 12, 13, 23, 24] },
      { tokens: [5, 6, 7], positions: [12, 5, 30] },
      { tokens: [9], positions: [0] },
    ];
    const S = 5;
    expect(maxAbsDiff(buildBias(cache, rows, S, cache.capacity), reference(cache, rows, S))).toBe(0);
    const pooled = engine.pool.acquire(3 * S * (cache.capacity + S), NEG_INF);
    expect(maxAbsDiff(buildBias(cache, rows, S, cache.capacity, cache.slotValid, pooled), reference(cache, rows, S))).toBe(0);
  });
});
