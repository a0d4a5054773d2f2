/**
 * Overload with real processes and a private redis-server: the inference queue is bounded (429 + Retry-After past
 * MAX_QUEUE_DEPTH, nothing enqueued), body and token limits are enforced before anything is tokenized or enqueued, and
 * a sustained autocannon run keeps the API's and the worker's memory bounded (peak RSS read from /proc).
 */
import autocannon from 'autocannon';
import { waitFor } from '../helpers/net';
import { httpJson, ProcStack, suiteStacks } from './procs';

describe('overload', () => {
  const r = suiteStacks();

  test('a full queue answers 429 with Retry-After and enqueues nothing; body and token limits answer 413/400', async () => {
    const s = r.own(await ProcStack.start({ redis: r.redis, services: ['api'], env: { MAX_QUEUE_DEPTH: '40', MAX_BODY_BYTES: String(1024 * 1024) } }));
    // Batch jobs wait in the shared batch queue, by priority (fair queuing between tenants).
    const waiting = () => r.client.zcard(`${s.env.QUEUE_PREFIX}:inference-batch:prioritized`);
    const batch = (n: number) => ({ requests: Array.from({ length: n }, (_, i) => ({ prompt: `Q : item ${i} ? A :`, max_tokens: 2 })) });
    expect((await httpJson(s.base, 'POST', '/v1/jobs', batch(20))).status).toBe(202);
    expect((await httpJson(s.base, 'POST', '/v1/jobs', batch(20))).status).toBe(202);
    expect(await waiting()).toBe(40);
    let refused = 0;
    const full: [string, unknown][] = [
      ['/v1/jobs', batch(1)],
      ['/v1/completions', { prompt: 'Q : x ? A :', max_tokens: 2 }],
      ['/v1/completions', { prompt: 'Q : x ? A :', max_tokens: 2, stream: true }],
      ['/v1/chat/completions', { messages: [{ role: 'user', content: 'x' }], max_tokens: 2 }],
    ];
    for (const [path, body] of full) {
      const r = await httpJson(s.base, 'POST', path, body);
      expect({ path, status: r.status, retryAfter: r.headers.get('retry-after'), code: r.body?.error?.code }).toEqual({ path, status: 429, retryAfter: '2', code: 'queue_full' });
      refused++;
    }
    expect(await waiting()).toBe(40);

    // Body limit: 413 before the body is parsed.
    const big = await httpJson(s.base, 'POST', '/v1/documents', { text: 'x'.repeat(1024 * 1024 + 10) });
    expect({ status: big.status, code: big.body.error.code }).toEqual({ status: 413, code: 'body_too_large' });
    // Token limits.
    const limits: [string, unknown, string | undefined][] = [
      ['/v1/completions', { prompt: 'x', max_tokens: 4097 }, undefined],
      ['/v1/completions', { prompt: 'x', max_tokens: 4096 }, 'context_length_exceeded'],
      ['/v1/completions', { prompt: 'Mira . '.repeat(100_000) }, 'context_length_exceeded'], // refused before tokenizing
      ['/v1/jobs', { requests: [{ documents: [{ text: 'Mira . '.repeat(100_000) }], question: 'x' }] }, 'context_length_exceeded'],
      ['/v1/documents', { text: 'Mira . '.repeat(100_000) }, 'context_length_exceeded'], // characters
      ['/v1/documents', { text: 'x '.repeat(9000) }, 'context_length_exceeded'], // tokens
      ['/v1/jobs', { requests: Array.from({ length: 10_001 }, () => ({ prompt: 'x' })) }, undefined],
      ['/v1/completions', { prompt: 'x', documents: Array.from({ length: 65 }, () => 'doc') }, undefined],
    ];
    for (const [path, body, code] of limits) {
      const r = await httpJson(s.base, 'POST', path, body);
      expect({ path, status: r.status, code: code && r.body?.error?.code, fast: r.ms < 500 }).toEqual({ path, status: 400, code, fast: true });
    }
    expect(await waiting()).toBe(40);

    // A worker drains the queue; new work is accepted again.
    await s.add('worker');
    await waitFor(async () => ((await waiting()) === 0 ? true : undefined), 60_000, 'the queue to drain');
    expect((await httpJson(s.base, 'POST', '/v1/completions', { prompt: 'Q : x ? A :', max_tokens: 2 })).status).toBe(200);
    console.log(`overload: ${refused} requests refused with 429 past MAX_QUEUE_DEPTH=40; limits answered 413/400`);
  }, 120_000);

  test('a request that times out (504) or whose streaming client goes away leaves no job behind for no one', async () => {
    // No worker: nothing takes the jobs.
    const s = r.own(await ProcStack.start({ redis: r.redis, services: ['api'], env: { REQUEST_TIMEOUT_MS: '1500' } }));
    // Interactive jobs wait in the shared interactive queue, by priority (fair queuing between tenants).
    const waiting = async () => (await r.client.llen(`${s.env.QUEUE_PREFIX}:inference:wait`)) + (await r.client.zcard(`${s.env.QUEUE_PREFIX}:inference:prioritized`));
    const timedOut = await httpJson(s.base, 'POST', '/v1/completions', { prompt: 'Q : x ? A :', max_tokens: 2 });
    expect({ status: timedOut.status, code: timedOut.body?.error?.code }).toEqual({ status: 504, code: 'timeout' });
    expect(await waiting()).toBe(0);

    const aborted = new AbortController();
    const res = await fetch(`${s.base}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ messages: [{ role: 'user', content: 'x' }], stream: true }),
      signal: aborted.signal,
    });
    expect(res.status).toBe(200);
    await waitFor(async () => ((await waiting()) === 1 ? true : undefined), 5_000, 'the stream\'s job');
    aborted.abort();
    await waitFor(async () => ((await waiting()) === 0 ? true : undefined), 5_000, 'the stream\'s job to go');

    // A stream that times out says so, ends with [DONE], and its job goes too.
    const slow = await fetch(`${s.base}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ prompt: 'x', stream: true }) });
    const events = (await slow.text()).split('\n\n').filter(Boolean);
    expect(events.at(-1)).toBe('data: [DONE]');
    expect(JSON.parse(events.at(-2)!.slice(6)).error.code).toBe('timeout');
    expect(await waiting()).toBe(0);
  }, 60_000);

  test('sustained load (autocannon, 12 s): bounded queue, only 2xx and 429, bounded memory', async () => {
    const cap = 200;
    const s = r.own(await ProcStack.start({ redis: r.redis, services: [], env: { MAX_QUEUE_DEPTH: String(cap), LOG_LEVEL: 'warn' } }));
    await Promise.all([s.add('api'), s.add('worker')]);
    const [api, worker] = [s.of('api')[0], s.of('worker')[0]];
    api.sampleRss(100);
    worker.sampleRss(100);
    const rssBefore = { api: api.peakRssMb(), worker: worker.peakRssMb() };
    let maxWaiting = 0;
    const watch = setInterval(() => {
      // Both request classes' shared queues, waiting by priority or not.
      const p = s.env.QUEUE_PREFIX;
      void r.client
        .multi()
        .llen(`${p}:inference:wait`)
        .zcard(`${p}:inference:prioritized`)
        .llen(`${p}:inference-batch:wait`)
        .zcard(`${p}:inference-batch:prioritized`)
        .exec()
        .then((res) => (maxWaiting = Math.max(maxWaiting, (res ?? []).reduce((a, [, n]) => a + Number(n ?? 0), 0))), () => undefined);
    }, 100);
    const json = { 'content-type': 'application/json' };
    const result = await autocannon({
      url: s.base,
      connections: 32,
      duration: 12,
      timeout: 30,
      requests: [
        { method: 'POST', path: '/v1/completions', headers: json, body: JSON.stringify({ prompt: 'Q : where does Mira live ? A :', max_tokens: 4 }) },
        { method: 'POST', path: '/v1/jobs', headers: json, body: JSON.stringify({ requests: Array.from({ length: 8 }, (_, i) => ({ prompt: `Q : item ${i} ? A :`, max_tokens: 4 })) }) },
        { method: 'GET', path: '/v1/models' },
      ],
    });
    clearInterval(watch);
    const codes = Object.fromEntries(Object.entries(result.statusCodeStats as Record<string, { count: number }>).map(([k, v]) => [k, v.count]));
    const figures = {
      requests: result.requests.total,
      reqPerSec: Math.round(result.requests.average),
      latencyP99Ms: result.latency.p99,
      statusCodes: codes,
      errors: result.errors,
      timeouts: result.timeouts,
      maxWaiting,
      rssBeforeMb: rssBefore,
      peakRssMb: { api: api.peakRssMb(), worker: worker.peakRssMb() },
    };
    console.log(`autocannon: ${JSON.stringify(figures)}`);
    const unexpected = Object.keys(codes).filter((c) => !['200', '202', '429'].includes(c));
    expect({ unexpected, errors: result.errors, timeouts: result.timeouts }).toEqual({ unexpected: [], errors: 0, timeouts: 0 });
    expect(codes['429']).toBeGreaterThan(0);
    // Bounded: the queue never held more than its cap plus one refused batch in flight, and memory stayed bounded.
    expect(maxWaiting).toBeLessThanOrEqual(cap + 8 * 32);
    expect(figures.peakRssMb.api).toBeLessThan(1024);
    expect(figures.peakRssMb.worker).toBeLessThan(2048);
    expect(api.alive && worker.alive).toBe(true);
  }, 120_000);
});
