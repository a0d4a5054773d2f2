import { Engine, EngineInputError, argmax } from '../../shared/engine';
import { compileSource, layout, link, linkBatch, LinkInputError, picRow, type LinkInput, type LinkOptions } from '../../shared/linking';
import { Scheduler } from '../../shared/serving/scheduler';
import { serveGroup } from '../../shared/serving/group';
import type { ServeRequest } from '../../shared/serving/request';
import { TINY, maxAbsDiff, randomTokens } from '../helpers/model';

describe('cross-request batches (different contexts, one forward call)', () => {
  let engine: Engine;
  let inputs: LinkInput[];
  const ctx = () => ({ engine, source: compileSource(engine) });
  beforeAll(async () => {
    engine = await Engine.load(TINY);
    const V = engine.config.vocabSize;
    const bos = engine.config.bosTokenId;
    const a = randomTokens(40, 1, 5, V);
    const b = randomTokens(25, 2, 5, V);
    const c = randomTokens(33, 3, 5, V);
    inputs = [
      { prefix: [bos], chunks: [a, b, c], question: randomTokens(7, 4, 5, V) },
      { prefix: [bos], chunks: [c, a], question: randomTokens(3, 5, 5, V) },
      { prefix: [bos], chunks: [b], question: randomTokens(11, 6, 5, V) },
    ];
  });

  test('each row of linkBatch equals linking that request alone (mixed modes and k)', async () => {
    const opts: LinkOptions[] = [{ mode: 'attnlink', k: 16 }, { mode: 'naive' }, { mode: 'attnlink0' }];
    const batch = await linkBatch(ctx(), inputs.map((input, i) => ({ input, options: opts[i], maxNewTokens: 4 })));
    for (let i = 0; i < inputs.length; i++) {
      const alone = await link(ctx(), inputs[i], opts[i], 4);
      expect(maxAbsDiff(batch.logits[i], alone.logits)).toBeLessThan(1e-4);
      expect(batch.stats[i].computedTokens).toBe(alone.stats.computedTokens);
      expect(batch.stats[i].promptTokens).toBe(alone.stats.promptTokens);
    }
  });

  // Each case: the requests, the options, and how many tokens each row computes in the first of two calls (null: one call).
  const chunksOf = (n: number, base: number, len: (i: number) => number) => Array.from({ length: n }, (_, i) => randomTokens(len(i), base + i, 5, engine.config.vocabSize));
  const twoCallCases: [string, () => LinkInput[], LinkOptions, number[] | null][] = [
    ['attnlink-4, 8 and 5 chunks', () => [
      { prefix: [1], chunks: chunksOf(8, 10, (i) => 20 + 3 * i), question: randomTokens(5, 30, 5, engine.config.vocabSize) },
      { prefix: [1], chunks: chunksOf(5, 40, (i) => 31 - 2 * i), question: randomTokens(9, 50, 5, engine.config.vocabSize) },
    ], { mode: 'attnlink', k: 4 }, [1 + 4 * 4, 1 + 2 * 4]],
    ['attnlink-8, a 2-token prefix, and a 2-chunk row with nothing in the first call', () => [
      { prefix: [1, 7], chunks: chunksOf(6, 60, (i) => 25 + i), question: randomTokens(4, 70, 5, engine.config.vocabSize) },
      { prefix: [1], chunks: chunksOf(2, 80, () => 30), question: randomTokens(6, 90, 5, engine.config.vocabSize) },
    ], { mode: 'attnlink', k: 8 }, [2 + 3 * 8, 0]],
    ['attnlink with k past the chunks\' length (every chunk recomputed, nothing cached to skip): one call', () => [
      { prefix: [1], chunks: chunksOf(4, 100, (i) => 12 + i), question: randomTokens(3, 110, 5, engine.config.vocabSize) },
    ], { mode: 'attnlink', k: 40 }, null],
    ['naive (no link tokens to move): one call', () => [
      { prefix: [1], chunks: chunksOf(8, 120, () => 25), question: randomTokens(5, 130, 5, engine.config.vocabSize) },
    ], { mode: 'naive' }, null],
  ];

  test.each(twoCallCases)('link in two calls (first over a shorter past) equals one call: %s', async (_name, make, options, firstCall) => {
    const many = make();
    const B = many.length;
    const spy = jest.spyOn(engine, 'forward');
    const source = compileSource(engine);
    const blocks = await Promise.all(many.map((m) => Promise.all(m.chunks.map((c) => source.chunk(c, { kind: 'plain' })))));
    const batch = await linkBatch({ engine, source }, many.map((input) => ({ input, options, maxNewTokens: 2 })));
    const calls = spy.mock.calls.filter((c) => c[1].some((r) => r.slots)); // the link's calls: compiling a chunk passes no slots
    spy.mockRestore();
    // The same rows in one call.
    const lays = many.map((m) => layout(m));
    const cache = engine.newCache(B, Math.max(...lays.map((l) => l.total + 2)));
    try {
      if (firstCall) {
        expect(calls).toHaveLength(2);
        expect(calls[0][1].map((r) => r.tokens.length)).toEqual(firstCall);
        expect(calls[0][2]?.pastSlots).toBeLessThan(batch.cache.usedSlots());
      } else {
        expect(calls).toHaveLength(1);
      }
      const rows = many.map((m, b) => picRow(engine, cache, b, m, lays[b], blocks[b], options.mode === 'naive' ? 0 : options.k!));
      const one = await engine.forward(cache, rows);
      for (let b = 0; b < B; b++) {
        expect(maxAbsDiff(batch.logits[b], one.logits[b])).toBeLessThan(1e-4);
        // Every row's used slots hold the same keys and values (what decoding attends over next).
        const used = cache.length[b];
        expect(batch.cache.length[b]).toBe(used);
        for (let l = 0; l < engine.shape.layers; l++) {
          for (let h = 0; h < engine.shape.kvHeads; h++) {
            const o = cache.offset(b, h, 0);
            const n = used * engine.shape.headDim;
            expect(maxAbsDiff(batch.cache.keys[l].subarray(o, o + n), cache.keys[l].subarray(o, o + n))).toBeLessThan(1e-4);
            expect(maxAbsDiff(batch.cache.values[l].subarray(o, o + n), cache.values[l].subarray(o, o + n))).toBeLessThan(1e-4);
          }
        }
      }
    } finally {
      batch.cache.release();
      cache.release();
    }
  });

  test('forward refuses a pastSlots that would hide a slot its tokens can see', async () => {
    const cache = engine.newCache(1, 16);
    await engine.forward(cache, [{ tokens: [5, 6, 7, 8], positions: [0, 1, 2, 3] }]);
    await expect(engine.forward(cache, [{ tokens: [9], positions: [4] }], { pastSlots: 3 })).rejects.toThrow(EngineInputError); // slot 3 (position 3) is visible
    expect(cache.length[0]).toBe(4); // refused before any slot was taken
    await engine.forward(cache, [{ tokens: [9], positions: [4] }], { pastSlots: 4 });
    cache.release();
  });

  test('modes that cannot share a forward call are refused by linkBatch', async () => {
    await expect(linkBatch(ctx(), [{ input: inputs[0], options: { mode: 'full' }, maxNewTokens: 1 }])).rejects.toThrow(LinkInputError);
    await expect(linkBatch(ctx(), [])).rejects.toThrow(LinkInputError);
  });

  test('the scheduler batches lone requests and every answer equals serving it alone', async () => {
    const reqs: ServeRequest[] = inputs.map((inp, i) => ({
      id: `r${i}`,
      tenantSalt: '',
      chunks: inp.chunks,
      question: inp.question,
      maxTokens: 5 + i,
      mode: { mode: 'attnlink', k: 4 },
      ignoreEos: true,
    }));
    const sizes: number[] = [];
    const sched = new Scheduler(() => ctx(), { onGroup: (n) => sizes.push(n) });
    const got = await Promise.all(reqs.map((r) => sched.submit(r)));
    expect(sizes).toEqual([3]); // one batch of three different contexts
    for (let i = 0; i < reqs.length; i++) {
      const [alone] = await serveGroup(ctx(), [reqs[i]]);
      expect(got[i].tokens).toEqual(alone.tokens);
      expect(got[i].tokens).toHaveLength(5 + i);
      expect(got[i].batchSize).toBe(3);
      expect(got[i].computedTokens).toBe(alone.computedTokens);
      expect(got[i].cachedTokens).toBe(alone.cachedTokens);
    }
    // The first token is the argmax of the linked logits, as for link alone.
    const l = await link(ctx(), inputs[0], { mode: 'attnlink', k: 4 }, 5);
    expect(got[0].tokens[0]).toBe(argmax(l.logits));
  });

  test('maxBatch 1 turns batching off', async () => {
    const sizes: number[] = [];
    const sched = new Scheduler(() => ctx(), { maxBatch: 1, onGroup: (n) => sizes.push(n) });
    await Promise.all(
      inputs.map((inp, i) => sched.submit({ id: `s${i}`, tenantSalt: '', chunks: inp.chunks, question: inp.question, maxTokens: 2, mode: { mode: 'naive' } })),
    );
    expect(sizes).toEqual([1, 1, 1]);
  });

  test('maxBatchTokens cuts batches shortest first, so a long request does not pad short ones', async () => {
    const sizes: number[] = [];
    const sched = new Scheduler(() => ctx(), { maxBatchTokens: 160, onGroup: (n) => sizes.push(n) });
    // prompt + max tokens: 108, 79, 39 slots. Shortest first: 2 × 79 = 158 fits, 3 × 108 does not.
    const got = await Promise.all(
      inputs.map((inp, i) => sched.submit({ id: `t${i}`, tenantSalt: '', chunks: inp.chunks, question: inp.question, maxTokens: 2, mode: { mode: 'naive' }, ignoreEos: true })),
    );
    expect(sizes).toEqual([2, 1]);
    expect(got.map((r) => r.batchSize)).toEqual([1, 2, 2]);
  });

  test('a batch that fails mid-stream is retried one by one, and streams every token exactly once', async () => {
    const sched = new Scheduler(() => ctx());
    const streamed: number[][] = [[], []];
    let thrown = false;
    const reqs = inputs.slice(0, 2).map((inp, i) => ({ id: `f${i}`, tenantSalt: '', chunks: inp.chunks, question: inp.question, maxTokens: 5, mode: { mode: 'naive' as const }, ignoreEos: true }));
    const got = await Promise.all(
      reqs.map((r, i) =>
        sched.submit(r, (t) => {
          streamed[i].push(t);
          // The first request's consumer fails once, after its second token: the whole batch fails.
          if (i === 0 && streamed[0].length === 2 && !thrown) {
            thrown = true;
            throw new Error('consumer failed');
          }
        }),
      ),
    );
    expect(thrown).toBe(true);
    for (let i = 0; i < 2; i++) {
      expect(got[i].batchSize).toBe(1); // served alone on the retry
      expect(streamed[i]).toEqual(got[i].tokens);
    }
  });
});
