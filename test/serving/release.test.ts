import { Engine } from '../../shared/engine';
import { compileSource } from '../../shared/linking';
import type { ServeRequest } from '../../shared/serving/request';
import { Scheduler } from '../../shared/serving/scheduler';
import { TINY, randomTokens } from '../helpers/model';

/**
 * Issue #21 bug 6: every KV cache goes back to the engine's pool on every path, errors included. 100 requests through
 * the scheduler (lone requests, groups sharing a context, cross-request batches, plain prompts), a fifth of them
 * failing after their cache was taken: a chunk holding a token id outside the vocabulary is refused by the engine
 * when it is computed (full mode) or compiled (the linked modes).
 */
describe('KV caches are released on every path', () => {
  let engine: Engine;
  beforeAll(async () => {
    engine = await Engine.load(TINY);
  });

  test('100 requests, some failing: the pool lends out as many buffers after as before', async () => {
    const V = engine.config.vocabSize;
    const shared = [randomTokens(30, 1, 5, V), randomTokens(20, 2, 5, V)];
    const modes = [{ mode: 'full' }, { mode: 'attnlink', k: 4 }, { mode: 'naive' }, { mode: 'attnlink0' }] as const;
    const reqs: ServeRequest[] = Array.from({ length: 100 }, (_, i) => {
      const bad = i % 5 === 4;
      const chunks = i % 7 === 0 ? [] : i % 3 === 0 ? shared : [randomTokens(24, 100 + i, 5, V), randomTokens(16, 200 + i, 5, V)];
      return {
        id: `r${i}`,
        tenantSalt: '',
        chunks: bad ? [...(chunks.length ? chunks : shared).slice(0, 1), [5, 6, V + 3, 7]] : chunks,
        question: randomTokens(4, 300 + i, 5, V),
        maxTokens: 1 + (i % 4),
        mode: modes[i % modes.length],
        ignoreEos: true,
      };
    });
    const before = engine.pool.outstanding;
    const sched = new Scheduler(() => ({ engine, source: compileSource(engine) }));
    const settled = await Promise.allSettled(reqs.map((r) => sched.submit(r)));
    const failed = settled.filter((s) => s.status === 'rejected');
    expect(failed.length).toBe(20);
    for (const f of failed) expect(String((f as PromiseRejectedResult).reason)).toMatch(/outside vocabulary/);
    expect(settled.filter((s) => s.status === 'fulfilled').length).toBe(80);
    expect(engine.pool.outstanding).toBe(before);
  });
});
