import { randomUUID } from 'node:crypto';
import { Job, type JobsOptions, type Queue } from 'bullmq';
import type { BatchRecord, BatchStatus } from '../../shared/catalog';
import { priorityOf, TenantLimitError } from '../../shared/qos';
import type { RequestClass } from '../../shared/queue/contracts';
import { batchJobId, type InferenceJob, type StreamEvent } from '../../shared/queue/contracts';
import { wallClockMs, type ServeRequest } from '../../shared/serving/request';
import type { ServeResult } from '../../shared/serving/result';
import type { ApiDeps } from './deps';
import { isRedisDown, JobVanishedError, queueUnavailable, RequestTimeoutError, WorkerError, type ConnectionState } from './errors';
import { checkModes } from './validate';

export function newId(prefix: string): string {
  return `${prefix}${randomUUID().replace(/-/g, '')}`;
}

/**
 * Enqueue one request (the caller has checked the queue's room) and wait for its result: the worker's reply on this
 * process's channel, or, when the reply is late, the job's own record (which covers failures no worker reports, such
 * as a job stalled past the limit, and a lost message). Also returns when it was enqueued and answered (wallClockMs).
 */
export async function runOne(d: ApiDeps, tenant: string, request: ServeRequest): Promise<OneRun> {
  checkModes(d.model, [request]);
  const reply = d.replies?.wait(request.id);
  try {
    const { queue, job } = await enqueueInteractive(d, tenant, request, { stream: false, replyTo: d.replies?.channel });
    const enqueuedAt = wallClockMs();
    const stop = new AbortController();
    // The client hears 504 and may send the request again: a job no worker has taken goes, rather than run for no one
    // (BullMQ does not remove a job a worker holds), and no longer counts as its tenant's.
    const recorded = () =>
      jobOutcome(queue, job.id!, d.requestTimeoutMs, { signal: stop.signal, connection: d.redis }).catch(async (e) => {
        if (e instanceof RequestTimeoutError && (await queue.remove(job.id!).catch(() => 0)) === 1) await d.qos.limits.release(tenant, 'interactive', [job.id!]).catch(() => undefined);
        throw e;
      });
    if (!reply) return { result: await recorded(), enqueuedAt, answeredAt: wallClockMs() };
    // The job's record is read only when the reply is late (a worker that died, a lost pub/sub message).
    let timer: NodeJS.Timeout | undefined;
    const fallback = new Promise<ServeResult>((resolve, reject) => {
      timer = setTimeout(() => recorded().then(resolve, reject), REPLY_GRACE_MS);
    });
    fallback.catch(() => undefined); // the loser of the race must not surface as an unhandled rejection
    try {
      return { result: await Promise.race([reply.promise, fallback]), enqueuedAt, answeredAt: wallClockMs() };
    } finally {
      clearTimeout(timer);
      stop.abort();
    }
  } finally {
    reply?.cancel();
  }
}

/**
 * A job's outcome from its record in Redis, read until it completed (its return value) or failed (its reason), or
 * `timeoutMs` passed: at once, then after `pollMs`, then less and less often (up to every 2 s: a late reply usually means a
 * full queue, and reading a job's state scans the queue's lists). A Redis that does not answer is read again until
 * the deadline; `signal` stops it (the reply came). No events consumer: a BullMQ QueueEvents reader in the API woke
 * it for every event of every job (~0.5 ms of its CPU a request, measured), to serve the rare late reply.
 */
export async function jobOutcome(queue: Queue, jobId: string, timeoutMs: number, opts: { pollMs?: number; signal?: AbortSignal; connection?: ConnectionState } = {}): Promise<ServeResult> {
  const end = Date.now() + timeoutMs;
  let wait = opts.pollMs ?? 100;
  for (;;) {
    if (opts.signal?.aborted) throw new Error(`request ${jobId}: no longer waited for`);
    try {
      // The state first: once it is final, the record's return value or reason is there (one script writes both).
      const state = await queue.getJobState(jobId);
      if (state === 'completed' || state === 'failed') {
        const job = await Job.fromId(queue, jobId);
        if (!job) throw new JobVanishedError(jobId);
        if (state === 'completed') return job.returnvalue as ServeResult;
        throw new WorkerError(job.failedReason || 'the request failed');
      }
      // Gone: the queue's Redis lost it (restarted empty, flushed). The client may send the request again (503).
      if (state === 'unknown') throw new JobVanishedError(jobId);
    } catch (e) {
      if (!isRedisDown(e, opts.connection) || Date.now() >= end) throw e;
    }
    if (Date.now() >= end) throw new RequestTimeoutError(jobId, timeoutMs);
    await new Promise((r) => setTimeout(r, Math.min(wait, Math.max(0, end - Date.now()))));
    wait = Math.min(2000, wait * 1.5);
  }
}

/**
 * Enqueue one interactive request: past its tenant's limits (TenantLimitError: 429), routed (the router picks the
 * queue), and tagged for fair queuing between tenants (its priority in that queue). Nothing stays counted when the
 * enqueue fails.
 */
async function enqueueInteractive(
  d: ApiDeps,
  tenant: string,
  request: ServeRequest,
  data: Pick<InferenceJob, 'stream' | 'replyTo'>,
  opts: JobsOptions = {},
): Promise<{ queue: Queue; job: Job }> {
  await admitTenant(d, tenant, 'interactive', [request.id]);
  try {
    const { queue, decision } = await d.router.route(tenant, request, 'interactive');
    const [tag] = await d.qos.fair.tags(queue.name, tenant, 1);
    const job: Job = await queue.add('request', { tenant, request, ...data, route: decision, class: 'interactive', tag } satisfies InferenceJob, { ...opts, jobId: request.id, priority: priorityOf(tag) });
    return { queue, job };
  } catch (e) {
    await d.qos.limits.release(tenant, 'interactive', [request.id]).catch(() => undefined);
    throw e;
  }
}

/**
 * A tenant's limits (TenantLimits.admit). At its queued limit, its count is checked against the queues once (ids left
 * counted by a step that failed half way leave it: TenantLimits.reconcile), and the request is admitted if there is
 * room then.
 */
async function admitTenant(d: ApiDeps, tenant: string, cls: RequestClass, ids: string[]): Promise<void> {
  try {
    await d.qos.limits.admit(tenant, cls, ids);
  } catch (e) {
    if (!(e instanceof TenantLimitError) || e.limit !== 'max_queued_requests') throw e;
    if (!(await d.qos.limits.reconcile(tenant, (x) => d.router.queues.waitingIds(x)).catch(() => 0))) throw e;
    await d.qos.limits.admit(tenant, cls, ids);
  }
}

/** How long runOne waits for a worker's reply before it also reads the job's record. */
export const REPLY_GRACE_MS = 1000;

export interface OneRun {
  result: ServeResult;
  /** wallClockMs when the job was enqueued, and when its result came back. */
  enqueuedAt: number;
  answeredAt: number;
}

/**
 * Enqueue one request with streaming: tokens arrive on the request's Redis channel as the worker chooses them.
 * Subscribes before enqueueing so no token is missed.
 */
export async function runStreaming(d: ApiDeps, tenant: string, request: ServeRequest, onEvent: (e: StreamEvent) => void): Promise<() => Promise<void>> {
  checkModes(d.model, [request]);
  await d.admission.admit(1);
  // The subscriber connection queues commands while Redis is away (it must outlive restarts): refuse now rather than
  // wait, as every other route does when the queue's Redis is down.
  if (d.subscriber.status !== 'ready') throw queueUnavailable();
  const channel = d.keys.stream(request.id);
  const handler = (ch: string, msg: string) => {
    if (ch === channel) onEvent(JSON.parse(msg) as StreamEvent);
  };
  d.subscriber.on('message', handler);
  await d.subscriber.subscribe(channel);
  const stop = async () => {
    d.subscriber.off('message', handler);
    await d.subscriber.unsubscribe(channel).catch(() => undefined);
  };
  try {
    // One attempt: a stream ends at its first failure (the client has seen some tokens; a retry would start over).
    await enqueueInteractive(d, tenant, request, { stream: true }, { attempts: 1 });
  } catch (e) {
    await stop();
    throw e;
  }
  return stop;
}

/**
 * Record a batch and enqueue its requests, one job each with an idempotent id. The record comes first (a worker that
 * takes a job checks its batch); when the enqueue fails the record is removed again, so a client that heard an error
 * finds no batch stuck in progress with no jobs. (addBulk is one transaction per queue: with routing, the jobs of one
 * queue are all added or none; a job added to another queue before a failure finds its batch gone and does nothing.)
 */
export async function startBatch(d: ApiDeps, record: BatchRecord, requests: ServeRequest[]): Promise<void> {
  checkModes(d.model, requests, (i) => `requests[${i}]`);
  await d.batches.create(record);
  try {
    await enqueueBatch(d, record.tenant, record.id, requests);
  } catch (e) {
    await d.batches.delete(record.tenant, record.id).catch(() => undefined);
    throw e;
  }
}

async function enqueueBatch(d: ApiDeps, tenant: string, batchId: string, requests: ServeRequest[]): Promise<void> {
  // The tenant's limits first (all of the batch's jobs count, as one request for the rate), then each request routed in
  // turn (the router counts its own assignments, so a batch spreads by load), then per queue the tenant's fair tags
  // (its jobs' priorities) and one addBulk.
  const ids = requests.map((_, index) => batchJobId(batchId, index));
  await admitTenant(d, tenant, 'batch', ids);
  try {
    const byQueue = new Map<Queue, { name: string; data: InferenceJob; opts: { jobId: string; priority?: number } }[]>();
    for (const [index, request] of requests.entries()) {
      const { queue, decision } = await d.router.route(tenant, request, 'batch');
      let jobs = byQueue.get(queue);
      if (!jobs) byQueue.set(queue, (jobs = []));
      jobs.push({ name: 'request', data: { tenant, request, batchId, index, stream: false, route: decision, class: 'batch' }, opts: { jobId: ids[index] } });
    }
    await Promise.all(
      [...byQueue].map(async ([queue, jobs]) => {
        const tags = await d.qos.fair.tags(queue.name, tenant, jobs.length);
        jobs.forEach((j, i) => {
          j.data.tag = tags[i];
          j.opts.priority = priorityOf(tags[i]);
        });
        await queue.addBulk(jobs);
      }),
    );
  } catch (e) {
    await d.qos.limits.release(tenant, 'batch', ids).catch(() => undefined);
    throw e;
  }
}

/**
 * Cancel a batch that has not ended: `cancelling`, then its jobs that no worker holds removed, then `cancelled`. A
 * batch left `cancelling` by a cancel that stopped half way (Redis went away, the API restarted) is finished. Returns
 * the record as it is after (an ended batch's unchanged).
 */
export async function cancelBatch(d: ApiDeps, b: BatchRecord): Promise<BatchRecord> {
  const running: BatchStatus[] = ['validating', 'in_progress', 'finalizing'];
  if (!running.includes(b.status) && b.status !== 'cancelling') return b;
  await d.batches.update(b.tenant, b.id, { status: 'cancelling', cancelledAt: Math.floor(Date.now() / 1000) }, running);
  await removeWaiting(d, b.id, b.total);
  // Its jobs no longer wait (those a worker holds left the count when they started).
  await d.qos.limits.release(b.tenant, 'batch', Array.from({ length: b.total }, (_, i) => batchJobId(b.id, i)));
  return (await d.batches.update(b.tenant, b.id, { status: 'cancelled' }, ['cancelling'])) ?? b;
}

/**
 * Remove a batch's jobs that no worker holds (waiting, or delayed for a retry): BullMQ refuses to remove a job whose
 * lock a worker holds, and such a job finds its batch cancelled when it starts, or records its result. Finished jobs
 * go too (their results are in the batch's record). Many at a time: a batch has up to MAX_BATCH_REQUESTS jobs, and one
 * round trip each in turn took seconds. Every inference queue is asked (the router spread the batch over them).
 */
async function removeWaiting(d: ApiDeps, batchId: string, total: number): Promise<number> {
  let removed = 0;
  const PAGE = 256;
  const queues = await d.router.queues.all();
  for (let i = 0; i < total; i += PAGE) {
    const page = Array.from({ length: Math.min(PAGE, total - i) }, (_, k) => batchJobId(batchId, i + k));
    const done = await Promise.all(page.flatMap((id) => queues.map((q) => q.remove(id))));
    removed += done.filter((n) => n === 1).length;
  }
  return removed;
}
