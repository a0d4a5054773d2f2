import { Engine, argmax } from '../../shared/engine';
import { compileSource, link, LinkInputError, type BlockStore, type LinkInput } from '../../shared/linking';
import { MapStore, TINY, maxAbsDiff, randomTokens } from '../helpers/model';

describe('link modes', () => {
  let engine: Engine;
  let stock: Engine;
  let input: LinkInput;
  beforeAll(async () => {
    engine = await Engine.load(TINY);
    stock = await Engine.load(TINY, { graph: 'stock', selfCheck: false });
    const V = engine.config.vocabSize;
    input = {
      prefix: [engine.config.bosTokenId],
      chunks: [randomTokens(40, 1, 5, V), randomTokens(25, 2, 5, V), randomTokens(33, 3, 5, V)],
      question: randomTokens(7, 4, 5, V),
    };
  });
  const ctx = (e: Engine, prefixStore?: BlockStore) => ({ engine: e, source: compileSource(e), prefixStore });

  test('full equals a plain prefill', async () => {
    const r = await link(ctx(engine), input, { mode: 'full' });
    const tokens = [...input.prefix, ...input.chunks.flat(), ...input.question];
    const p = await engine.prefill([tokens]);
    expect(maxAbsDiff(r.logits, p.logits[0])).toBe(0);
    expect(r.stats.computedFraction).toBe(1);
  });

  test.each([0, 1, 4, 16])('attnlink-%i: one-pass and chunk-by-chunk paths agree within 1e-4 (both graphs)', async (k) => {
    const one = await link(ctx(engine), input, { mode: 'attnlink', k, path: 'one-pass' });
    const seq = await link(ctx(engine), input, { mode: 'attnlink', k, path: 'sequential' });
    const st = await link(ctx(stock), input, { mode: 'attnlink', k });
    expect(maxAbsDiff(one.logits, seq.logits)).toBeLessThan(1e-4);
    expect(maxAbsDiff(one.logits, st.logits)).toBeLessThan(1e-4);
    // Every KV slot agrees too.
    const n = one.stats.promptTokens;
    const a = one.cache.toBlock(0, 0, n);
    const b = seq.cache.toBlock(0, 0, n);
    for (let l = 0; l < engine.shape.layers; l++) expect(maxAbsDiff(a.keys[l], b.keys[l])).toBeLessThan(1e-4);
    const expected = 1 + input.chunks.reduce((s, c) => s + Math.min(k, c.length), 0) + input.question.length;
    expect(one.stats.computedTokens).toBe(expected);
  });

  test('attnlink with k >= every chunk length is exactly full', async () => {
    const full = await link(ctx(engine), input, { mode: 'full' });
    const all = await link(ctx(engine), input, { mode: 'attnlink', k: 1000 });
    expect(maxAbsDiff(full.logits, all.logits)).toBeLessThan(1e-4);
  });

  test('naive equals attnlink-0, differs from full; attnlink0 uses sink-compiled chunks', async () => {
    const naive = await link(ctx(engine), input, { mode: 'naive' });
    const k0 = await link(ctx(engine), input, { mode: 'attnlink', k: 0 });
    const full = await link(ctx(engine), input, { mode: 'full' });
    const lego = await link(ctx(engine), input, { mode: 'attnlink0' });
    expect(maxAbsDiff(naive.logits, k0.logits)).toBe(0);
    expect(maxAbsDiff(naive.logits, full.logits)).toBeGreaterThan(1e-3);
    expect(maxAbsDiff(lego.logits, naive.logits)).toBeGreaterThan(1e-4);
    expect(lego.stats.computedTokens).toBe(1 + input.question.length);
  });

  test('prefix reproduces full exactly when the prefix matches, and reuses nothing when the first chunk differs', async () => {
    const store = new MapStore();
    const full = await link(ctx(engine), input, { mode: 'full' });
    const cold = await link(ctx(engine, store), input, { mode: 'prefix' });
    expect(cold.stats.reusedTokens).toBe(0);
    await cold.after();
    const warm = await link(ctx(engine, store), input, { mode: 'prefix' });
    const total = warm.stats.promptTokens;
    expect(warm.stats.reusedTokens).toBe(Math.floor((total - 1) / 16) * 16);
    expect(maxAbsDiff(warm.logits, full.logits)).toBeLessThan(1e-4);
    expect(argmax(warm.logits)).toBe(argmax(full.logits));
    // Same chunks, other order: the first block differs, so nothing is reused.
    const swapped = { ...input, chunks: [input.chunks[1], input.chunks[0], input.chunks[2]] };
    const miss = await link(ctx(engine, store), swapped, { mode: 'prefix' });
    expect(miss.stats.reusedTokens).toBe(0);
    const fullSwapped = await link(ctx(engine), swapped, { mode: 'full' });
    expect(maxAbsDiff(miss.logits, fullSwapped.logits)).toBe(0);
  });

  test('cacheblend: r = 1 recomputes everything and equals full; smaller r computes less', async () => {
    const full = await link(ctx(engine), input, { mode: 'full' });
    const all = await link(ctx(engine), input, { mode: 'cacheblend', r: 1 });
    expect(maxAbsDiff(all.logits, full.logits)).toBeLessThan(1e-4);
    const some = await link(ctx(engine), input, { mode: 'cacheblend', r: 0.15 }, 3);
    expect(some.stats.computedFraction).toBeLessThan(0.7);
    expect(some.stats.mode).toBe('cacheblend-15');
    // Decoding continues over the blended cache.
    const g = await engine.generate(some.cache, [some.logits], { maxTokens: 3, stopIds: [] });
    expect(g.tokens[0]).toHaveLength(3);
  });

  test('decode after linking continues from the right position', async () => {
    const full = await link(ctx(engine), input, { mode: 'full' }, 5);
    const al = await link(ctx(engine), input, { mode: 'attnlink', k: 1000 }, 5);
    const a = await engine.generate(full.cache, [full.logits], { maxTokens: 5, stopIds: [] });
    const b = await engine.generate(al.cache, [al.logits], { maxTokens: 5, stopIds: [] });
    expect(b.tokens).toEqual(a.tokens);
  });

  test('bad input gets a clear error', async () => {
    const c = ctx(engine);
    await expect(link(c, { ...input, chunks: [] }, { mode: 'naive' })).rejects.toThrow('at least one chunk');
    await expect(link(c, input, { mode: 'bogus' as never })).rejects.toThrow(/unknown mode 'bogus'/);
    await expect(link(c, input, { mode: 'attnlink', k: -1 })).rejects.toThrow(/k must be an integer >= 0/);
    await expect(link(c, input, { mode: 'cacheblend', r: 0 })).rejects.toThrow(/r must be in \[0.0001, 1\]/);
    await expect(link(c, input, { mode: 'cacheblend', r: 1.5 })).rejects.toThrow(LinkInputError);
    const long = { ...input, chunks: [...input.chunks, Array(5000).fill(7)] };
    await expect(link(c, long, { mode: 'naive' })).rejects.toThrow(/chunk 3 ends past the context/);
    await expect(link(c, input, { mode: 'prefix' })).rejects.toThrow(/prefix block store/);
  });
});
