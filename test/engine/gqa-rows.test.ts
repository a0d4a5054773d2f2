import { Engine } from '../../shared/engine';
import { fixture } from '../helpers/fixtures';
import { maxAbsDiff, range } from '../helpers/model';

/**
 * A GroupQueryAttention-op graph takes each row's length from its attention_mask: a row that sits a call out with
 * nothing cached would read seqlens_k = -1, which the op refuses. Serving makes such calls (rows walked in step, where
 * a row without a prefix or link tokens sits out), so the runner leaves that row out.
 */
describe('a GroupQueryAttention graph with a row that sits a call out', () => {
  test('a call with an empty row over an empty past gives the other row what it gets alone', async () => {
    const engine = await Engine.load(fixture('llama3-style-gqa'));
    const tokens = [1000, 2000, 3000, 4000];
    const both = engine.newCache(2, 8);
    const alone = engine.newCache(1, 8);
    try {
      const a = await engine.forward(both, [{ tokens, positions: range(0, 4) }, { tokens: [], positions: [] }]);
      const b = await engine.forward(alone, [{ tokens, positions: range(0, 4) }]);
      expect(a.logits[1].length).toBe(0);
      expect(maxAbsDiff(a.logits[0], b.logits[0])).toBeLessThan(1e-5);
      // The next call: the empty row now takes tokens, the first sits out over its past.
      const c = await engine.forward(both, [{ tokens: [], positions: [] }, { tokens, positions: range(0, 4) }]);
      expect(maxAbsDiff(c.logits[1], b.logits[0])).toBeLessThan(1e-5);
    } finally {
      both.release();
      alone.release();
    }
  });
});
