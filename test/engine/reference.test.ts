import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { Engine } from '../../shared/engine';
import { expectMatchesReference, maxAbsDiff, range, readReference } from '../helpers/model';

/** Every committed model, on both graphs, reproduces the reference its exporter (torch fp32) wrote beside it. */
const MODELS = join(__dirname, '..', '..', 'models');
const dirs = readdirSync(MODELS)
  .map((d) => join(MODELS, d))
  .filter((d) => existsSync(join(d, 'reference.json')));
const cases = dirs.flatMap((dir) => (['primitive', 'stock'] as const).map((graph) => [dir.split('/').pop()!, graph, dir] as const));

describe.each(cases)('%s, %s graph, against the exporting framework', (_name, graph, dir) => {
  let engine: Engine;
  beforeAll(async () => {
    engine = await Engine.load(dir, { graph });
  });

  test('logits and KV equal torch reference within 1e-4', async () => {
    await expectMatchesReference(engine, dir);
  });

  test('tokenizer.json gives the ids the exporter gave', () => {
    const ref = readReference(dir, engine.shape.layers);
    expect(engine.tokenizer.encode(ref.tokenizer_text)).toEqual(ref.tokenizer_ids);
    expect(engine.tokenizer.decode(ref.tokenizer_ids)).toContain('Lisbon');
  });
});

test('the test fixture is among the models checked', () => {
  expect(dirs.map((d) => d.split('/').pop()).sort()).toEqual(expect.arrayContaining(['tiny-random']));
});
