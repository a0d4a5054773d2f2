import { compileSource, link } from '../../shared/linking';
import { QueueEvents } from 'bullmq';
import { getJson, postJson, REDIS, startStack, type Stack } from '../helpers/stack';
import { pipelineModel, workload } from '../helpers/workload';
import { waitFor } from '../helpers/net';

const MODEL = pipelineModel();

describe(`pipeline: API → BullMQ → workers (${MODEL.split('/').pop()})`, () => {
  let s: Stack;
  const w = workload(MODEL);
  let docIds: string[] = [];
  beforeAll(async () => {
    s = await startStack(MODEL);
  }, 60_000);
  afterAll(async () => {
    await s?.close();
  });

  test('documents are chunked, precomputed and reported warm', async () => {
    docIds = [];
    for (const [i, text] of w.documents.entries()) {
      const r = await postJson(s.base, '/v1/documents', { text, id: `doc-${i}`, metadata: { n: i } });
      expect(r.status).toBe(201);
      expect(r.body.chunks).toBeGreaterThan(0);
      docIds.push(r.body.id);
    }
    for (const id of docIds) {
      const doc = await waitFor(async () => {
        const r = await getJson(s.base, `/v1/documents/${id}`);
        return r.body.warm_chunks === r.body.chunks ? r.body : undefined;
      }, 30_000, `document ${id} warm`);
      expect(doc.warm_chunks).toBe(doc.chunks);
    }
  }, 60_000);

  test('a batch of 100 requests over 8 shared documents completes, every answer equal to the engine called directly', async () => {
    const modes = [{ mode: 'attnlink' }, { mode: 'attnlink', k: 4 }, { mode: 'full' }, { mode: 'naive' }, { mode: 'cacheblend', r: 0.3 }, { mode: 'attnlink0' }, { mode: 'prefix' }];
    const requests = Array.from({ length: 100 }, (_, i) => ({ documents: docIds, question: w.questions[i % w.questions.length], max_tokens: 4, ...modes[i % modes.length] }));
    const sub = await postJson(s.base, '/v1/jobs', { requests, metadata: { test: 'pipeline' } });
    expect(sub.status).toBe(202);
    expect(sub.body.total).toBe(100);
    const done = await waitFor(async () => {
      const r = await getJson(s.base, `/v1/jobs/${sub.body.id}`);
      return r.body.status === 'completed' ? r.body : undefined;
    }, 240_000, 'batch completion');
    expect(done.completed).toBe(100);
    expect(done.failed).toBe(0);
    expect(done.results).toHaveLength(100);
    // Requests shared contexts: the scheduler linked groups, not one request at a time.
    expect(Math.max(...done.results.map((r: any) => r.result.groupSize))).toBeGreaterThan(1);
    const { engine } = s;
    const docs = await s.deps.documents.getMany('default', docIds);
    const chunks = docs.flatMap((d) => d!.chunks.map((c) => c.tokens));
    const direct = { engine, source: compileSource(engine), prefixStore: s.kv };
    for (const [i, spec] of requests.entries()) {
      const question = engine.tokenizer.encode(spec.question);
      const l = await link(direct, { prefix: [engine.config.bosTokenId], chunks, question }, { mode: spec.mode as never, k: (spec as any).k, r: (spec as any).r }, 4);
      const g = await engine.generate(l.cache, [l.logits], { maxTokens: 4 });
      const want = engine.tokenizer.decode(g.tokens[0]);
      expect({ i, text: done.results[i].result.text }).toEqual({ i, text: want });
    }
  }, 300_000);

  test('SSE progress stream ends with done, and a finished job cannot be cancelled back', async () => {
    const sub = await postJson(s.base, '/v1/jobs', { requests: [{ documents: docIds.slice(0, 2), question: w.questions[0], max_tokens: 2 }] });
    const res = await fetch(`${s.base}/v1/jobs/${sub.body.id}/events`);
    expect(res.headers.get('content-type')).toContain('text/event-stream');
    const text = await res.text();
    expect(text).toContain('event: progress');
    expect(text).toContain('event: done');
    expect(text).toContain('"status":"completed"');
    const c = await postJson(s.base, `/v1/jobs/${sub.body.id}/cancel`, {});
    expect(c.body.status).toBe('completed');
  }, 60_000);

  test('bad input gets a JSON 4xx naming the problem, and nothing is enqueued', async () => {
    // Every job added to either queue while the cases run, in any state (a live worker would have taken one already,
    // so counting waiting jobs could not see it): BullMQ's own 'added' events.
    const added: string[] = [];
    const watchers = [s.deps.inference, s.deps.precompute].map((q) => new QueueEvents(q.name, { connection: { url: REDIS }, prefix: q.opts.prefix }));
    for (const qe of watchers) {
      qe.on('added', ({ jobId }) => added.push(jobId));
      await qe.waitUntilReady();
    }
    const cases: [string, unknown, number, RegExp][] = [
      ['/v1/jobs', '{"requests": [', 400, /malformed JSON/],
      ['/v1/jobs', { requests: 'all' }, 400, /requests/],
      ['/v1/jobs', { requests: [] }, 400, /requests/],
      ['/v1/jobs', { requests: [{ documents: ['nope'], question: 'x' }] }, 404, /unknown document id "nope"/],
      ['/v1/jobs', { requests: [{ documents: docIds, question: 'x', mode: 'turbo' }] }, 400, /mode/],
      ['/v1/jobs', { requests: [{ documents: docIds, question: 'x', k: -1 }] }, 400, /k/],
      // below MIN_R (the worker, which flushes denormals, must accept exactly what the API accepts)
      ['/v1/jobs', { requests: [{ documents: docIds, question: 'x', mode: 'cacheblend', r: 1e-5 }] }, 400, /r/],
      ['/v1/jobs', { requests: [{ documents: docIds, question: 'x', max_tokens: 'ten' }] }, 400, /max_tokens/],
      ['/v1/jobs', { requests: [{ question: 'the '.repeat(3000), max_tokens: 2000 }] }, 400, /context length/],
      ['/v1/jobs', { requests: [{ documents: docIds }] }, 400, /question or a prompt/],
      ['/v1/documents', { text: '' }, 400, /text/],
      ['/v1/documents', { text: 'x', id: '../etc/passwd' }, 400, /id/],
      ['/v1/completions', { prompt: 1 }, 400, /prompt/],
      ['/v1/completions', { prompt: 'x', model: 'gpt-9' }, 404, /does not exist/],
      ['/v1/chat/completions', { messages: [] }, 400, /messages/],
      ['/v1/chat/completions', { messages: [{ role: 'user', content: 'x' }], documents: ['nope'] }, 404, /unknown document id "nope"/],
      // No max_tokens: chat's default is the rest of the context, and a prompt that fills it leaves none.
      ['/v1/chat/completions', { messages: [{ role: 'user', content: 'the '.repeat(4100) }] }, 400, /leaves no room for an answer/],
    ];
    for (const [path, body, status, msg] of cases) {
      const r = await postJson(s.base, path, body);
      expect({ path, body, status: r.status }).toEqual({ path, body, status });
      expect(r.body.error.message).toMatch(msg);
    }
    const big = await postJson(s.base, '/v1/jobs', JSON.stringify({ requests: [{ question: 'a'.repeat(9 * 1024 * 1024) }] }));
    expect(big.status).toBe(413);
    expect((await getJson(s.base, '/v1/documents/..%2F..%2Fetc')).status).toBe(404);
    // The control: one good request is seen.
    expect((await postJson(s.base, '/v1/completions', { prompt: 'x', max_tokens: 1 })).status).toBe(200);
    await waitFor(async () => (added.length ? true : undefined), 5_000, "the good request's 'added' event");
    await Promise.all(watchers.map((qe) => qe.close()));
    expect(added).toHaveLength(1);
  }, 60_000);

  test('max_tokens defaults: 16 for completions (as OpenAI), for chat the rest of the context up to 256', async () => {
    const completion = await postJson(s.base, '/v1/completions', { prompt: 'the', ignore_eos: true });
    expect(completion.status).toBe(200);
    expect(completion.body.usage.completion_tokens).toBe(16);
    const short = await postJson(s.base, '/v1/chat/completions', { messages: [{ role: 'user', content: 'the' }], ignore_eos: true });
    expect(short.body.usage.completion_tokens).toBe(256);
    // A prompt that leaves ~100 tokens of the 4,096: the answer runs to the end of the context.
    const chat = await postJson(s.base, '/v1/chat/completions', { messages: [{ role: 'user', content: 'the '.repeat(3980) }], ignore_eos: true });
    expect(chat.status).toBe(200);
    const { prompt_tokens, completion_tokens } = chat.body.usage;
    expect(completion_tokens).toBeGreaterThan(16);
    expect(completion_tokens).toBeLessThan(256);
    expect(prompt_tokens + completion_tokens).toBe(4096);
    expect(chat.body.choices[0].finish_reason).toBe('length');
  }, 60_000);

  test('without a mode: attnlink over documents, full for a bare prompt', async () => {
    const sub = await postJson(s.base, '/v1/jobs', { requests: [{ prompt: 'the', max_tokens: 1 }, { documents: docIds.slice(0, 2), question: 'the', max_tokens: 1 }] });
    expect(sub.status).toBe(202);
    const done = await waitFor(async () => {
      const r = await getJson(s.base, `/v1/jobs/${sub.body.id}`);
      return r.body.status === 'completed' ? r.body : undefined;
    }, 30_000, 'the job');
    expect(done.results.map((r: any) => r.result.mode)).toEqual(['full', expect.stringMatching(/^attnlink/)]);
  }, 60_000);
});
