import { Engine } from '../../shared/engine';
import { TINY, maxAbsDiff, range, readReference } from '../helpers/model';

describe.each(['primitive', 'stock'] as const)('%s graph against the exporting framework', (graph) => {
  let engine: Engine;
  beforeAll(async () => {
    engine = await Engine.load(TINY, { graph });
  });

  test('logits and KV equal torch reference within 1e-4', async () => {
    const ref = readReference(TINY, engine.shape.layers);
    const n = ref.input_ids.length;
    const cache = engine.newCache(1, n);
    const { logits } = await engine.forward(cache, [{ tokens: ref.input_ids, positions: range(0, n) }], { logits: 'all' });
    expect(maxAbsDiff(logits[0], ref.logits)).toBeLessThan(1e-4);
    const block = cache.toBlock(0, 0, n);
    for (let l = 0; l < engine.shape.layers; l++) {
      expect(maxAbsDiff(block.keys[l], ref.keys[l])).toBeLessThan(1e-4);
      expect(maxAbsDiff(block.values[l], ref.values[l])).toBeLessThan(1e-4);
    }
  });

  test('tokenizer.json gives the ids the exporter gave', () => {
    const ref = readReference(TINY, engine.shape.layers);
    expect(engine.tokenizer.encode(ref.tokenizer_text)).toEqual(ref.tokenizer_ids);
    expect(engine.tokenizer.decode(ref.tokenizer_ids)).toContain('Lisbon');
  });
});
