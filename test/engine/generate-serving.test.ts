import { Engine } from '../../shared/engine';
import { compileSource } from '../../shared/linking';
import { groupKey, type ServeRequest } from '../../shared/serving/request';
import { Scheduler } from '../../shared/serving/scheduler';
import { TINY, randomTokens } from '../helpers/model';

/** Sampling is per row: requests that sample differently still share one linked context, and each gets its own answer. */
describe('serving with per-row sampling and stop strings', () => {
  let engine: Engine;
  const ctx = () => ({ engine, source: compileSource(engine) });
  let chunks: number[][];
  beforeAll(async () => {
    engine = await Engine.load(TINY);
    const V = engine.config.vocabSize;
    chunks = [randomTokens(30, 1, 5, V), randomTokens(20, 2, 5, V)];
  });

  const req = (id: string, extra: Partial<ServeRequest> = {}): ServeRequest => ({
    id,
    tenantSalt: '',
    chunks,
    question: randomTokens(5, 9, 5, engine.config.vocabSize),
    maxTokens: 8,
    mode: { mode: 'attnlink', k: 4 },
    ignoreEos: true,
    ...extra,
  });

  test('a group whose requests sample differently shares its context; each row equals the request served alone', async () => {
    const reqs = [
      req('g0'),
      req('g1', { sampling: { temperature: 1.3, seed: 11 } }),
      req('g2', { sampling: { temperature: 0.7, topK: 5, seed: 12 } }),
      req('g3', { sampling: { temperature: 1.3, seed: 11 }, stop: [' / f'] }),
    ];
    expect(new Set(reqs.map(groupKey)).size).toBe(1);
    const sched = new Scheduler(ctx);
    const streamed: string[] = ['', '', '', ''];
    const got = await Promise.all(reqs.map((r, i) => sched.submit(r, (_t, text) => (streamed[i] += text))));
    expect(got.map((r) => r.groupSize)).toEqual([4, 4, 4, 4]);
    for (let i = 0; i < reqs.length; i++) {
      const alone = await new Scheduler(ctx).submit({ ...reqs[i], id: `${reqs[i].id}-alone` });
      expect(got[i].tokens).toEqual(alone.tokens);
      expect(got[i].text).toBe(alone.text);
      // The stream, completed by the result's text past it, is the text (the worker sends the rest with the result).
      expect(got[i].text.startsWith(streamed[i])).toBe(true);
    }
    expect(got[1].tokens).not.toEqual(got[0].tokens);
    // The same seed in one group: the same draws; a stop string cuts that row only.
    // (' / f' spans two tokens of that answer, '& >03Z / for \\': the test model's weights are committed.)
    expect(got[1].text).toContain(' / f');
    expect(got[3].text).toBe(got[1].text.slice(0, got[1].text.indexOf(' / f')));
    expect(got[3].finishReason).toBe('stop');
    expect(got[3].tokens.length).toBeLessThan(got[1].tokens.length);
    expect(streamed[3]).not.toContain(' /');
  });

  test('without a seed a sampled request draws from its id: served again, the same tokens', async () => {
    const r = req('unseeded', { sampling: { temperature: 1.5 } });
    const a = await new Scheduler(ctx).submit(r);
    const b = await new Scheduler(ctx).submit(r);
    expect(b.tokens).toEqual(a.tokens);
    const other = await new Scheduler(ctx).submit({ ...r, id: 'unseeded-2' });
    expect(other.tokens).not.toEqual(a.tokens);
  });

  test('requests whose prompt prefix differs do not share a context', () => {
    expect(groupKey(req('p0'))).not.toBe(groupKey(req('p1', { prefix: [engine.config.bosTokenId, 7] })));
    expect(groupKey(req('p2', { prefix: [3] }))).toBe(groupKey(req('p3', { prefix: [3] })));
  });
});
