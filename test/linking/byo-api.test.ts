import { QueueEvents } from 'bullmq';
import { supportedModes, loadModelConfig } from '../../shared/engine';
import { TINY, copyStockOnly } from '../helpers/model';
import { waitFor } from '../helpers/net';
import { getJson, postJson, REDIS, startStack, type Stack } from '../helpers/stack';

/**
 * CacheBlend on a model without per-layer graphs is refused by the API (400 naming what is missing) before anything is
 * enqueued; it used to reach a worker and come back a 500 worker_error after three attempts.
 */
describe('the API refuses modes the model cannot serve, from its config', () => {
  let m: ReturnType<typeof copyStockOnly>;
  let s: Stack;
  beforeAll(async () => {
    m = copyStockOnly(TINY);
    s = await startStack(m.dir);
  }, 60_000);
  afterAll(async () => {
    await s?.close();
    m.cleanup();
  });

  test('supportedModes: cacheblend refused without per-layer graphs, nothing refused with them', () => {
    expect(Object.keys(supportedModes(loadModelConfig(m.dir)).refused)).toEqual(['cacheblend']);
    expect(supportedModes(loadModelConfig(TINY)).refused).toEqual({});
  });

  test('completions, streaming, chat, /v1/jobs and /v1/batches lines: 400 naming the per-layer graphs, nothing enqueued', async () => {
    const added: string[] = [];
    const watch = new QueueEvents(s.deps.inference.name, { connection: { url: REDIS }, prefix: s.deps.inference.opts.prefix });
    watch.on('added', ({ jobId }) => added.push(jobId));
    await watch.waitUntilReady();
    try {
      const doc = { text: 'the the the the the the' };
      const refused = (r: { status: number; body: any }, param: string) => {
        expect(r.status).toBe(400);
        expect(r.body.error.message).toMatch(/mode 'cacheblend' is not available/);
        expect(r.body.error.message).toMatch(/per-layer graphs \(config\.json epic\.graphs\.layers/);
        expect(r.body.error.code).toBe('mode_not_supported');
        expect(r.body.error.param).toBe(param);
      };
      refused(await postJson(s.base, '/v1/completions', { prompt: 'the', documents: [doc], mode: 'cacheblend', max_tokens: 1 }), 'mode');
      refused(await postJson(s.base, '/v1/completions', { prompt: 'the', documents: [doc], mode: 'cacheblend', max_tokens: 1, stream: true }), 'mode');
      refused(await postJson(s.base, '/v1/chat/completions', { messages: [{ role: 'user', content: 'the' }], documents: [doc], mode: 'cacheblend', max_tokens: 1 }), 'mode');
      refused(
        await postJson(s.base, '/v1/jobs', { requests: [{ documents: [doc], question: 'the', max_tokens: 1 }, { documents: [doc], question: 'the', mode: 'cacheblend', max_tokens: 1 }] }),
        'requests[1].mode',
      );
      const line = (i: number, mode: string) => JSON.stringify({ custom_id: `r${i}`, method: 'POST', url: '/v1/completions', body: { prompt: 'the', documents: [doc], mode, max_tokens: 1 } });
      const form = new FormData();
      form.append('purpose', 'batch');
      form.append('file', new Blob([`${line(0, 'naive')}\n${line(1, 'cacheblend')}\n`]), 'b.jsonl');
      const file = (await (await fetch(`${s.base}/v1/files`, { method: 'POST', body: form })).json()) as { id: string };
      const batch = await postJson(s.base, '/v1/batches', { input_file_id: file.id, endpoint: '/v1/completions', completion_window: '24h' });
      refused(batch, 'requests[1].mode');
      expect((await getJson(s.base, '/v1/batches')).body.data).toEqual([]);
      // The control: every other mode runs on this model, and its request is seen being added.
      for (const mode of ['full', 'prefix', 'naive', 'attnlink', 'attnlink0']) {
        const ok = await postJson(s.base, '/v1/completions', { prompt: 'the', documents: [doc], mode, max_tokens: 1 });
        expect({ mode, status: ok.status }).toEqual({ mode, status: 200 });
      }
      await waitFor(async () => (added.length >= 5 ? true : undefined), 5_000, "the good requests' 'added' events");
      expect(added).toHaveLength(5);
    } finally {
      await watch.close();
    }
  }, 60_000);
});
