/**
 * The queue's Redis going away under load, with real processes and a private redis-server: every answer is a 200 or a
 * 503 with Retry-After and code queue_unavailable, never a 500 (issue #21, bugs 3 and 4).
 */
import { waitFor } from '../helpers/net';
import { httpJson, ProcStack, RedisServer } from './procs';

describe('queue Redis outage', () => {
  let queue: RedisServer;
  let s: ProcStack | undefined;
  beforeAll(async () => {
    queue = await RedisServer.start();
  });
  afterEach(async () => {
    await s?.close();
    s = undefined;
  });
  afterAll(async () => {
    await queue?.stop();
  });

  const body = { prompt: 'Q : where ? A :', max_tokens: 3 };
  let slowest = 0;
  const outcome = (r: Awaited<ReturnType<typeof httpJson>>) => {
    slowest = Math.max(slowest, r.ms);
    return r.status === 200 ? '200' : `${r.status} ${r.body?.error?.code ?? r.text.slice(0, 80)} retry-after=${r.headers.get('retry-after')}`;
  };

  test('a burst of completions around a SHUTDOWN of the queue Redis, then a restart empty: only 200 or 503 queue_unavailable', async () => {
    await queue.start();
    // A short request timeout: completions in flight when Redis went away give up on their jobs within it.
    s = await ProcStack.start({ redis: queue, env: { REQUEST_TIMEOUT_MS: '4000' } });
    expect((await httpJson(s.base, 'POST', '/v1/completions', body)).status).toBe(200);

    const admin = queue.client();
    const calls: Promise<string>[] = [];
    for (let i = 0; i < 40; i++) {
      if (i === 20) await admin.call('SHUTDOWN', 'NOSAVE').catch(() => undefined); // the connection closes with it
      calls.push(httpJson(s.base, 'POST', '/v1/completions', body).then(outcome, (e) => `fetch failed: ${(e as Error).message}`));
      await new Promise((r) => setTimeout(r, 5));
    }
    admin.disconnect();
    // Back, empty (no persistence): the jobs of completions still waiting are gone.
    await new Promise((r) => setTimeout(r, 300));
    await queue.start();
    const outcomes = await Promise.all(calls);
    const counts: Record<string, number> = {};
    for (const o of outcomes) counts[o] = (counts[o] ?? 0) + 1;
    const failures = s.output().split('\n').filter((l) => l.includes('"status":500'));
    console.log(`40 completions around a queue Redis SHUTDOWN: ${JSON.stringify(counts)}, slowest ${slowest} ms\n${failures.join('\n')}`);
    expect(Object.keys(counts).filter((o) => o !== '200' && o !== '503 queue_unavailable retry-after=1')).toEqual([]);
    expect(counts['503 queue_unavailable retry-after=1']).toBeGreaterThan(0);
    expect(slowest).toBeLessThan(10_000); // none waited past its request timeout (4 s) by much
  }, 60_000);

  test('a completion whose job vanished (the queue Redis restarted empty): 503 queue_unavailable, not 500', async () => {
    await queue.start();
    // No worker: the job waits in the queue until Redis loses it.
    s = await ProcStack.start({ redis: queue, services: ['api'], env: { REQUEST_TIMEOUT_MS: '20000' } });
    const c = queue.client();
    const pending = httpJson(s.base, 'POST', '/v1/completions', body);
    // (It waits by priority: fair queuing between tenants.)
    await waitFor(async () => ((await c.keys('{epic-fault}:inference:*')).some((k) => k.endsWith(':wait') || k.endsWith(':prioritized')) ? true : undefined), 10_000, 'the job to be queued');
    c.disconnect();
    await queue.stop(true);
    await queue.start();
    const r = await pending;
    expect({ status: r.status, code: r.body?.error?.code, retryAfter: r.headers.get('retry-after') }).toEqual({ status: 503, code: 'queue_unavailable', retryAfter: '1' });
    expect(r.ms).toBeLessThan(15_000);
  }, 60_000);

  test('the queue dashboard (bull-board) during an outage: 503 + Retry-After in the JSON error shape, like every route', async () => {
    await queue.start();
    s = await ProcStack.start({ redis: queue, services: ['api'] });
    expect((await httpJson(s.base, 'GET', '/admin/queues/api/queues')).status).toBe(200);
    await queue.stop(true);
    const r = await httpJson(s.base, 'GET', '/admin/queues/api/queues');
    expect({ status: r.status, retryAfter: r.headers.get('retry-after'), code: r.body?.error?.code, fast: r.ms < 1000 }).toEqual({
      status: 503,
      retryAfter: '1',
      code: 'queue_unavailable',
      fast: true,
    });
    await queue.start();
  }, 60_000);
});
