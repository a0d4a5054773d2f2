/**
 * usage.prompt_tokens_details through the API, with the real services (API and worker processes, a private
 * redis-server): `cached_tokens` counts only prompt tokens whose KV was read from the store, never chunks compiled on a
 * miss; `compiled_tokens` (an extension) counts those, and so does `epic_compiled_tokens_total` (issue #21, bug 2).
 */
import { randomUUID } from 'node:crypto';
import { httpJson, metricSum, ProcStack, RedisServer, scrape } from '../faults/procs';

describe('cached and compiled prompt tokens', () => {
  let redis: RedisServer;
  let s: ProcStack;
  beforeAll(async () => {
    redis = await RedisServer.start();
    s = await ProcStack.start({ redis });
  }, 60_000);
  afterAll(async () => {
    await s?.close();
    await redis?.stop();
  });

  /** A document no one has sent before (one chunk: well under KVSplit's 256-token target). */
  const fresh = () => `Mira lives in Oslo . she works at ${randomUUID()} . the river is cold in winter .`;
  const ask = async (text: string, mode: Record<string, unknown>) => {
    const r = await httpJson(s.base, 'POST', '/v1/completions', { prompt: 'where does Mira live ?', documents: [{ text }], max_tokens: 2, ...mode });
    expect(r.status).toBe(200);
    return r.body.usage as { prompt_tokens: number; prompt_tokens_details: { cached_tokens: number; compiled_tokens: number } };
  };
  const compiledMetric = async (mode: string) => metricSum(await scrape(s.of('worker')[0].port), 'epic_compiled_tokens_total', { mode });

  test('an inline document never seen: cached 0, compiled > 0; the same request again: cached > 0, compiled 0', async () => {
    const text = fresh();
    const before = await compiledMetric('attnlink');
    const first = await ask(text, { mode: 'attnlink' });
    expect(first.prompt_tokens_details.cached_tokens).toBe(0);
    const chunkTokens = first.prompt_tokens_details.compiled_tokens;
    expect(chunkTokens).toBeGreaterThan(16);
    expect(chunkTokens).toBeLessThan(first.prompt_tokens);
    expect((await compiledMetric('attnlink')) - before).toBe(chunkTokens);

    const again = await ask(text, { mode: 'attnlink' });
    expect(again.prompt_tokens_details).toEqual({ cached_tokens: chunkTokens - 16, compiled_tokens: 0 }); // its first k=16 tokens recomputed
    expect((await compiledMetric('attnlink')) - before).toBe(chunkTokens);

    // naive recomputes none of the chunk's tokens: all of them were read from the store.
    expect((await ask(text, { mode: 'naive' })).prompt_tokens_details).toEqual({ cached_tokens: chunkTokens, compiled_tokens: 0 });
    // full reads nothing from the store.
    expect((await ask(text, { mode: 'full' })).prompt_tokens_details).toEqual({ cached_tokens: 0, compiled_tokens: 0 });
  });

  test('cacheblend counts tokens: the hit chunk\'s tokens it did not recompute, not an average over layers', async () => {
    const text = fresh();
    const r = 0.15;
    const first = await ask(text, { mode: 'cacheblend', r });
    expect(first.prompt_tokens_details.cached_tokens).toBe(0);
    const C = first.prompt_tokens_details.compiled_tokens;
    expect(C).toBeGreaterThan(0);
    const again = await ask(text, { mode: 'cacheblend', r });
    // Every chunk token was a hit; the top ceil(r × C) by deviation were recomputed after the check layer.
    expect(again.prompt_tokens_details).toEqual({ cached_tokens: C - Math.ceil(r * C), compiled_tokens: 0 });
  });
});
