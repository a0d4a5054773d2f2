import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { Engine } from '../../shared/engine';
import { maxAbsDiff, range, readReference } from '../helpers/model';

/** Every committed model reproduces the reference logits and KV its exporter wrote beside it. */
const MODELS = join(__dirname, '..', '..', 'models');
const dirs = readdirSync(MODELS)
  .map((d) => join(MODELS, d))
  .filter((d) => existsSync(join(d, 'reference.json')));

test.each(dirs)('%s reproduces its committed reference (1e-4)', async (dir) => {
  const engine = await Engine.load(dir);
  const ref = readReference(dir, engine.shape.layers);
  const n = ref.input_ids.length;
  const cache = engine.newCache(1, n);
  const { logits } = await engine.forward(cache, [{ tokens: ref.input_ids, positions: range(0, n) }], { logits: 'all' });
  expect(maxAbsDiff(logits[0], ref.logits)).toBeLessThan(1e-4);
  const block = cache.toBlock(0, 0, n);
  for (let l = 0; l < engine.shape.layers; l++) expect(maxAbsDiff(block.keys[l], ref.keys[l])).toBeLessThan(1e-4);
  expect(engine.tokenizer.encode(ref.tokenizer_text)).toEqual(ref.tokenizer_ids);
});
