import { Engine, LayeredModel, sizeClass, type KVCache } from '../../shared/engine';
import { fixture } from '../helpers/fixtures';
import { TINY, maxAbsDiff, randomTokens, range } from '../helpers/model';

/**
 * Chunked prefill (EngineOptions.callBudget) and logits selection (the primitive graph's logits_index): a long
 * forward run as several graph calls must compute what one call computes, on every graph kind.
 */

function kvDiff(a: KVCache, b: KVCache, row: number, n: number): number {
  const ba = a.toBlock(row, 0, n);
  const bb = b.toBlock(row, 0, n);
  let worst = 0;
  for (let l = 0; l < ba.shape.layers; l++) worst = Math.max(worst, maxAbsDiff(ba.keys[l], bb.keys[l]), maxAbsDiff(ba.values[l], bb.values[l]));
  return worst;
}

/** A budget that cuts a call of `tokens` tokens over `capacity` slots into pieces of at most ~tokens/4. */
function smallBudget(engine: Engine, capacity: number, tokens: number): number {
  const piece = Math.ceil(tokens / 4);
  return engine.config.heads * piece * (capacity + piece);
}

// tiny-random (exported before 2026-12-05: no logits_index), a fresh export (logits_index), an Optimum-style stock graph, a
// GroupQueryAttention graph (no position_ids)
const MODELS: [string, () => string, 'primitive' | 'stock'][] = [
  ['tiny-random primitive (no logits_index)', () => TINY, 'primitive'],
  ['llama3-style primitive (logits_index)', () => fixture('llama3-style'), 'primitive'],
  ['llama3-style stock', () => fixture('llama3-style'), 'stock'],
  ['llama3-style-gqa (GroupQueryAttention op)', () => fixture('llama3-style-gqa'), 'stock'],
];

describe.each(MODELS)('chunked forward: %s', (_name, dir, graph) => {
  let whole: Engine;
  let chunked: Engine;
  const N = 300;
  const CAP = N + 4;
  beforeAll(async () => {
    whole = await Engine.load(dir(), { graph, callBudget: 2 ** 40 });
    chunked = await Engine.load(dir(), { graph, callBudget: smallBudget(whole, CAP, N) });
  });

  test('one long row: the same KV and last-token logits as one call, in several calls', async () => {
    const tokens = [whole.config.bosTokenId, ...randomTokens(N - 1, 3, 5, whole.config.vocabSize)];
    const a = whole.newCache(1, CAP);
    const b = chunked.newCache(1, CAP);
    let calls = 0;
    const run = chunked['runner'].run.bind(chunked['runner']);
    chunked['runner'].run = (x) => (calls++, run(x));
    try {
      const ra = await whole.forward(a, [{ tokens, positions: range(0, N) }]);
      const rb = await chunked.forward(b, [{ tokens, positions: range(0, N) }]);
      expect(calls).toBeGreaterThanOrEqual(4);
      expect(rb.logits[0].length).toBe(whole.config.vocabSize);
      expect(maxAbsDiff(ra.logits[0], rb.logits[0])).toBeLessThan(1e-4);
      expect(kvDiff(a, b, 0, N)).toBeLessThan(1e-4);
      expect(b.length[0]).toBe(N);
      // and the cache decodes on alike
      const da = await whole.forward(a, [{ tokens: [7], positions: [N] }]);
      const db = await chunked.forward(b, [{ tokens: [7], positions: [N] }]);
      expect(maxAbsDiff(da.logits[0], db.logits[0])).toBeLessThan(1e-4);
    } finally {
      chunked['runner'].run = run;
      a.release();
      b.release();
    }
  });

  // Every token's logits are joined by the engine, whatever the graph; the primitive graphs (with and without
  // logits_index) cover it, and the stock graphs' all-logits calls at a 128k vocabulary cost ~10 s each here.
  if (graph === 'primitive') test("every token's logits ('all') match, over a cached past", async () => {
    // 100 tokens: with every token's logits in the budget (vocab floats each), the calls are of the smallest size
    const past = [whole.config.bosTokenId, ...randomTokens(19, 4, 5, whole.config.vocabSize)];
    const more = randomTokens(100, 5, 5, whole.config.vocabSize);
    const n = 20 + more.length;
    let calls = 0;
    const run = chunked['runner'].run.bind(chunked['runner']);
    chunked['runner'].run = (x) => (calls++, run(x));
    const V = whole.config.vocabSize;
    const a = whole.newCache(1, CAP);
    const b = chunked.newCache(1, CAP);
    try {
      for (const [e, c] of [[whole, a], [chunked, b]] as const) await e.forward(c, [{ tokens: past, positions: range(0, 20) }]);
      const ra = await whole.forward(a, [{ tokens: more, positions: range(20, more.length) }], { logits: 'all' });
      const rb = await chunked.forward(b, [{ tokens: more, positions: range(20, more.length) }], { logits: 'all' });
      expect(calls).toBeGreaterThanOrEqual(1 + 2);
      expect(rb.logits[0].length).toBe(more.length * V);
      expect(maxAbsDiff(ra.logits[0], rb.logits[0])).toBeLessThan(1e-4);
      expect(kvDiff(a, b, 0, n)).toBeLessThan(1e-4);
    } finally {
      chunked['runner'].run = run;
      a.release();
      b.release();
    }
  });

  test('rows of different lengths (one ends in an earlier call, one row empty)', async () => {
    const V = whole.config.vocabSize;
    const rows = [N - 10, 90, 0].map((n, i) => (n ? [whole.config.bosTokenId, ...randomTokens(n - 1, 10 + i, 5, V)] : []));
    const input = rows.map((t) => ({ tokens: t, positions: range(0, t.length) }));
    const a = whole.newCache(3, CAP);
    const b = chunked.newCache(3, CAP);
    try {
      const ra = await whole.forward(a, input);
      const rb = await chunked.forward(b, input);
      for (const r of [0, 1]) {
        expect(maxAbsDiff(ra.logits[r], rb.logits[r])).toBeLessThan(1e-4);
        expect(kvDiff(a, b, r, rows[r].length)).toBeLessThan(1e-4);
      }
      expect(rb.logits[2].length).toBe(0);
      expect(b.length[2]).toBe(0);
    } finally {
      a.release();
      b.release();
    }
  });
});

describe('what is not cut', () => {
  test('a call with positions out of order runs as one call (cutting it would hide later-computed tokens)', async () => {
    const e = await Engine.load(TINY, { callBudget: 1 });
    const cache = e.newCache(1, 200);
    let calls = 0;
    const run = e['runner'].run.bind(e['runner']);
    e['runner'].run = (x) => (calls++, run(x));
    try {
      const pos = [...range(100, 100), ...range(0, 100)];
      await e.forward(cache, [{ tokens: randomTokens(200, 8, 5, e.config.vocabSize), positions: pos }]);
      expect(calls).toBe(1);
    } finally {
      cache.release();
    }
  });

  test('a budget must be positive', async () => {
    await expect(Engine.load(TINY, { callBudget: 0 })).rejects.toThrow(/callBudget must be positive/);
  });
});

describe('logits_index (graphs exported since 2026-12-05)', () => {
  test("the new export selects logits; tiny-random's generation (before 2026-12-05) does not; last and all agree", async () => {
    const fresh = await Engine.load(fixture('llama3-style'));
    const old = await Engine.load(TINY);
    expect(fresh.capabilities.logitsIndex).toBe(true);
    expect(old.capabilities.logitsIndex).toBe(false);
    const V = fresh.config.vocabSize;
    // two rows of different lengths: each row's last real token is selected
    const rows = [40, 13].map((n, i) => [fresh.config.bosTokenId, ...randomTokens(n - 1, 20 + i, 5, V)]);
    const input = rows.map((t) => ({ tokens: t, positions: range(0, t.length) }));
    const c1 = fresh.newCache(2, 64);
    const c2 = fresh.newCache(2, 64);
    try {
      const last = await fresh.forward(c1, input);
      const all = await fresh.forward(c2, input, { logits: 'all' });
      for (const r of [0, 1]) {
        expect(last.logits[r].length).toBe(V);
        expect(maxAbsDiff(last.logits[r], all.logits[r].subarray((rows[r].length - 1) * V))).toBeLessThan(1e-5);
      }
    } finally {
      c1.release();
      c2.release();
    }
  });
});

test('buffer pool size classes: quarter octaves, multiples of 1,024, never short', () => {
  for (let f = 1; f < 5_000_000; f += 4999) {
    const s = sizeClass(f);
    expect(s).toBeGreaterThanOrEqual(f);
    expect(s % 1024).toBe(0);
    expect(s).toBeLessThanOrEqual(Math.ceil(f * 2 ** 0.25) + 1024);
  }
  expect(sizeClass(1024)).toBe(1024);
  expect(sizeClass(2 ** 20)).toBe(2 ** 20);
});

test("CacheBlend's all-token layer (LayeredModel.causal) cut into calls computes what one call does", async () => {
  const e = await Engine.load(fixture('llama3-style'));
  const layered = await LayeredModel.load(e.config, e.sessionOptions);
  const N = 300;
  const tokens = [e.config.bosTokenId, ...randomTokens(N - 1, 40, 5, e.config.vocabSize)];
  const hidden = await layered.embed(tokens);
  const one = await layered.causal(0, hidden, range(0, N), 2 ** 40);
  const cut = await layered.causal(0, hidden, range(0, N), e.config.heads * 80 * N);
  expect(maxAbsDiff(one.hidden, cut.hidden)).toBeLessThan(1e-4);
  expect(maxAbsDiff(one.key, cut.key)).toBeLessThan(1e-5);
  expect(maxAbsDiff(one.value, cut.value)).toBeLessThan(1e-5);
  expect(one.key.length).toBe(e.shape.kvHeads * N * e.shape.headDim);
});
