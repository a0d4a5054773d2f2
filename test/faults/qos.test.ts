/**
 * Quality of service with real processes (API and workers started like services/start.ts, a private redis-server):
 * interactive requests are answered while a batch runs (they do not wait behind it), a tenant past its limits hears
 * 429 with Retry-After and the limit named, and a worker SIGKILLed while it holds jobs of both classes loses nothing
 * and runs nothing twice.
 */
import type { Queue } from 'bullmq';
import { workerQueueName } from '../../shared/routing';
import { workload } from '../helpers/workload';
import { waitFor } from '../helpers/net';
import { batchCompleted, httpJson, metricSum, ProcStack, scrape, suiteStacks, TINY } from './procs';

describe('quality of service', () => {
  const r = suiteStacks();

  test('an interactive completion sent while a batch runs is answered before the batch ends', async () => {
    const s = r.own(await ProcStack.start({ redis: r.redis, services: ['api', 'worker'], env: { WORKER_WARMUP: '0' } }));
    const batches = s.batches(r.client);
    const requests = Array.from({ length: 300 }, (_, i) => ({ prompt: `Q : item ${i} ? A :`, max_tokens: 24, ignore_eos: true }));
    const sub = await httpJson(s.base, 'POST', '/v1/jobs', { requests });
    expect(sub.status).toBe(202);
    await waitFor(async () => ((await batches.resultCount('default', sub.body.id)) >= 10 ? true : undefined), 60_000, 'the batch to run');
    const answers = [];
    for (let i = 0; i < 3; i++) {
      const a = await httpJson(s.base, 'POST', '/v1/completions', { prompt: `Q : now ${i} ? A :`, max_tokens: 24, ignore_eos: true });
      answers.push({ status: a.status, batchResultsThen: await batches.resultCount('default', sub.body.id) });
    }
    for (const a of answers) {
      expect(a.status).toBe(200);
      expect(a.batchResultsThen).toBeLessThan(300);
    }
    const done = await batchCompleted(batches, 'default', sub.body.id, 120_000);
    expect(done.completed).toBe(300);
    // The worker counted both classes' requests.
    const m = await scrape(s.of('worker')[0].port);
    expect(metricSum(m, 'epic_qos_served_requests_total', { class: 'interactive' })).toBe(3);
    expect(metricSum(m, 'epic_qos_served_requests_total', { class: 'batch' })).toBe(300);
    console.log(`qos order test: ${JSON.stringify(answers)}`);
  }, 180_000);

  test('a tenant past its queued limit or its request rate hears 429 with Retry-After and the limit named; others do not', async () => {
    const s = r.own(await ProcStack.start({
      redis: r.redis,
      services: ['api'],
      env: { API_KEYS: 'ka:alice,kb:bob', TENANT_MAX_QUEUED: '5', TENANT_RATE: '0.2', TENANT_BURST: '3' },
    }));
    const as = (key: string) => ({ authorization: `Bearer ${key}` });
    const jobs = (n: number) => ({ requests: Array.from({ length: n }, (_, i) => ({ prompt: `Q : item ${i} ? A :`, max_tokens: 2 })) });
    // alice: 5 queued (no worker takes them): her next request passes the limit, whatever its class.
    expect((await httpJson(s.base, 'POST', '/v1/jobs', jobs(5), as('ka'))).status).toBe(202);
    for (const [path, body] of [
      ['/v1/jobs', jobs(1)],
      ['/v1/completions', { prompt: 'Q : x ? A :', max_tokens: 2 }],
      ['/v1/chat/completions', { messages: [{ role: 'user', content: 'x' }], max_tokens: 2, stream: true }],
    ] as const) {
      const res = await httpJson(s.base, 'POST', path, body, as('ka'));
      expect({ path, status: res.status, retryAfter: res.headers.get('retry-after'), error: res.body?.error && { type: res.body.error.type, param: res.body.error.param, code: res.body.error.code } }).toEqual({
        path,
        status: 429,
        retryAfter: '1',
        error: { type: 'rate_limit_error', param: 'max_queued_requests', code: 'tenant_queue_limit_exceeded' },
      });
      expect(res.body.error.message).toMatch(/TENANT_MAX_QUEUED/);
    }
    // bob is not held back by alice; his rate (burst 3, then 0.2/s) is his own.
    for (let i = 0; i < 3; i++) expect((await httpJson(s.base, 'POST', '/v1/jobs', jobs(1), as('kb'))).status).toBe(202);
    const fast = await httpJson(s.base, 'POST', '/v1/jobs', jobs(1), as('kb'));
    expect({ status: fast.status, param: fast.body?.error?.param, code: fast.body?.error?.code }).toEqual({ status: 429, param: 'request_rate', code: 'tenant_rate_limit_exceeded' });
    expect(Number(fast.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
    expect(fast.body.error.message).toMatch(/TENANT_RATE/);
    // What waits, by class and tenant, on the API's metrics: the refused requests are not counted.
    const m = await scrape(s.apiPort);
    expect(metricSum(m, 'epic_qos_waiting_requests', { class: 'batch', tenant: 'alice' })).toBe(5);
    expect(metricSum(m, 'epic_qos_waiting_requests', { class: 'batch', tenant: 'bob' })).toBe(3);
    // A worker starts alice's jobs: her count falls, and she is admitted again.
    await s.add('worker', { WORKER_WARMUP: '0' });
    await waitFor(async () => (metricSum(await scrape(s.apiPort), 'epic_qos_waiting_requests', { tenant: 'alice' }) === 0 ? true : undefined), 60_000, "alice's jobs to start");
    expect((await httpJson(s.base, 'POST', '/v1/completions', { prompt: 'Q : x ? A :', max_tokens: 2 }, as('ka'))).status).toBe(200);
  }, 120_000);

  test('a worker killed holding jobs of both classes: every batch job completes once, every completion is answered', async () => {
    const LOCK_MS = 2000;
    const s = r.own(await ProcStack.routedPair({
      redis: r.redis,
      env: {
        ROUTING: 'cache',
        WORKER_LOCK_MS: String(LOCK_MS),
        WORKER_STALLED_INTERVAL_MS: '1000',
        ROUTING_HEARTBEAT_TTL_MS: '2000',
        ROUTING_MAX_WAITING: '100',
        WORKER_CONCURRENCY: '4',
        WORKER_BATCH_CONCURRENCY: '4',
        WORKER_WARMUP: '0',
      },
    }));
    const [qaInter, qaBatch] = [s.queue(workerQueueName('a', 'interactive')), s.queue(workerQueueName('a', 'batch'))];
    const w = workload(TINY, 8);
    const docs: string[] = [];
    for (const text of w.documents) docs.push((await httpJson(s.base, 'POST', '/v1/documents', { text })).body.id);
    const ctx = (i: number) => [docs[i % 8], docs[(i * 3 + 1) % 8]];
    const requests = Array.from({ length: 120 }, (_, i) => ({ documents: ctx(i), question: w.questions[i % 100], max_tokens: 48 }));
    const sub = await httpJson(s.base, 'POST', '/v1/jobs', { requests });
    expect(sub.status).toBe(202);
    const batches = s.batches(r.client);

    // Interactive clients in a closed loop until the batch is done, each completion long enough to be held at the kill.
    let stop = false;
    const answers: number[] = [];
    const client = async (c: number) => {
      for (let k = 0; !stop; k++) {
        const res = await httpJson(s.base, 'POST', '/v1/completions', { documents: ctx(c * 7 + k), prompt: w.questions[(c * 13 + k) % 100], max_tokens: 48, ignore_eos: true });
        answers.push(res.status);
      }
    };
    const clients = Array.from({ length: 6 }, (_, c) => client(c));

    // The victim: worker a, once it runs jobs of both classes.
    const held = async (q: Queue) => (await q.getJobs(['active', 'waiting', 'prioritized'])).map((j) => j.id!);
    await waitFor(async () => ((await qaBatch.getActiveCount()) > 0 && (await qaInter.getActiveCount()) > 0 ? true : undefined), 60_000, "a running both classes' jobs");
    const heldBatch = await held(qaBatch);
    const heldInter = await held(qaInter);
    await s.worker('a').kill();

    const done = await batchCompleted(batches, 'default', sub.body.id, 120_000);
    stop = true;
    await Promise.all(clients);
    const results = await batches.results('default', sub.body.id);
    const indices = results.map((x) => x.index);
    expect({ completed: done.completed, failed: done.failed, stored: results.length, distinct: new Set(indices).size }).toEqual({ completed: 120, failed: 0, stored: 120, distinct: 120 });
    // Every completion was answered (none lost: each 200), and the jobs a held ran to their end (once each: BullMQ
    // completes a job once; a batch's results are recorded once, above).
    expect(answers.length).toBeGreaterThan(0);
    expect(answers.filter((x) => x !== 200)).toEqual([]);
    for (const [q, ids] of [
      [qaBatch, heldBatch],
      [qaInter, heldInter],
    ] as const) {
      const jobs = await Promise.all(ids.map((id) => q.getJob(id)));
      // (An interactive job whose answer came is removed by age only; a held one is there, finished.)
      expect(jobs.filter((j) => j && !j.finishedOn).map((j) => j!.id)).toEqual([]);
    }
    const survivor = s.worker('b');
    const adopted = metricSum(await scrape(survivor.port), 'epic_routing_decisions_total', { decision: 'adopted' });
    console.log(`qos kill test: ${JSON.stringify({ heldBatch: heldBatch.length, heldInteractive: heldInter.length, completions: answers.length, adopted })}`);
  }, 180_000);
});
