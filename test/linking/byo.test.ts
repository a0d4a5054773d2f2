import { Engine, UnsupportedModeError } from '../../shared/engine';
import { compileSource, link } from '../../shared/linking';
import { TINY, copyStockOnly, maxAbsDiff, randomTokens } from '../helpers/model';

/** A bring-your-own Optimum model: only model.onnx, a plain Llama config.json and tokenizer.json. */
describe('a stock Optimum model (no primitive or per-layer graphs)', () => {
  let m: ReturnType<typeof copyStockOnly>;
  let byo: Engine;
  let ours: Engine;
  beforeAll(async () => {
    m = copyStockOnly(TINY);
    byo = await Engine.load(m.dir);
    ours = await Engine.load(TINY);
  });
  afterAll(() => m.cleanup());

  test('loads on the stock graph and passes the RoPE self-check', () => {
    expect(byo.graphKind).toBe('stock');
  });

  test('every mode the stock graph can do gives the primitive graph answer; cacheblend says what it needs', async () => {
    const V = byo.config.vocabSize;
    const input = { prefix: [1], chunks: [randomTokens(30, 1, 5, V), randomTokens(20, 2, 5, V)], question: randomTokens(5, 3, 5, V) };
    for (const mode of [{ mode: 'full' }, { mode: 'naive' }, { mode: 'attnlink', k: 8 }] as const) {
      const a = await link({ engine: byo, source: compileSource(byo) }, input, mode);
      const b = await link({ engine: ours, source: compileSource(ours) }, input, mode);
      expect({ mode: mode.mode, diff: maxAbsDiff(a.logits, b.logits) < 1e-4 }).toEqual({ mode: mode.mode, diff: true });
    }
    // LegoLink-0 without a configured sink token compiles behind BOS: it runs, and computes only BOS and the question.
    const lego = await link({ engine: byo, source: compileSource(byo) }, input, { mode: 'attnlink0' });
    expect(lego.stats.computedTokens).toBe(1 + input.question.length);
    await expect(link({ engine: byo, source: compileSource(byo) }, input, { mode: 'cacheblend' })).rejects.toThrow(UnsupportedModeError);
    await expect(link({ engine: byo, source: compileSource(byo) }, input, { mode: 'cacheblend' })).rejects.toThrow(/per-layer graphs/);
  });
});
