import type { Server } from 'node:http';
import { Queue, QueueEvents, Worker } from 'bullmq';
import IORedis from 'ioredis';
import { Registry } from 'prom-client';
import { Engine } from '../../shared/engine';
import { GenerateJob, QUEUES } from '../../shared/queue/contracts';
import { generateCompletion } from '../../shared/serving/generate';
import { createApp } from '../../services/api/app';
import { TINY } from '../helpers/model';

const REDIS = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';

describe('POST /v1/completions through real Redis and BullMQ', () => {
  const prefix = `{epic-test-${process.pid}-${Date.now()}}`;
  let engine: Engine;
  let server: Server;
  let base: string;
  let queue: Queue;
  let events: QueueEvents;
  let worker: Worker;
  const conns: IORedis[] = [];

  beforeAll(async () => {
    engine = await Engine.load(TINY);
    const conn = (opts = {}) => {
      const c = new IORedis(REDIS, { maxRetriesPerRequest: null, ...opts });
      conns.push(c);
      return c;
    };
    queue = new Queue(QUEUES.inference, { connection: conn(), prefix });
    events = new QueueEvents(QUEUES.inference, { connection: conn(), prefix });
    worker = new Worker(QUEUES.inference, async (job) => generateCompletion(engine, GenerateJob.parse(job.data)), { connection: conn(), prefix });
    await events.waitUntilReady();
    const app = createApp({
      model: engine.config,
      tokenizer: engine.tokenizer,
      inference: queue,
      inferenceEvents: events,
      registry: new Registry(),
      ping: () => conns[0].ping(),
      requestTimeoutMs: 20_000,
    });
    server = await new Promise((resolve) => {
      const s = app.listen(0, '127.0.0.1', () => resolve(s));
    });
    const addr = server.address();
    base = `http://127.0.0.1:${typeof addr === 'object' && addr ? addr.port : 0}`;
  });

  afterAll(async () => {
    server?.close();
    await worker?.close();
    await events?.close();
    await queue?.obliterate({ force: true }).catch(() => undefined);
    await queue?.close();
    for (const c of conns) c.disconnect();
  });

  const post = (path: string, body: unknown) =>
    fetch(`${base}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: typeof body === 'string' ? body : JSON.stringify(body) });

  test('a completion equals the engine called directly', async () => {
    const prompt = 'Q : where does Mira live ? A :';
    const res = await post('/v1/completions', { prompt, max_tokens: 6 });
    expect(res.status).toBe(200);
    const body = (await res.json()) as any;
    const direct = await generateCompletion(engine, { prompt, maxTokens: 6 });
    expect(body.choices[0].text).toBe(direct.text);
    expect(body.usage).toEqual({ prompt_tokens: direct.promptTokens, completion_tokens: direct.completionTokens, total_tokens: direct.promptTokens + direct.completionTokens });
    expect(body.model).toBe(engine.id);
  });

  test('/v1/models, /healthz, /readyz, /metrics', async () => {
    expect(((await (await fetch(`${base}/v1/models`)).json()) as any).data[0].id).toBe(engine.id);
    expect((await fetch(`${base}/healthz`)).status).toBe(200);
    expect((await fetch(`${base}/readyz`)).status).toBe(200);
    expect((await fetch(`${base}/metrics`)).status).toBe(200);
  });

  test('bad input gets a JSON 4xx naming the problem and enqueues nothing', async () => {
    const before = await queue.count();
    const cases: [unknown, number, RegExp][] = [
      ['{"prompt": ', 400, /malformed JSON/],
      [{ prompt: 5 }, 400, /prompt/],
      [{ prompt: 'x', max_tokens: -1 }, 400, /max_tokens/],
      [{ prompt: 'x', model: 'other' }, 404, /does not exist/],
      [{ prompt: 'x '.repeat(5000), max_tokens: 10 }, 400, /context length of 4096/],
    ];
    for (const [body, status, msg] of cases) {
      const res = await post('/v1/completions', body);
      expect(res.status).toBe(status);
      const j = (await res.json()) as any;
      expect(j.error.message).toMatch(msg);
    }
    const big = await post('/v1/completions', JSON.stringify({ prompt: 'a'.repeat(5 * 1024 * 1024) }));
    expect(big.status).toBe(413);
    expect((await fetch(`${base}/nope`)).status).toBe(404);
    expect(await queue.count()).toBe(before);
  });
});
