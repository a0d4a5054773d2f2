/**
 * Workers SIGKILLed while they hold jobs: every job of a 200-request batch completes exactly once. Real processes (API
 * and workers started like services/start.ts), a private redis-server. Short BullMQ locks (WORKER_LOCK_MS,
 * WORKER_STALLED_INTERVAL_MS) so a dead worker's jobs are re-run within seconds instead of 30 s.
 */
import { QueueEvents, Worker } from 'bullmq';
import { BatchStore, CatalogKeys } from '../../shared/catalog';
import { workload } from '../helpers/workload';
import { waitFor } from '../helpers/net';
import { httpJson, ProcStack, suiteRedis, TINY } from './procs';

const LOCKS = { WORKER_LOCK_MS: '2000', WORKER_STALLED_INTERVAL_MS: '1000' };

describe('workers killed with SIGKILL', () => {
  const r = suiteRedis();
  let s: ProcStack | undefined;
  let events: QueueEvents | undefined;
  afterEach(async () => {
    await events?.close();
    events = undefined;
    await s?.close();
    s = undefined;
    await r.client.flushall();
  });

  test('three kills during 200 jobs: every job completes exactly once, none lost, none duplicated', async () => {
    // maxStalledCount 3: a job whose worker is killed under it twice is still re-run (BullMQ's default, 1, fails it).
    // No warm-up: a replacement worker must join while the batch still runs, or the next kill falls after its end.
    s = await ProcStack.start({ redis: r.redis, services: [], env: { ...LOCKS, WORKER_MAX_STALLED_COUNT: '3', WORKER_CONCURRENCY: '4', WORKER_WARMUP: '0' } });
    await Promise.all([s.add('api'), s.add('worker'), s.add('worker')]);
    // A batch's jobs are in the shared batch queue (ROUTING=shared).
    events = new QueueEvents('inference-batch', { connection: { url: r.redis.url }, prefix: s.env.QUEUE_PREFIX });
    await events.waitUntilReady();
    const stalled = new Set<string>();
    events.on('stalled', ({ jobId }) => stalled.add(jobId));

    const w = workload(TINY, 4);
    const docs: string[] = [];
    for (const text of w.documents) docs.push((await httpJson(s.base, 'POST', '/v1/documents', { text })).body.id);
    // Requests i and i+100 are the same request: their answers must agree however often either was run.
    const requests = Array.from({ length: 200 }, (_, i) => ({ documents: docs.slice(0, 1 + (i % 4)), question: w.questions[i % 100], max_tokens: 64 }));
    const sub = await httpJson(s.base, 'POST', '/v1/jobs', { requests });
    expect(sub.status).toBe(202);
    const id: string = sub.body.id;
    const batches = new BatchStore(r.client, new CatalogKeys(s.env.CATALOG_PREFIX));
    const count = () => batches.resultCount('default', id);

    const kills: { atResults: number; activeJobs: number }[] = [];
    const joining: Promise<unknown>[] = [];
    for (const at of [30, 80, 130]) {
      await waitFor(async () => ((await count()) >= at ? true : undefined), 60_000, `${at} results`);
      // The oldest worker alive: one that has been taking jobs.
      const victim = s.of('worker')[0];
      const active = Number(await r.client.llen(`${s.env.QUEUE_PREFIX}:inference-batch:active`));
      await victim.kill();
      kills.push({ atResults: await count(), activeJobs: active });
      // A replacement starts while the survivors carry on; the next kill does not wait for it (a worker takes seconds
      // to start, in which the survivors could finish the batch).
      joining.push(s.add('worker'));
    }
    await Promise.all(joining);
    const done = await waitFor(
      async () => {
        const b = await batches.get('default', id);
        return b?.status === 'completed' ? b : undefined;
      },
      120_000,
      'the batch to complete',
    );
    const results = await batches.results('default', id);
    const indices = results.map((r) => r.index);
    const dedupedReRuns = (s.output().match(/result already recorded by an earlier run/g) ?? []).length;
    const figures = {
      submitted: requests.length,
      completed: done.completed,
      failed: done.failed,
      resultsStored: results.length,
      duplicated: done.completed + done.failed - new Set(indices).size,
      lost: requests.length - new Set(indices).size,
      kills: kills.length,
      jobsReRunAfterKills: stalled.size,
      reRunsWhoseResultWasAlreadyRecorded: dedupedReRuns,
    };
    console.log(`kill test: ${JSON.stringify({ ...figures, kills })}`);
    expect(kills).toHaveLength(3);
    // The kills fell during the run, not after it.
    expect(kills.filter((k) => k.atResults < requests.length).length).toBeGreaterThanOrEqual(2);
    expect(figures).toMatchObject({ submitted: 200, completed: 200, failed: 0, resultsStored: 200, duplicated: 0, lost: 0 });
    expect([...new Set(indices)].sort((a, b) => a - b)).toEqual(requests.map((_, i) => i));
    // The kills hit jobs in flight: BullMQ found them stalled and they ran again.
    expect(stalled.size).toBeGreaterThan(0);
    for (let i = 0; i < 100; i++) expect({ i, text: (results[i].body as any).text }).toEqual({ i, text: (results[i + 100].body as any).text });
  }, 180_000);

  test('a job BullMQ fails for stalling too often is recorded as failed, so its batch still completes', async () => {
    // maxStalledCount 0: the first kill under a job fails it: BullMQ marks it for failure, and the next worker that takes it
    // fails it with an UnrecoverableError, without running it (the worker's 'failed' handler records it).
    s = await ProcStack.start({ redis: r.redis, services: ['api', 'worker'], env: { ...LOCKS, WORKER_MAX_STALLED_COUNT: '0', WORKER_CONCURRENCY: '2' } });
    const requests = Array.from({ length: 6 }, (_, i) => ({ prompt: `Q : item ${i} ? A :`, max_tokens: 1000 }));
    const sub = await httpJson(s.base, 'POST', '/v1/jobs', { requests });
    const client2 = r.client;
    await waitFor(async () => ((await client2.llen(`${s!.env.QUEUE_PREFIX}:inference-batch:active`)) > 0 ? true : undefined), 30_000, 'active jobs');
    await s.of('worker')[0].kill();
    await s.add('worker');
    const batches = new BatchStore(r.client, new CatalogKeys(s.env.CATALOG_PREFIX));
    const done = await waitFor(
      async () => {
        const b = await batches.get('default', sub.body.id);
        return b?.status === 'completed' ? b : undefined;
      },
      90_000,
      'the batch to complete',
    );
    const results = await batches.results('default', sub.body.id);
    expect(results.map((r) => r.index)).toEqual([0, 1, 2, 3, 4, 5]);
    expect(done.failed).toBeGreaterThan(0);
    expect(done.completed + done.failed).toBe(6);
    for (const r of results.filter((x) => !x.ok)) expect((r.body as any).error).toMatch(/stalled/);
  }, 120_000);

  test('a stream whose worker is killed ends with an error; no token is sent twice', async () => {
    s = await ProcStack.start({ redis: r.redis, services: ['api', 'worker'], env: { ...LOCKS, WORKER_CONCURRENCY: '2' } });
    // Long enough to be killed in the middle: ~4,000 tokens past <eos>.
    const res = await fetch(`${s.base}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ prompt: 'Q : item ? A :', max_tokens: 4000, ignore_eos: true, stream: true }),
    });
    expect(res.status).toBe(200);
    const reader = res.body!.getReader();
    const decoder = new TextDecoder();
    let raw = '';
    let killed = false;
    const deadline = Date.now() + 90_000;
    while (Date.now() < deadline) {
      const { value, done } = await reader.read();
      if (done) break;
      raw += decoder.decode(value, { stream: true });
      if (!killed && (raw.match(/"text":"[^"]/g) ?? []).length >= 5) {
        killed = true;
        await s.of('worker')[0].kill();
        await s.add('worker');
      }
    }
    expect(killed).toBe(true);
    const events = raw.split('\n\n').filter((e) => e.startsWith('data: ')).map((e) => e.slice(6));
    expect(events.at(-1)).toBe('[DONE]');
    const parsed = events.slice(0, -1).map((e) => JSON.parse(e));
    const errors = parsed.filter((e) => e.error);
    // The re-run refused to stream again: the client hears why, and no finish chunk follows.
    expect(errors).toHaveLength(1);
    expect(errors[0].error.message).toMatch(/worker serving this stream stopped/);
    expect(parsed.filter((e) => e.choices?.[0]?.finish_reason)).toHaveLength(0);
    // Fewer tokens than asked for arrived, each once: the deltas are those of one run, cut short.
    const deltas = parsed.filter((e) => e.choices?.[0]?.text).length;
    expect(deltas).toBeGreaterThanOrEqual(5);
    expect(deltas).toBeLessThan(4000);
    // Ended by error, its began-mark (which the re-run found) is gone too.
    await waitFor(async () => ((await r.client.keys(`${s!.env.CATALOG_PREFIX}:stream:*:began`)).length === 0 ? true : undefined), 10_000, 'no stream marks left');
  }, 120_000);

  /**
   * A worker that takes the one waiting job and dies holding it: a real BullMQ worker whose processor never ends, closed
   * with force once the job is active, so the job keeps its lock until it expires (as a killed process's would).
   */
  const takeAndDie = async (stack: ProcStack) => {
    const taker = new Worker('inference', () => new Promise<never>(() => undefined), { connection: { url: r.redis.url }, prefix: stack.env.QUEUE_PREFIX, lockDuration: 2000, skipStalledCheck: true });
    await waitFor(async () => ((await r.client.llen(`${stack.env.QUEUE_PREFIX}:inference:active`)) === 1 ? true : undefined), 10_000, 'the job taken');
    await taker.close(true);
  };

  test('a stream that had sent nothing when its worker died is simply run again', async () => {
    s = await ProcStack.start({ redis: r.redis, services: ['api'], env: LOCKS });
    const res = await fetch(`${s.base}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ prompt: 'Q : short ? A :', max_tokens: 8, ignore_eos: true, stream: true }) });
    // Headers come at once (the request waits in the queue, or in a worker, before its first token).
    expect(res.status).toBe(200);
    await takeAndDie(s); // before the stream's first token
    await s.add('worker'); // finds the job stalled and runs it
    const events = (await res.text()).split('\n\n').filter(Boolean).map((e) => e.slice(6));
    expect(events.at(-1)).toBe('[DONE]');
    const parsed = events.slice(0, -1).map((e) => JSON.parse(e));
    expect(parsed.filter((e) => e.error)).toEqual([]);
    expect(parsed.filter((e) => e.choices?.[0]?.finish_reason).map((e) => e.choices[0].finish_reason)).toEqual(['length']);
    expect(parsed.filter((e) => e.choices?.[0]?.text).length).toBeGreaterThan(0);
  }, 60_000);

  test('a completion whose job BullMQ fails (its worker died, no stall allowed) answers 500 with the reason', async () => {
    s = await ProcStack.start({ redis: r.redis, services: ['api'], env: { ...LOCKS, WORKER_MAX_STALLED_COUNT: '0' } });
    const answer = httpJson(s.base, 'POST', '/v1/completions', { prompt: 'Q : x ? A :', max_tokens: 2 });
    await takeAndDie(s);
    await s.add('worker'); // finds the job stalled: with no stall allowed, BullMQ fails it
    const res = await answer;
    expect({ status: res.status, code: res.body.error.code, type: res.body.error.type }).toEqual({ status: 500, code: 'worker_error', type: 'server_error' });
    expect(res.body.error.message).toMatch(/failed in the worker: .*stalled/);
  }, 60_000);

  test('an API stopped with SIGTERM answers the completions it holds before it exits', async () => {
    s = await ProcStack.start({ redis: r.redis, services: ['api', 'worker'], env: { WORKER_CONCURRENCY: '4' } });
    // Requests long enough to still be running when the API is told to stop (~1,000 tokens each past <eos>).
    const pending = Array.from({ length: 3 }, (_, i) => httpJson(s!.base, 'POST', '/v1/completions', { prompt: `Q : item ${i} ? A :`, max_tokens: 1000, ignore_eos: true }));
    await waitFor(async () => ((await r.client.llen(`${s!.env.QUEUE_PREFIX}:inference:active`)) > 0 ? true : undefined), 30_000, 'active jobs');
    const stopped = s.of('api')[0].stop();
    const answers = await Promise.all(pending);
    await stopped;
    expect(answers.map((a) => a.status)).toEqual([200, 200, 200]);
    for (const a of answers) expect(a.body.usage.completion_tokens).toBe(1000);
  }, 120_000);
});
