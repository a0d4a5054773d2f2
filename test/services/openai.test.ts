import OpenAI, { toFile } from 'openai';
import { createApp } from '../../services/api/app';
import { openapi } from '../../services/api/openapi';
import { startStack, type Stack } from '../helpers/stack';
import { waitFor } from '../helpers/net';
import { pipelineModel, workload } from '../helpers/workload';

const MODEL = pipelineModel();

describe('the official openai client against the API', () => {
  let s: Stack;
  let client: OpenAI;
  const w = workload(MODEL, 3);
  let docs: string[];
  beforeAll(async () => {
    s = await startStack(MODEL, { apiKeys: new Map([['sk-test', 'acme']]) });
    client = new OpenAI({ apiKey: 'sk-test', baseURL: `${s.base}/v1`, maxRetries: 0 });
    docs = [];
    for (const text of w.documents) {
      const r = await fetch(`${s.base}/v1/documents`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: 'Bearer sk-test' }, body: JSON.stringify({ text }) });
      docs.push(((await r.json()) as any).id);
    }
    // Until the precompute worker has compiled every chunk: only tokens read from the store count as cached.
    for (const id of docs) {
      await waitFor(async () => {
        const d = (await (await fetch(`${s.base}/v1/documents/${id}`, { headers: { authorization: 'Bearer sk-test' } })).json()) as any;
        return d.warm_chunks === d.chunks ? true : undefined;
      }, 30_000, `document ${id} warm`);
    }
  }, 60_000);
  afterAll(async () => {
    await s?.close();
  });
  const ext = () => ({ documents: docs, mode: 'attnlink', k: 8 }) as Record<string, unknown>;

  test('models', async () => {
    const list = await client.models.list();
    expect(list.data.map((m) => m.id)).toEqual([s.engine.id]);
  });

  test('completions, plain and streamed, agree; cached tokens are reported', async () => {
    const body = { model: s.engine.id, prompt: w.questions[0], max_tokens: 5, ...ext() };
    const c = await client.completions.create(body as any);
    expect(c.object).toBe('text_completion');
    expect(c.usage!.completion_tokens).toBeGreaterThan(0);
    expect((c.usage as any).prompt_tokens_details.cached_tokens).toBeGreaterThan(0);
    const stream = (await client.completions.create({ ...(body as any), stream: true, stream_options: { include_usage: true } })) as unknown as AsyncIterable<any>;
    let text = '';
    let finish: string | null = null;
    let usage: any;
    for await (const chunk of stream) {
      for (const ch of chunk.choices) {
        text += ch.text;
        finish = ch.finish_reason ?? finish;
      }
      if (chunk.usage) usage = chunk.usage;
    }
    expect(text).toBe(c.choices[0].text);
    expect(finish).toBe(c.choices[0].finish_reason);
    expect(usage.completion_tokens).toBe(c.usage!.completion_tokens);
  });

  test('chat completions, plain and streamed, agree', async () => {
    const body = { model: s.engine.id, messages: [{ role: 'user' as const, content: w.questions[1] }], max_tokens: 5, ...ext() };
    const c = await client.chat.completions.create(body as any);
    expect(c.object).toBe('chat.completion');
    expect(c.choices[0].message.role).toBe('assistant');
    const stream = (await client.chat.completions.create({ ...(body as any), stream: true })) as unknown as AsyncIterable<any>;
    let text = '';
    for await (const chunk of stream) text += chunk.choices[0]?.delta?.content ?? '';
    expect(text).toBe(c.choices[0].message.content);
  });

  test('files + batches: JSONL in, JSONL out, OpenAI statuses and request_counts', async () => {
    const lines = w.questions.slice(0, 6).map((q, i) =>
      JSON.stringify({ custom_id: `q-${i}`, method: 'POST', url: '/v1/chat/completions', body: { model: s.engine.id, messages: [{ role: 'user', content: q }], max_tokens: 3, ...ext() } }),
    );
    const file = await client.files.create({ file: await toFile(Buffer.from(lines.join('\n') + '\n'), 'batch.jsonl'), purpose: 'batch' });
    expect(file.purpose).toBe('batch');
    const batch = await client.batches.create({ input_file_id: file.id, endpoint: '/v1/chat/completions', completion_window: '24h' });
    expect(['validating', 'in_progress']).toContain(batch.status);
    let b = batch;
    for (let i = 0; i < 300 && b.status !== 'completed'; i++) {
      await new Promise((r) => setTimeout(r, 100));
      b = await client.batches.retrieve(batch.id);
    }
    expect(b.status).toBe('completed');
    expect(b.request_counts).toEqual({ total: 6, completed: 6, failed: 0 });
    const out = await (await client.files.content(b.output_file_id!)).text();
    const rows = out.trim().split('\n').map((l) => JSON.parse(l));
    expect(rows.map((r) => r.custom_id).sort()).toEqual(lines.map((_, i) => `q-${i}`).sort());
    for (const r of rows) {
      expect(r.response.status_code).toBe(200);
      expect(r.response.body.object).toBe('chat.completion');
      expect(r.error).toBeNull();
    }
    const listed = await client.batches.list();
    expect(listed.data.map((x) => x.id)).toContain(batch.id);
  }, 60_000);

  test('a cancelled batch keeps what finished: request_counts and an output file; a cancel left half done is finished by the next', async () => {
    const n = 300;
    const lines = Array.from({ length: n }, (_, i) =>
      JSON.stringify({ custom_id: `c-${i}`, method: 'POST', url: '/v1/completions', body: { prompt: w.questions[i % w.questions.length], max_tokens: 24, ignore_eos: true, ...ext() } }),
    );
    const file = await client.files.create({ file: await toFile(Buffer.from(lines.join('\n')), 'many.jsonl'), purpose: 'batch' });
    const batch = await client.batches.create({ input_file_id: file.id, endpoint: '/v1/completions', completion_window: '24h' });
    // Cancel once some requests have finished, long before all have.
    for (let i = 0; i < 200 && (await client.batches.retrieve(batch.id)).request_counts!.completed < 5; i++) await new Promise((r) => setTimeout(r, 25));
    const cancelled = await client.batches.cancel(batch.id);
    expect(cancelled.status).toBe('cancelled');
    expect(cancelled.cancelled_at).not.toBeNull();
    // Requests a worker held at the cancel may still finish; then nothing changes any more.
    let b = cancelled;
    for (let last = -1; last !== b.request_counts!.completed; ) {
      last = b.request_counts!.completed;
      await new Promise((r) => setTimeout(r, 500));
      b = await client.batches.retrieve(batch.id);
    }
    const done = b.request_counts!.completed;
    expect(done).toBeGreaterThanOrEqual(5);
    expect(done).toBeLessThan(n);
    expect(b.output_file_id).not.toBeNull();
    const rows = (await (await client.files.content(b.output_file_id!)).text()).trim().split('\n').map((l) => JSON.parse(l));
    // The output file holds every request that finished, including any that finished after the cancel.
    expect(rows).toHaveLength(done);
    for (const r of rows) expect(r.response.body.object).toBe('text_completion');

    // A cancel that stopped half way (its API died between the two steps) leaves `cancelling`: cancelling again ends it.
    // (Long requests: the batch must still be running when its record is set back.)
    const long = lines.slice(0, 50).map((l) => l.replace('"max_tokens":24', '"max_tokens":200'));
    const file2 = await client.files.create({ file: await toFile(Buffer.from(long.join('\n')), 'some.jsonl'), purpose: 'batch' });
    const half = await client.batches.create({ input_file_id: file2.id, endpoint: '/v1/completions', completion_window: '24h' });
    expect(await s.deps.batches.update('acme', half.id, { status: 'cancelling' }, ['in_progress'])).toMatchObject({ status: 'cancelling' });
    const again = await client.batches.cancel(half.id);
    expect(again.status).toBe('cancelled');
  }, 60_000);

  test('the OpenAPI description covers every route the API serves, with the methods it serves', async () => {
    // The app's own routing table (Express 5): top-level routes and those of its routers (bull-board's are under
    // /admin/queues, described as one entry).
    const served: string[] = [];
    const walk = (stack: any[], top: boolean) => {
      for (const l of stack) {
        if (l.route) for (const m of Object.keys(l.route.methods)) served.push(`${m} ${String(l.route.path).replace(/:(\w+)/g, '{$1}')}`);
        else if (l.handle?.stack && top) walk(l.handle.stack, false);
      }
    };
    walk((createApp(s.deps) as any).router.stack, true);
    const described = Object.entries(openapi.paths).flatMap(([path, ops]) => Object.keys(ops).map((m) => `${m} ${path}`));
    const mine = served.filter((r) => !r.includes('/admin/queues') && !/ \/(api|static)\b/.test(r));
    expect(mine.length).toBeGreaterThan(20);
    expect(mine.filter((r) => !described.includes(r))).toEqual([]);
    expect(described.filter((r) => !r.endsWith('/admin/queues') && !mine.includes(r))).toEqual([]);
    // Request bodies are the validators' own schemas: the bounds enforced are the ones described.
    expect((openapi.components.schemas.Request as any).properties.max_tokens).toMatchObject({ type: 'integer', maximum: 4096 });
    expect((openapi.components.schemas.Job as any).properties.requests).toMatchObject({ maxItems: 10_000 });
  });

  test('errors come back as the client expects them', async () => {
    await expect(client.completions.create({ model: 'nope', prompt: 'x' })).rejects.toMatchObject({ status: 404 });
    const bad = new OpenAI({ apiKey: 'wrong', baseURL: `${s.base}/v1`, maxRetries: 0 });
    await expect(bad.models.list()).rejects.toMatchObject({ status: 401 });
    await expect(client.batches.retrieve('batch_missing')).rejects.toMatchObject({ status: 404 });
  });
});
