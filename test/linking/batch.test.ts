import { Engine, argmax } from '../../shared/engine';
import { compileSource, layout, link, linkBatch, LinkInputError, picRow, type LinkInput, type LinkOptions } from '../../shared/linking';
import { EngineInputError } from '../../shared/engine';
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

  test('with 4+ chunks the link is computed in two calls, the first over a shorter past, and equals one call', async () => {
    const V = engine.config.vocabSize;
    const bos = engine.config.bosTokenId;
    const many: LinkInput[] = [
      { prefix: [bos], chunks: Array.from({ length: 8 }, (_, i) => randomTokens(20 + 3 * i, 10 + i, 5, V)), question: randomTokens(5, 30, 5, V) },
      { prefix: [bos], chunks: Array.from({ length: 5 }, (_, i) => randomTokens(31 - 2 * i, 40 + i, 5, V)), question: randomTokens(9, 50, 5, V) },
    ];
    const spy = jest.spyOn(engine, 'forward');
    let batch;
    try {
      batch = await linkBatch(ctx(), many.map((input) => ({ input, options: { mode: 'attnlink', k: 4 }, maxNewTokens: 2 })));
      const calls = spy.mock.calls.filter((c) => c[1].length === 2); // the batch's calls (compiling chunks takes others)
      expect(calls).toHaveLength(2);
      const first = calls[0];
      // The first call: the BOS and the link tokens of chunks 0-3 (row 0) and 0-1 (row 1), over fewer slots than the prompt.
      expect(first[1].map((r) => r.tokens.length)).toEqual([1 + 4 * 4, 1 + 2 * 4]);
      expect(first[2]?.pastSlots).toBeLessThan(batch.cache.usedSlots());
    } finally {
      spy.mockRestore();
    }
    // The same rows in one call.
    const source = compileSource(engine);
    const lays = many.map((m) => layout(m));
    const cache = engine.newCache(many.length, Math.max(...lays.map((l) => l.total + 2)));
    const blocks = await Promise.all(many.map((m) => Promise.all(m.chunks.map((c) => source.chunk(c, { kind: 'plain' })))));
    const rows = many.map((m, b) => picRow(engine, cache, b, m, lays[b], blocks[b], 4));
    const one = await engine.forward(cache, rows);
    for (let b = 0; b < many.length; b++) expect(maxAbsDiff(batch.logits[b], one.logits[b])).toBeLessThan(1e-4);
    for (let l = 0; l < engine.shape.layers; l++) expect(maxAbsDiff(batch.cache.keys[l], cache.keys[l])).toBeLessThan(1e-4);
    batch.cache.release();
    cache.release();
  });

  test('forward refuses a pastSlots that would hide a slot its tokens can see', async () => {
    const cache = engine.newCache(1, 16);
    await engine.forward(cache, [{ tokens: [5, 6, 7, 8], positions: [0, 1, 2, 3] }]);
    await expect(engine.forward(cache, [{ tokens: [9], positions: [4] }], { pastSlots: 2 })).rejects.toThrow(EngineInputError);
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
