/**
 * Work stealing with real processes (API and two workers as services/start.ts starts them, a private redis-server): a
 * worker whose process is stopped (SIGSTOP: a process frozen in a long computation, swapping, paused by a debugger) is
 * still live in the routing index for the heartbeat TTL, so the router keeps sending it jobs. The other, idle worker
 * takes them from its own queues: a batch and completions finish while it is stopped, each job once; resumed, it finds
 * nothing left to run.
 */
import { REQUEST_CLASSES } from '../../shared/queue/contracts';
import { workerQueueName } from '../../shared/routing';
import { workload } from '../helpers/workload';
import { waitFor } from '../helpers/net';
import { batchCompleted, httpJson, metricSum, ProcStack, scrape, suiteStacks, TINY } from './procs';

describe('work stealing: a live worker that does not take its jobs', () => {
  const r = suiteStacks();

  test("the idle worker runs the jobs routed to a stopped one, each once; resumed, the stopped one runs none", async () => {
    const s = r.own(await ProcStack.routedPair({
      redis: r.redis,
      env: {
        // Every other job to each live worker's own queue; the stopped worker stays live for the whole test.
        ROUTING: 'round-robin',
        ROUTING_HEARTBEAT_TTL_MS: '120000',
        ROUTING_STEAL_INTERVAL_MS: '50',
        WORKER_WARMUP: '0',
      },
    }));
    const ofB = REQUEST_CLASSES.map((cls) => s.queue(workerQueueName('b', cls)));
    const w = workload(TINY, 4);
    const docs: string[] = [];
    for (const text of w.documents) docs.push((await httpJson(s.base, 'POST', '/v1/documents', { text })).body.id);

    const stopped = s.worker('b');
    const thief = s.worker('a');
    process.kill(-stopped.proc.pid!, 'SIGSTOP');
    try {
      const requests = Array.from({ length: 40 }, (_, i) => ({ documents: [docs[i % 4], docs[(i + 1) % 4]], question: w.questions[i % 100], max_tokens: 8 }));
      const sub = await httpJson(s.base, 'POST', '/v1/jobs', { requests });
      expect(sub.status).toBe(202);
      const batchId = sub.body.id as string;
      const completions = await Promise.all(
        Array.from({ length: 6 }, (_, i) => httpJson(s.base, 'POST', '/v1/completions', { prompt: w.questions[i], documents: [docs[i % 4]], max_tokens: 4 })),
      );
      expect(completions.map((c) => c.status)).toEqual([200, 200, 200, 200, 200, 200]);
      const batches = s.batches(r.client);
      const done = await batchCompleted(batches, 'default', batchId, 60_000, 'the batch to complete while b is stopped');
      const results = await batches.results('default', batchId);
      expect({ completed: done.completed, failed: done.failed, distinct: new Set(results.map((x) => x.index)).size }).toEqual({ completed: 40, failed: 0, distinct: 40 });
      // The router did send b its share (both classes), and every job of b's queues was completed by a.
      const counts = await Promise.all(ofB.map((q) => q.getJobCounts('completed', 'waiting', 'prioritized', 'active', 'failed')));
      expect(counts.map((c) => c.completed)).toEqual([3, 20]);
      expect(counts.map((c) => c.waiting + c.prioritized + c.active + c.failed)).toEqual([0, 0]);
      expect(metricSum(await scrape(thief.port), 'epic_routing_decisions_total', { decision: 'stolen' })).toBe(23);
    } finally {
      process.kill(-stopped.proc.pid!, 'SIGCONT');
    }
    // Resumed, b serves what it is sent and has run none of the stolen jobs.
    await waitFor(async () => ((await fetch(`http://127.0.0.1:${stopped.port}/healthz`).catch(() => undefined))?.ok ? true : undefined), 30_000, 'b to answer again');
    const one = await httpJson(s.base, 'POST', '/v1/completions', { prompt: w.questions[0], documents: [docs[0]], max_tokens: 2 });
    expect(one.status).toBe(200);
    const two = await httpJson(s.base, 'POST', '/v1/completions', { prompt: w.questions[1], documents: [docs[1]], max_tokens: 2 });
    expect(two.status).toBe(200);
    // Of the two, round robin sent one to b: that is all b ran.
    expect(metricSum(await scrape(stopped.port), 'epic_requests_total', { status: 'ok' })).toBe(1);
  }, 180_000);
});
